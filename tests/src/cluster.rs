//! A private three-broker Kafka cluster for fault tests and the soak: started on free ports through `scripts/kafka cluster`, stopped and deleted on drop.

use std::path::PathBuf;
use std::process::Command;

use crate::free_port;

/// A private three-node KRaft cluster (RF 3, `min.insync.replicas` 2 by default), stopped and
/// deleted on drop. Never the shared broker: its ports are free ones found at start.
#[derive(Debug)]
pub struct Cluster {
    base: u16,
    dir: PathBuf,
}

impl Cluster {
    /// Runs `scripts/kafka cluster ARGS...` against this cluster.
    ///
    /// # Errors
    /// When the script cannot be run or fails.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<()> {
        let status =
            Command::new(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka"))
                .arg("cluster")
                .args(args)
                .env("KAFKA_CLUSTER_PORT", self.base.to_string())
                .env("KAFKA_CLUSTER_DIR", &self.dir)
                .status()?;
        anyhow::ensure!(status.success(), "scripts/kafka cluster {args:?} failed");
        Ok(())
    }

    /// Formats and starts three fresh nodes on free ports and waits until all answer.
    ///
    /// # Errors
    /// When no free port range is found or the cluster does not come up.
    pub fn start() -> anyhow::Result<Self> {
        // Client ports base..base+2 and controller ports base+10..base+12, all free.
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        let base = (0..200)
            .map(|_| free_port())
            .find(|b| *b < u16::MAX - 20 && [0, 1, 2, 10, 11, 12].iter().all(|o| free(b + o)))
            .ok_or_else(|| anyhow::anyhow!("no free port range for a three-broker cluster"))?;
        let dir = std::env::temp_dir().join(runtime::testing::unique("tillstream-cluster"));
        let c = Cluster { base, dir };
        c.run(&["start"])?;
        Ok(c)
    }

    /// The bootstrap list, `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn bootstrap(&self) -> String {
        (0..3)
            .map(|i| format!("127.0.0.1:{}", self.base + i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `kill -9` of node `n` (1-3), data kept.
    ///
    /// # Errors
    /// As [`Cluster::run`].
    pub fn kill(&self, n: u8) -> anyhow::Result<()> {
        self.run(&["kill", &n.to_string()])
    }

    /// Starts node `n` again on its data and waits until it answers metadata.
    ///
    /// # Errors
    /// As [`Cluster::run`].
    pub fn restart(&self, n: u8) -> anyhow::Result<()> {
        self.run(&["restart", &n.to_string()])
    }

    /// The JVM pid of node `n` while it runs (the pid file `scripts/kafka` writes in
    /// `node-N`; removed when the node is killed).
    pub fn pid(&self, n: u8) -> Option<u32> {
        let path = self.dir.join(format!("node-{n}")).join("kafka.pid");
        let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        std::path::Path::new(&format!("/proc/{pid}"))
            .exists()
            .then_some(pid)
    }
}

impl Drop for Cluster {
    #[allow(clippy::print_stderr)]
    fn drop(&mut self) {
        if let Err(e) = self.run(&["stop"]) {
            eprintln!("stopping the cluster in {}: {e}", self.dir.display());
        }
    }
}
