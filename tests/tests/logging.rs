//! One configuration scheme (issue 16): `TILLSTREAM_LOG_JSON=true` turns on JSON logs in every
//! service and the CLI alike, without being mistaken for a configuration key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tests::{Stack, StackOptions, bin_path, lock};

/// The log lines a service wrote (the harness's own `=====` banners left out), each of which
/// must be a JSON object; at least one must carry a level and a message.
fn json_lines(name: &str, log: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.starts_with("====="))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{name}: not a JSON line ({e}): {l}"))
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"].is_string() && l["fields"]["message"].is_string()),
        "{name}: no JSON log line with a level and a message:\n{log}"
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_service_and_the_cli_log_json_lines_when_tillstream_log_json_is_set() {
    let kafka = runtime::testing::kafka();
    let mut options = StackOptions::historical(kafka);
    let json = vec![("TILLSTREAM_LOG_JSON".to_owned(), "true".to_owned())];
    options.ingest_env.clone_from(&json);
    options.processor_env.clone_from(&json);
    options.publisher_env.clone_from(&json);
    let stack = Stack::start(options).await.expect("every service starts");
    for s in [&stack.ingest, &stack.processor, &stack.publisher] {
        let (name, log) = {
            let s = lock(s);
            (s.name.clone(), s.log.clone())
        };
        json_lines(&name, &std::fs::read_to_string(&log).unwrap());
    }

    // The CLI takes the same variable (and the same configuration variables).
    let out = Command::new(bin_path("tillstream"))
        .args(["--log-level", "debug", "topics", "apply"])
        .envs(runtime::testing::service_env(&stack.kafka, &stack.topics))
        .env("TILLSTREAM_LOG_JSON", "true")
        .env_remove("TILLSTREAM_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tillstream topics apply: {stderr}");
    // The answer goes to stdout, the logs (JSON lines) to stderr.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("verified"), "{stdout}");
    json_lines("tillstream", &stderr);
    stack.shutdown().await;
}
