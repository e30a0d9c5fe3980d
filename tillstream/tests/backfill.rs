//! `tillstream backfill` against the Admin API fake, the real broker and an in-process processor.
//!
//! The fake serves shopify-sim's store as of a cut time; live webhooks from the same scenario
//! overlap the backfill by 30 days. The processor's lifetime values must equal the simulator's
//! `expected.json`, through a failed operation (partial data reported, not used), an
//! interrupted and resumed run, a second full run, and a replay into fresh state, and no
//! journey event may fire for this (two-year-old) history.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use runtime::testing::{fresh_topics, kafka, unique};
use runtime::{KafkaConfig, TopicsConfig};
use schemas::{Action, EventSource, IterableCommand, ShopDomain, ShopifyEnvelope};
use shopify_sim::{
    AdminOptions, FinishWebhook, Scenario, ScenarioConfig, SyntheticSpec, generate, spawn_admin,
    spawn_synthetic_admin,
};

const TOKEN: &str = "shpat_test_token";
const WEBHOOK_SECRET: &str = "test-app-secret";

fn scenario() -> ScenarioConfig {
    let cfg = ScenarioConfig {
        seed: 99,
        customers: 24,
        start: "2024-01-08T09:00:00-05:00".into(),
        days: 200,
        redact_fraction: 0.0,
        data_request_fraction: 0.0,
        mean_days_between_sessions: 30.0,
        ..ScenarioConfig::default()
    };
    cfg.validate().unwrap();
    cfg
}

