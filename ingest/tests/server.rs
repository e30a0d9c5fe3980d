//! The real server over TCP with the real broker: readiness, slow and oversized headers, and
//! graceful shutdown that finishes the request in flight, flushes and returns `Ok`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use runtime::testing::{fresh_topics, kafka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Reads until the peer closes or `limit` passes; returns what was read.
async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_all(&mut s, Duration::from_secs(10)).await
}

fn post_head(fixture: &Fixture, body: &[u8]) -> String {
    let mut head =
        String::from("POST /webhooks/shopify HTTP/1.1\r\nHost: ingest\r\nConnection: close\r\n");
    for (k, v) in headers_for(fixture, body, SECRET) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    head
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_contract_and_graceful_shutdown() {
    let kafka = kafka();
    let topics = fresh_topics(&kafka, 3).await;
    let mut c = config(kafka.clone(), &topics.raw);
    c.http.read_timeout = Duration::from_secs(1);
    c.http.ready_check_interval = Duration::from_millis(200);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest::run_with_listener(c, listener, shutdown.clone()));

    // Ready once the raw topic's metadata was fetched.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = exchange(
            addr,
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (f, body) = fixtures()[0].clone();
    let mut raw = post_head(&f, &body).into_bytes();
    raw.extend_from_slice(&body);
    // Retried like Shopify would (same bytes and id): the first produce on a fresh topic may
    // exceed the ack bound on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = exchange(addr, &raw).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            answer.starts_with("HTTP/1.1 503") && Instant::now() < deadline,
            "{answer}"
        );
    }

    // Headers trickled slower than read_timeout: the connection is closed.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut slow, Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "slow headers held the connection {:?}",
        started.elapsed()
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );

    // An idle keep-alive connection is closed after read_timeout too (no connection hoarding).
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_all(&mut idle, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "idle connection kept {:?}",
        started.elapsed()
    );

    // Oversized and too many headers: 431 from hyper, and the server lives on.
    let huge = format!(
        "POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let answer = exchange(addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    let mut many = String::from("POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-Shopify-Topic-{i}: orders/paid\r\n"));
    }
    many.push_str("\r\n");
    let answer = exchange(addr, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    // A request in flight when shutdown starts is finished.
    let (f2, body2) = fixtures()[1].clone();
    let mut inflight = TcpStream::connect(addr).await.unwrap();
    inflight
        .write_all(post_head(&f2, &body2).as_bytes())
        .await
        .unwrap();
    let half = body2.len() / 2;
    inflight.write_all(&body2[..half]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    shutdown.cancel();
    // New connections are refused once the listener is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    inflight.write_all(&body2[half..]).await.unwrap();
    let answer = read_all(&mut inflight, Duration::from_secs(10)).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request not finished: {answer}"
    );

    let result = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    let got = consume_until(&kafka, &topics.raw, Duration::from_secs(20), |r| {
        r.len() >= 2
    })
    .await;
    let ids: Vec<&str> = got
        .iter()
        .map(|c| c.envelope.delivery_id.as_str())
        .collect();
    assert!(
        ids.contains(&f.webhook_id.as_str()) && ids.contains(&f2.webhook_id.as_str()),
        "{ids:?}"
    );
}

/// Ingest writes heartbeats to every partition of the raw topic it finds (here 3, whatever the
/// configured default), each behind the deliveries accepted before it; the processor's timers
/// wait on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_reach_every_partition_of_the_raw_topic() {
    let kafka = kafka();
    let topics = fresh_topics(&kafka, 3).await;
    let mut c = config(kafka.clone(), &topics.raw);
    c.heartbeat.interval = Duration::from_millis(100);
    c.heartbeat.instance_id = "hb-test".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest::run_with_listener(c, listener, shutdown.clone()));
    let got = consume_records_until(&kafka, &topics.raw, Duration::from_secs(90), true, |r| {
        (0..3).all(|p| r.iter().filter(|c| c.partition == p).count() >= 2)
    })
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), server).await;
    for p in 0..3 {
        let times: Vec<i64> = got
            .iter()
            .filter(|c| c.partition == p)
            .map(|c| {
                assert!(c.envelope.is_heartbeat(), "{:?}", c.envelope);
                assert!(c.envelope.delivery_id.starts_with("heartbeat-hb-test-"));
                c.envelope.received_at_ms
            })
            .collect();
        assert!(times.len() >= 2, "partition {p}: {times:?}");
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: {times:?}"
        );
    }
}
