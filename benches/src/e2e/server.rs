//! The server under test as a child process: `privagg serve` for secure rounds, this
//! harness's own `plain-server` subcommand for plain ones. A separate process, so that
//! its peak memory and CPU time are its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::procfs;

/// The fields of a round record (`privagg serve`'s `round-<r>.json`, or the plain
/// server's) that the harness reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoundJson {
    /// Round number.
    pub round: u64,
    /// Clients in the sum.
    pub included: Vec<u32>,
    /// Clients that left, with the phase they left in.
    pub dropped: Vec<DroppedJson>,
    /// Neighbours per client.
    pub neighbours: u32,
    /// Shamir threshold.
    pub threshold: u32,
    /// Bits per word.
    pub bits: u8,
    /// Seconds per phase and `total`.
    pub timings: BTreeMap<String, f64>,
    /// Bytes received from the round's clients.
    pub bytes_in: u64,
    /// Bytes sent to them.
    pub bytes_out: u64,
}

/// A dropped client in a round record.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DroppedJson {
    /// The phase it left in (`masked_input` = after ShareKeys, before uploading).
    pub phase: String,
}

/// A running server process.
pub struct ServerProcess {
    child: Child,
    state: PathBuf,
    addr: SocketAddr,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Starts `program args…` with stderr going to `state/server.log`, and samples its
    /// peak memory every 50 ms until it exits (a last read after the session would find
    /// the process gone).
    pub fn spawn(mut command: Command, state: &Path, addr: SocketAddr) -> Result<Self> {
        let log = std::fs::File::create(state.join("server.log")).context("cannot create server.log")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {command:?}"))?;
        let (peak, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let pid = child.id();
        let sampler = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match procfs::peak_rss_bytes(pid) {
                        Some(bytes) => {
                            peak.fetch_max(bytes, Ordering::Relaxed);
                        }
                        None => return,
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Ok(Self { child, state: state.to_owned(), addr, peak, stop, sampler: Some(sampler) })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for `cert.der` (written once the server is bound) and returns it.
    pub async fn certificate(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        let path = self.state.join("cert.der");
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(cert) = std::fs::read(&path)
                && !cert.is_empty()
            {
                // privagg writes the certificate before binding: give the socket a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(cert);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("the server wrote no certificate within {timeout:?}; see {}", self.log_path().display());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits for the record of `round`.
    pub async fn record(&mut self, round: u64, timeout: Duration) -> Result<RoundJson> {
        let path = self.state.join(format!("round-{round}.json"));
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(text) = std::fs::read(&path)
                && let Ok(record) = serde_json::from_slice::<RoundJson>(&text)
            {
                return Ok(record);
            }
            if Instant::now() > deadline {
                bail!("no {} within {timeout:?}; see {}", path.display(), self.log_path().display());
            }
            if self.child.try_wait()?.is_some() && !path.exists() {
                bail!("the server exited without writing round {round}; see {}", self.log_path().display());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The server's CPU time so far, seconds.
    pub fn cpu_seconds(&self) -> f64 {
        procfs::cpu_seconds(self.child.id()).unwrap_or(f64::NAN)
    }

    /// The server's peak resident memory so far, bytes.
    pub fn peak_rss(&self) -> u64 {
        if let Some(now) = procfs::peak_rss_bytes(self.child.id()) {
            self.peak.fetch_max(now, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for the server to end its session, then kills it.
    /// Returns whether it exited by itself with success.
    pub async fn finish(mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(25)).await,
                _ => break None,
            }
        };
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status.is_some_and(|s| s.success())
    }

    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the server exited ({status}); see {}", self.log_path().display());
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.state.join("server.log")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
    }
}

/// A loopback address with a port that was free a moment ago.
pub fn free_udp_addr() -> Result<SocketAddr> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").context("cannot bind a UDP socket on loopback")?;
    Ok(socket.local_addr()?)
}

/// The `privagg` binary: `explicit`, else next to this executable (built by the same
/// `cargo build`), else built now with `cargo build -p privagg-cli` in this
/// executable's profile.
pub fn privagg_binary(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the harness has no directory")?;
    let sibling = dir.join(format!("privagg{}", std::env::consts::EXE_SUFFIX));
    if sibling.exists() {
        return Ok(sibling);
    }
    let release = dir.file_name().is_some_and(|d| d == "release");
    eprintln!(
        "building the privagg server binary (cargo build{} -p privagg-cli)…",
        if release { " --release" } else { "" }
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "privagg-cli", "--bin", "privagg"]);
    if release {
        build.arg("--release");
    }
    // Keep the same target directory: the binary must land next to this one.
    if let Some(target) = dir.parent() {
        build.env("CARGO_TARGET_DIR", target);
    }
    if !build.status().context("cannot run cargo")?.success() {
        bail!("building privagg failed; pass --server-bin");
    }
    if !sibling.exists() {
        bail!("cargo built privagg but not at {}; pass --server-bin", sibling.display());
    }
    Ok(sibling)
}
