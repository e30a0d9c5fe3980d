//! `tillstream topics apply|list`.

use runtime::topics::TopicOutcome;
use runtime::{KafkaConfig, TopicsConfig};

/// Creates or verifies every topic; exits non-zero on any mismatch.
pub(crate) async fn apply(kafka: &KafkaConfig, topics: &TopicsConfig) -> anyhow::Result<()> {
    let outcomes = topics.apply(kafka).await?;
    for o in outcomes {
        match o {
            TopicOutcome::Created(t) => println!("created  {t}"),
            TopicOutcome::Verified(t) => println!("verified {t}"),
        }
    }
    Ok(())
}

/// Prints the catalogue.
pub(crate) fn list(topics: &TopicsConfig) {
    match topics.replication_factor {
        Some(rf) => println!("replication factor {rf}"),
        None => println!(
            "replication factor: 3, or the broker count when fewer (min.insync.replicas: a majority), resolved by 'topics apply'"
        ),
    }
    for s in topics.specs() {
        let configs: Vec<String> = s.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "{:<40} partitions={:<3} {}",
            s.name,
            s.partitions,
            configs.join(" ")
        );
    }
}