fn cut(cfg: &ScenarioConfig) -> DateTime<Utc> {
    cfg.start_time().unwrap().with_timezone(&Utc) + chrono::Duration::days(150)
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn backfill(
    k: &KafkaConfig,
    t: &TopicsConfig,
    admin: &str,
    shop: &str,
    extra: &[&str],
) -> Run {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args([
            "backfill",
            "--shop",
            shop,
            "--admin-url",
            admin,
            "--poll-interval",
            "50ms",
        ])
        .args(extra)
        .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", TOKEN)
        .env("TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS", &k.bootstrap_servers)
        .env("TILLSTREAM__TOPICS__RAW", &t.raw)
        .env("TILLSTREAM__TOPICS__ERASURES", &t.erasures)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert!(
        !run.stderr.contains(TOKEN),
        "the access token must never be logged"
    );
    run
}

/// Live webhooks as ingest would write them, from `from` on.
async fn produce_live(k: &KafkaConfig, raw: &str, run: &Scenario, from: DateTime<Utc>) -> usize {
    let p: FutureProducer = k.producer("test-ingest").create().unwrap();
    let mut n = 0;
    for d in run.deliveries.iter().filter(|d| d.triggered_at >= from) {
        let shop = ShopDomain::parse(&d.shop_domain).unwrap();
        let key = schemas::routing_key(&shop, &d.topic, &d.body);
        let at = d.triggered_at.timestamp_millis();
        let env = ShopifyEnvelope {
            delivery_id: d.webhook_id.clone(),
            event_id: Some(d.event_id.clone()),
            topic: d.topic.clone(),
            shop_domain: d.shop_domain.clone(),
            api_version: Some(d.api_version.clone()),
            triggered_at_ms: Some(at),
            received_at_ms: at,
            routing_key: key.as_str().to_owned(),
            source: EventSource::Webhook,
            webhook_name: d.name.clone(),
            body: d.body.clone(),
        };
        let bytes = env.encode().unwrap();
        p.send(
            FutureRecord::to(raw).key(key.as_str()).payload(&bytes),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
        n += 1;
    }
    n
}

fn read_all(k: &KafkaConfig, topic: &str, partitions: i32) -> Vec<Vec<u8>> {
    runtime::testing::read_committed(k, topic, partitions)
        .into_iter()
        .filter_map(|(_, _, v, _)| v)
        .collect()
}

fn commands(k: &KafkaConfig, t: &TopicsConfig) -> Vec<IterableCommand> {
    read_all(k, &t.commands, t.partitions)
        .iter()
        .map(|v| IterableCommand::decode(v).unwrap())
        .collect()
}

fn cents(v: &serde_json::Value) -> i64 {
    let s = v
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| v.to_string());
    (s.parse::<f64>().unwrap() * 100.0).round() as i64
}

/// Latest lifetime value and order count per customer key, from the `UpsertUser` commands.
fn figures(cmds: &[IterableCommand]) -> BTreeMap<String, (i64, i64)> {
    let mut out: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for c in cmds {
        if let Action::UpsertUser { data_fields, .. } = &c.action {
            let e = out.entry(c.customer_key.clone()).or_default();
            if let Some(v) = data_fields.get("shopify_lifetime_value") {
                e.0 = cents(v);
            }
            if let Some(v) = data_fields.get("shopify_orders_count") {
                e.1 = v.as_i64().unwrap_or_default();
            }
        }
    }
    out
}

fn truth(run: &Scenario, shop: &str) -> BTreeMap<String, (i64, i64)> {
    run.expected
        .customers
        .iter()
        .filter(|(_, c)| !c.redacted)
        .map(|(k, c)| {
            let key = match k.strip_prefix("email:") {
                Some(e) => format!("{shop}/e/{e}"),
                None => format!("{shop}/c/{k}"),
            };
            (
                key,
                (
                    cents(&serde_json::Value::String(c.lifetime_value.clone())),
                    i64::from(c.orders_count),
                ),
            )
        })
        .collect()
}

fn differences(
    truth: &BTreeMap<String, (i64, i64)>,
    got: &BTreeMap<String, (i64, i64)>,
) -> Vec<String> {
    truth
        .iter()
        .filter(|(k, v)| got.get(*k).copied().unwrap_or_default() != **v)
        .map(|(k, v)| format!("{k}: expected {v:?}, got {:?}", got.get(k)))
        .collect()
}

/// Runs the marketing rules in-process until the figures equal the truth (or the deadline).
async fn process(
    k: &KafkaConfig,
    t: &TopicsConfig,
    truth: &BTreeMap<String, (i64, i64)>,
) -> Vec<IterableCommand> {
    let cfg: processor::ProcessorConfig = serde_json::from_value(serde_json::json!({
        "application_id": unique("backfill-app"),
        "instance_id": "i1",
        "kafka": {"bootstrap_servers": k.bootstrap_servers},
        "http": {"listen": "127.0.0.1:0", "advertised_url": "http://127.0.0.1:0"},
        "engine": {"commit_interval": "50ms", "commit_max_records": 500, "dedup_window": "7days", "dedup_max_per_key": 64,
                   "transaction_timeout": "10s", "caught_up_lag": 2, "poll_timeout": "50ms", "session_timeout": "6s",
                   // The backfill writes the raw topic without ingest's heartbeats.
                   "timers": {"clock": "stream_time"}},
        "rules": {"kind": "marketing"},
    }))
    .unwrap();
    let cfg = processor::ProcessorConfig {
        topics: t.clone(),
        ..cfg
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(processor::run_with_listener(cfg, listener, stop.clone()));
    let deadline = Instant::now() + Duration::from_secs(90);
    let cmds = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cmds = tokio::task::block_in_place(|| commands(k, t));
        let diff = differences(truth, &figures(&cmds));
        if diff.is_empty() {
            break cmds;
        }
        assert!(
            Instant::now() < deadline,
            "{} customers differ from expected.json, e.g. {:?}",
            diff.len(),
            &diff[..diff.len().min(5)]
        );
    };
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    cmds
}

fn assert_no_journeys(cmds: &[IterableCommand], what: &str) {
    let journeys: Vec<String> = cmds
        .iter()
        .filter_map(|c| match &c.action {
            Action::TrackEvent { event_name, .. } => Some(event_name.clone()),
            Action::UpdateCart { .. } => Some("update_cart".into()),
            _ => None,
        })
        .collect();
    assert!(
        journeys.is_empty(),
        "{what}: stale journey events fired: {journeys:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| matches!(c.action, Action::TrackPurchase { .. })),
        "{what}: purchases are history and are sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backfill_plus_overlapping_webhooks_equals_the_truth_through_failure_resume_rerun_and_replay()
 {
    let cfg = scenario();
    let run = generate(&cfg).unwrap();
    let shop = cfg.shop_domain.clone();
    let as_of = cut(&cfg);
    let opts = AdminOptions {
        access_token: TOKEN.into(),
        as_of: Some(as_of),
        // A small bucket so the client must pace itself from throttleStatus.
        maximum_available: 12.0,
        restore_rate: 10.0,
        fail_first_orders: true,
        run_time: Duration::from_secs(30),
        ..AdminOptions::default()
    };
    let admin = spawn_admin(&cfg, opts, "127.0.0.1:0").await.unwrap();
    let k = kafka();
    let t = fresh_topics(&k, 3).await;
    let dir = std::env::temp_dir().join(unique("backfill-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let cp = dir.join("checkpoint.json");
    let cp_arg = cp.to_str().unwrap();

    // 1. The first orders operation fails: its partial data is reported, nothing is produced.
    let r = backfill(&k, &t, &admin.base_url, &shop, &["--checkpoint", cp_arg]).await;
    assert!(!r.ok, "a failed operation fails the run: {}", r.stdout);
    assert!(
        r.stderr.contains("FAILED")
            && r.stderr.contains("partial data at")
            && r.stderr.contains("NOT imported"),
        "{}",
        r.stderr
    );
    assert!(
        read_all(&k, &t.raw, t.partitions).is_empty(),
        "partial data must not be imported"
    );

    // 2. Resumed (reusing the customers operation) while another app has emptied the bucket,
    // interrupted after 150 events ...
    admin.drain_bucket(Duration::from_secs(2));
    let r = backfill(
        &k,
        &t,
        &admin.base_url,
        &shop,
        &["--checkpoint", cp_arg, "--max-events", "150"],
    )
    .await;
    assert!(
        r.ok && r.stdout.contains("stopped after 150"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // ... and resumed to the end.
    let r = backfill(&k, &t, &admin.base_url, &shop, &["--checkpoint", cp_arg]).await;
    assert!(
        r.ok && r.stdout.contains("backfill complete"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let total: usize = r
        .stdout
        .split("backfill complete: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        r.stdout
            .contains(&format!("({} produced in this run", total - 150)),
        "{}",
        r.stdout
    );
    let raw = read_all(&k, &t.raw, t.partitions);
    assert_eq!(
        raw.len(),
        total,
        "interrupt + resume produced every event exactly once"
    );
    let first = ShopifyEnvelope::decode(&raw[0]).unwrap();
    assert_eq!(first.source, EventSource::Backfill);
    assert!(first.delivery_id.starts_with("backfill-"));
    let stats = admin.stats();
    assert!(stats.throttled > 0, "the small bucket throttles: {stats:?}");
    assert_eq!(
        stats.api_versions,
        ["2026-07"],
        "the pinned version is used"
    );
    assert_eq!(
        stats.operations, 3,
        "customers once, orders failed once then again"
    );

    // 3. The same backfill again, from scratch: every event twice on the topic.
    let r = backfill(&k, &t, &admin.base_url, &shop, &[]).await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);

    // 4. Live webhooks overlapping the backfill by 30 days, to the end of the timeline.
    let live = produce_live(&k, &t.raw, &run, as_of - chrono::Duration::days(30)).await;
    assert!(live > 100, "the overlap has live traffic ({live})");

    // 5. The processor's figures equal the truth: nothing counted twice.
    let truth = truth(&run, &shop);
    assert!(
        truth.values().filter(|v| v.0 > 0).count() >= 10,
        "the scenario has buyers"
    );
    let cmds = process(&k, &t, &truth).await;
    assert_no_journeys(&cmds, "first run");

    // 6. A replay of the raw topic into fresh state: same figures, still no stale journeys.
    let mut replay = fresh_topics(&k, 3).await;
    replay.raw = t.raw.clone();
    let cmds = process(&k, &replay, &truth).await;
    assert_no_journeys(&cmds, "replay");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dry_run_reports_what_would_be_imported_and_produces_nothing() {
    let cfg = scenario();
    let opts = AdminOptions {
        access_token: TOKEN.into(),
        as_of: Some(cut(&cfg)),
        ..AdminOptions::default()
    };
    let admin = spawn_admin(&cfg, opts, "127.0.0.1:0").await.unwrap();
    let k = kafka();
    let t = fresh_topics(&k, 1).await;
    let r = backfill(
        &k,
        &t,
        &admin.base_url,
        &cfg.shop_domain,
        &[
            "--dry-run",
            "--since",
            "2024-01-01",
            "--until",
            "2030-01-01",
        ],
    )
    .await;
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
    let expect = format!(
        "dry run: would import {} customers, {} orders",
        admin.customers, admin.orders
    );
    assert!(r.stdout.contains(&expect), "{expect:?} not in {}", r.stdout);
    assert!(read_all(&k, &t.raw, 1).is_empty());

    // A date range the store has nothing in, and a wrong token.
    let r = backfill(
        &k,
        &t,
        &admin.base_url,
        &cfg.shop_domain,
        &["--dry-run", "--since", "2031-01-01"],
    )
    .await;
    assert!(
        r.ok && r.stdout.contains("would import 0 customers, 0 orders"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args([
            "backfill",
            "--shop",
            &cfg.shop_domain,
            "--admin-url",
            &admin.base_url,
            "--dry-run",
        ])
        .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", "wrong")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the access token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finish_webhook_ends_a_long_poll_wait_and_forged_notices_are_refused() {
    let cfg = scenario();
    // The port `--finish-listen` will bind, known before the fake is told where to send.
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let opts = AdminOptions {
        access_token: TOKEN.into(),
        as_of: Some(cut(&cfg)),
        // Only time ends an operation (2 s), never polls; only the webhook can tell the client.
        polls_to_complete: u32::MAX,
        run_time: Duration::from_secs(2),
        finish_webhook: Some(FinishWebhook {
            url: format!("http://{listen}/"),
            secret: WEBHOOK_SECRET.into(),
        }),
        ..AdminOptions::default()
    };
    let admin = spawn_admin(&cfg, opts, "127.0.0.1:0").await.unwrap();
    let k = kafka();
    let t = fresh_topics(&k, 3).await;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args([
            "backfill",
            "--shop",
            &cfg.shop_domain,
            "--admin-url",
            &admin.base_url,
        ])
        .args(["--poll-interval", "60s", "--finish-listen", &listen])
        .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", TOKEN)
        .env("TILLSTREAM_SHOPIFY__WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS", &k.bootstrap_servers)
        .env("TILLSTREAM__TOPICS__RAW", &t.raw)
        .env("TILLSTREAM__TOPICS__ERASURES", &t.erasures)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The customers operation started and was polled once: the run is in its 60 s wait (the
    // listener is bound before any operation starts).
    let deadline = Instant::now() + Duration::from_secs(20);
    while admin.stats().requests < 2 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill exited before its first poll"
        );
        assert!(
            Instant::now() < deadline,
            "no bulk operation started and polled: {:?}",
            admin.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Forged notices (wrong secret, not base64, unsigned) are refused ...
    let body = br#"{"admin_graphql_api_id":"gid://shopify/BulkOperation/1","status":"completed","type":"query"}"#;
    let http = reqwest::Client::new();
    for signature in [
        Some(shopify_sim::sign(body, b"not-the-app-secret")),
        Some("forged".into()),
        None,
    ] {
        let mut req = http
            .post(format!("http://{listen}/"))
            .header("X-Shopify-Topic", "bulk_operations/finish")
            .body(body.to_vec());
        if let Some(s) = &signature {
            req = req.header("X-Shopify-Hmac-Sha256", s);
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(
            status,
            reqwest::StatusCode::UNAUTHORIZED,
            "signature {signature:?}"
        );
    }

    // ... and the fake's signed notices end both waits long before the 60 s poll would.
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the finish webhook did not end the 60 s poll wait")
        .unwrap();
    let took = started.elapsed();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("backfill complete"),
        "{stdout}\n{stderr}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let expect = format!(
        "importing {} customers, {} orders",
        admin.customers, admin.orders
    );
    assert!(stdout.contains(&expect), "{expect:?} not in {stdout}");
    let total: usize = stdout
        .split("backfill complete: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(total > admin.customers + admin.orders, "{stdout}");
    assert_eq!(
        read_all(&k, &t.raw, t.partitions).len(),
        total,
        "every event once on the raw topic"
    );
    // Each operation was polled exactly twice: when started, and when its signed notice came.
    // A forged notice that woke the wait would have added a poll of a running operation.
    let stats = admin.stats();
    assert_eq!(
        (stats.operations, stats.throttled, stats.requests),
        (2, 0, 6),
        "start + 2 polls per operation: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_backfill_resumes_mid_stream_from_its_spill_and_logs_progress() {
    // A synthetic store whose line items are shuffled and partly moved to the far ends of
    // the file; big enough that production takes a few seconds.
    let opts = AdminOptions {
        access_token: TOKEN.into(),
        polls_to_complete: 1,
        ..AdminOptions::default()
    };
    let admin = spawn_synthetic_admin(SyntheticSpec::new(12_000, 5), opts, "127.0.0.1:0")
        .await
        .unwrap();
    let k = kafka();
    let t = fresh_topics(&k, 3).await;
    let dir = std::env::temp_dir().join(unique("backfill-kill"));
    std::fs::create_dir_all(&dir).unwrap();
    let cp = dir.join("checkpoint.json");
    let shop = "synthetic-store.myshopify.com";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tillstream"))
        .args(["backfill", "--shop", shop, "--admin-url", &admin.base_url])
        .args([
            "--poll-interval",
            "50ms",
            "--checkpoint",
            cp.to_str().unwrap(),
        ])
        .env("TILLSTREAM_SHOPIFY__ACCESS_TOKEN", TOKEN)
        .env("TILLSTREAM__KAFKA__BOOTSTRAP_SERVERS", &k.bootstrap_servers)
        .env("TILLSTREAM__TOPICS__RAW", &t.raw)
        .env("TILLSTREAM__TOPICS__ERASURES", &t.erasures)
        .env("TILLSTREAM_BACKFILL__PROGRESS_INTERVAL", "200ms")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // kill -9 once Kafka has acknowledged a few thousand events.
    let produced = |cp: &std::path::Path| -> usize {
        std::fs::read(cp)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["produced"].as_u64())
            .map_or(0, |n| usize::try_from(n).unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    while produced(&cp) < 4000 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backfill ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no progress in the checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let acked = produced(&cp);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("produce: ") && l.contains("/s, ETA ")),
        "no progress line with rate and ETA on a non-terminal stderr:\n{stderr}"
    );

    // The resumed run goes straight to producing from the spill: no new download.
    let r = backfill(
        &k,
        &t,
        &admin.base_url,
        shop,
        &["--checkpoint", cp.to_str().unwrap()],
    )
    .await;
    assert!(
        r.ok && r.stdout.contains("backfill complete"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    let total: usize = r
        .stdout
        .split("backfill complete: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let stats = admin.stats();
    assert_eq!(
        (stats.operations, stats.downloads),
        (2, 2),
        "the resume re-downloaded instead of using its spill: {stats:?}"
    );
    assert!(
        r.stdout
            .contains(&format!("({} produced in this run", total - acked)),
        "resumed after the {acked} acknowledged events: {}",
        r.stdout
    );

    // Every event is on the topic; only the batch in flight at the kill may be there twice.
    let raw = read_all(&k, &t.raw, t.partitions);
    let ids: std::collections::BTreeSet<String> = raw
        .iter()
        .map(|v| ShopifyEnvelope::decode(v).unwrap().delivery_id)
        .collect();
    assert_eq!(ids.len(), total, "every event at least once");
    assert!(
        raw.len() - total <= 2000,
        "{} re-sent events: more than the batch in flight",
        raw.len() - total
    );
    assert!(
        !dir.join("checkpoint.spill").exists(),
        "the spill is removed once everything is produced"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
