//! Load generator: single-record `events/track` over keep-alive HTTP/1.1; prints JSON req/s.
//!
//! By default it starts a simulator in-process (rate limits off, unknown users created) on its
//! own multi-threaded runtime and drives it from a separate single-threaded client runtime, so
//! both share the machine the way a real deployment on one host would. `--url` targets a
//! running simulator instead. The client speaks raw HTTP/1.1 on plain TCP sockets: a generic
//! HTTP client would cost more CPU than the server under test on a 2-core machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use iterable_sim::{DEFAULT_API_KEY, SimConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Throughput benchmark of iterable-sim.
#[derive(Parser, Debug, Clone)]
#[command(name = "iterable-sim-bench")]
struct Args {
    /// Target `host:port` of a running simulator (started with --no-rate-limits); default:
    /// start one in-process.
    #[arg(long)]
    url: Option<String>,
    /// API key to send.
    #[arg(long, default_value = DEFAULT_API_KEY)]
    api_key: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Requests in flight per connection (1 = no pipelining).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Measured duration in seconds (after a 1 s warm-up).
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Server worker threads for the in-process simulator (default: all cores).
    #[arg(long)]
    server_threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (addr, _server) = match &args.url {
        Some(url) => (
            url.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
            None,
        ),
        None => {
            let (addr, server) = start_server(args.server_threads)?;
            (addr, Some(server))
        }
    };
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = client.block_on(drive(&args, &addr))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

/// The in-process server keeps running on its runtime until the process exits.
struct Server {
    _runtime: tokio::runtime::Runtime,
    _handle: iterable_sim::SimHandle,
}

fn start_server(threads: Option<usize>) -> anyhow::Result<(String, Server)> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        builder.worker_threads(t);
    }
    let runtime = builder.enable_all().build()?;
    let mut config = SimConfig::without_rate_limits();
    config.behaviour.track_creates_unknown_users = true;
    let handle = runtime.block_on(iterable_sim::spawn(config))?;
    let addr = handle.addr().to_string();
    Ok((
        addr,
        Server {
            _runtime: runtime,
            _handle: handle,
        },
    ))
}

fn request(path: &str, addr: &str, key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nApi-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn drive(args: &Args, addr: &str) -> anyhow::Result<serde_json::Value> {
    // Make sure the user exists even against an external simulator in fail-unknown mode.
    let mut setup = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let user = r#"{"email":"bench@example.com","dataFields":{"bench":true}}"#;
    setup
        .write_all(&request("/api/users/update", addr, &args.api_key, user))
        .await?;
    let mut reader = Reader::default();
    let status = reader.next_status(&mut setup).await?;
    if status != 200 {
        bail!("users/update answered {status}");
    }

    let body = r#"{"email":"bench@example.com","eventName":"benchEvent","dataFields":{"n":1,"source":"bench"}}"#;
    let req = request("/api/events/track", addr, &args.api_key, body);
    let warmup = Duration::from_secs(1);
    let measure = Duration::from_secs_f64(args.duration_secs);
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + measure;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.connections {
        let req = req.clone();
        let addr = addr.to_string();
        let depth = args.pipeline.max(1);
        tasks.spawn(async move { connection(addr, req, depth, measure_from, end).await });
    }
    let (mut ok, mut other) = (0u64, 0u64);
    while let Some(r) = tasks.join_next().await {
        let (o, n) = r??;
        ok += o;
        other += n;
    }
    let secs = measure.as_secs_f64();
    Ok(serde_json::json!({
        "endpoint": "events/track",
        "mode": if args.url.is_some() { "external" } else { "in-process" },
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "connections": args.connections,
        "pipeline": args.pipeline,
        "duration_secs": secs,
        "requests": ok + other,
        "non_2xx": other,
        "requests_per_sec": ((ok + other) as f64 / secs).round(),
    }))
}

/// Sends `depth` requests at a time on one connection until `end`; counts answers that
/// arrive between `from` and `end`.
async fn connection(
    addr: String,
    req: Vec<u8>,
    depth: usize,
    from: Instant,
    end: Instant,
) -> anyhow::Result<(u64, u64)> {
    let mut stream = TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let batch: Vec<u8> = req.repeat(depth);
    let mut reader = Reader::default();
    let (mut ok, mut other) = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        stream.write_all(&batch).await?;
        for _ in 0..depth {
            let status = reader.next_status(&mut stream).await?;
            if Instant::now() >= from {
                if (200..300).contains(&status) {
                    ok += 1;
                } else {
                    other += 1;
                }
            }
        }
    }
    Ok((ok, other))
}

/// Minimal HTTP/1.1 response reader (status + Content-Length bodies, which is all axum sends
/// for these endpoints).
#[derive(Default)]
struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    async fn next_status(&mut self, stream: &mut TcpStream) -> anyhow::Result<u16> {
        loop {
            if let Some((status, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                return Ok(status);
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed by server");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `Some((status, bytes consumed))` once a whole response is buffered.
fn parse_response(buf: &[u8]) -> anyhow::Result<Option<(u16, usize)>> {
    let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .context("bad status line")?;
    let mut len = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            len = value.trim().parse().context("bad content-length")?;
        }
    }
    let total = head_end + 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((status, total)))
}
