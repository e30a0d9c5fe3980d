//! The services under test as child processes: their binaries, free ports, start, kill -9,
//! SIGTERM and restart with the same environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Path of a sibling binary of the running executable (`target/<profile>/<name>`).
///
/// # Panics
/// When the binary was not built, with the command that builds it.
#[allow(clippy::panic)]
pub fn bin_path(name: &str) -> PathBuf {
    if let Ok(dir) = std::env::var("TILLSTREAM_BIN_DIR") {
        return Path::new(&dir).join(name);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    if !path.exists() {
        panic!(
            "{} does not exist: run `cargo build -p ingest -p processor -p publisher -p shopify-writer` first \
             (same CARGO_TARGET_DIR and profile as the tests; scripts/test does it)",
            path.display()
        );
    }
    path
}

/// A free TCP port on 127.0.0.1.
///
/// # Panics
/// When no port can be bound.
#[allow(clippy::expect_used)]
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// One service binary run as a child process, restartable with the same environment.
#[derive(Debug)]
pub struct Service {
    /// `ingest`, `processor` or `publisher` (plus a suffix for a second instance).
    pub name: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    /// Its HTTP port (`/readyz`, `/metrics`).
    pub port: u16,
    /// Where stdout and stderr go (appended across restarts).
    pub log: PathBuf,
    child: Option<Child>,
    /// Whether the supervisor should restart it when it exits.
    pub supervised: bool,
    /// Times started.
    pub starts: u32,
    /// Exits the test did not cause (restarted by the supervisor), with their status.
    pub unexpected_exits: Vec<String>,
}

impl Service {
    /// A service that is not started yet.
    pub fn new(
        name: &str,
        bin: PathBuf,
        env: Vec<(String, String)>,
        port: u16,
        log_dir: &Path,
    ) -> Self {
        Service {
            name: name.to_owned(),
            bin,
            env,
            port,
            log: log_dir.join(format!("{name}.log")),
            child: None,
            supervised: true,
            starts: 0,
            unexpected_exits: Vec::new(),
        }
    }

    /// Starts the process (a no-op when it runs).
    ///
    /// # Panics
    /// When the binary cannot be started.
    #[allow(clippy::expect_used)]
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        use std::io::Write;
        let _ = writeln!(
            out,
            "===== start #{} of {} =====",
            self.starts + 1,
            self.name
        );
        let mut cmd = Command::new(&self.bin);
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().expect("clone log")))
            .stderr(Stdio::from(out));
        self.child = Some(cmd.spawn().expect("spawn service"));
        self.starts += 1;
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to 30 s (then kill -9).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Restarts it when it exited on its own; returns whether it did.
    pub fn restart_if_exited(&mut self) -> bool {
        let exited = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(e.to_string()),
            _ => None,
        };
        match exited {
            Some(status) => {
                self.child = None;
                self.unexpected_exits.push(status);
                self.start();
                true
            }
            None => false,
        }
    }

    /// Base URL of its HTTP port.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A service shared between the test and the supervisor thread.
pub type Shared = Arc<Mutex<Service>>;

/// Locks a shared service (a poisoned lock is still usable).
pub fn lock(s: &Shared) -> MutexGuard<'_, Service> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
