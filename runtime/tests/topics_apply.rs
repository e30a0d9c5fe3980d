//! `TopicsConfig::apply` against the real broker: create, re-run harmlessly, refuse mismatches.
#![allow(clippy::unwrap_used)]

use runtime::TopicsConfig;
use runtime::testing::{kafka, unique};
use runtime::topics::{TopicError, TopicOutcome};

#[tokio::test]
async fn apply_creates_then_verifies_then_refuses_a_mismatch() {
    let k = kafka();
    let mut t = TopicsConfig::with_prefix(&format!("{}.", unique("apply")));
    t.partitions = 3;
    let first = t.apply(&k).await.unwrap();
    assert_eq!(
        first
            .iter()
            .filter(|o| matches!(o, TopicOutcome::Created(_)))
            .count(),
        t.specs().len()
    );
    let second = t.apply(&k).await.unwrap();
    assert!(
        second
            .iter()
            .all(|o| matches!(o, TopicOutcome::Verified(_))),
        "re-running is harmless"
    );

    let mut other = t.clone();
    other.partitions = 4;
    match other.apply(&k).await {
        Err(TopicError::Mismatch(problems)) => {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(&t.raw) && p.contains("3 partitions, expected 4")),
                "{problems:?}"
            );
        }
        other => panic!("a partition mismatch must be an error, got {other:?}"),
    }
}
