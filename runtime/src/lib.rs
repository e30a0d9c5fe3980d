//! What every tillstream service shares: configuration loading, telemetry, Kafka client
//! settings, the topic catalogue, shutdown, and the `/healthz` `/readyz` `/metrics` server.

pub mod config;
pub mod http;
pub mod kafka;
pub mod memory;
pub mod partitioner;
pub mod shred;
pub mod shutdown;
pub mod telemetry;
pub mod testing;
pub mod topics;

pub use config::{ConfigError, Secret, ServiceArgs, load_config, load_defaults};
pub use http::{Health, ops_router, serve};
pub use kafka::KafkaConfig;
pub use shutdown::{Shutdown, signal_shutdown};
pub use topics::{TopicError, TopicSpec, TopicsConfig};

/// Wall-clock time as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
