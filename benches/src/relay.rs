//! A userspace UDP relay that impairs the path between QUIC clients and a server: one-way
//! delay, jitter, random loss, reordering and a bandwidth bottleneck with a bounded queue,
//! set separately for each direction. The kernels these tests run on have no netem, so
//! the relay stands in for it.
//!
//! ```text
//! client A ──▶ ┌──────────────┐ ── upstream socket A ──▶
//! client B ──▶ │ listen socket│ ── upstream socket B ──▶  server
//!          ◀── └──────────────┘ ◀─ (impaired both ways) ─
//! ```
//!
//! Each distinct client source address gets an upstream socket of its own, so the server
//! sees one UDP flow per client, as it would without the relay. Clients dial
//! [`Relay::local_addr`] and keep the server's TLS name.
//!
//! What happens to a datagram, in order ([`Link::admit`]):
//!
//! 1. **loss**: dropped with probability [`Impairment::loss`], independently;
//! 2. **bottleneck** ([`RateLimit`]): the link sends `bytes_per_sec`, one datagram after
//!    the other (a token bucket with no burst allowance); a datagram that would find more
//!    than `queue_bytes` waiting ahead of it, itself included, is dropped (tail drop);
//! 3. **propagation**: [`Impairment::delay`] plus a [`Jitter`] draw. The path keeps order,
//!    as a queue does: a datagram is never delivered before one that entered the path
//!    before it, so jitter alone reorders nothing;
//! 4. **reordering**: with probability [`Impairment::reorder`] a datagram is held back by
//!    [`Impairment::reorder_delay`] more, outside that order, so later ones overtake it.
//!
//! Every datagram draws its three random numbers (loss, jitter, reordering) in that
//! order whatever is enabled, from a ChaCha8 generator seeded with [`RelayConfig::seed`]
//! (one stream per direction). The same seed and the same sequence of datagrams make the
//! same decisions; enabling reordering does not change which datagrams are lost.
//!
//! The relay runs on a thread of its own (a current-thread tokio runtime), so that its
//! timers fire on time even when the caller's runtime is busy with hundreds of clients.
//! Times have the tokio timer's resolution (1 ms). Counters ([`RelayStats`]) can be read
//! at any time. A datagram the relay's own socket buffer overflowed on is not counted
//! (the kernel drops it before the relay sees it).

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Sub;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The largest UDP payload the relay forwards (the IPv4 maximum); longer ones cannot
/// arrive on a UDP socket.
const MAX_DATAGRAM: usize = 65_535;

/// Errors of the relay and of parsing an impairment specification.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A socket could not be bound, or the relay's thread or runtime not started.
    #[error("relay I/O: {0}")]
    Io(#[from] std::io::Error),
    /// An impairment setting is out of range.
    #[error("invalid impairment: {0}")]
    Invalid(String),
    /// A `--impair` specification could not be parsed.
    #[error("cannot parse impairment {spec:?}: {reason}")]
    Parse {
        /// The offending `key=value` item (or the whole specification).
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The relay's thread ended before it reported its address.
    #[error("the relay thread ended before it started")]
    Thread,
}

/// Extra delay drawn per datagram, on top of [`Impairment::delay`]; never negative, so a
/// datagram always waits at least the one-way delay.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Jitter {
    /// No jitter.
    #[default]
    None,
    /// Uniform in [0, `max`].
    Uniform {
        /// The largest extra delay.
        max: Duration,
    },
    /// |N(0, `sd`²)|, cut at `max` (a half-normal: most datagrams see little jitter,
    /// a few up to `max`).
    Normal {
        /// Standard deviation of the underlying normal.
        sd: Duration,
        /// The largest extra delay.
        max: Duration,
    },
}

impl Jitter {
    /// The extra delay for two uniform draws `u1, u2` in [0, 1) (both always drawn, so
    /// that the kind of jitter does not shift the other decisions' random numbers).
    fn sample(self, u1: f64, u2: f64) -> Duration {
        match self {
            Jitter::None => Duration::ZERO,
            Jitter::Uniform { max } => max.mul_f64(u1),
            Jitter::Normal { sd, max } => {
                // Box–Muller; 1 − u1 is in (0, 1], so the logarithm is finite.
                let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                sd.mul_f64(z.abs()).min(max)
            }
        }
    }

    /// The largest extra delay this jitter can add.
    pub fn max(self) -> Duration {
        match self {
            Jitter::None => Duration::ZERO,
            Jitter::Uniform { max } | Jitter::Normal { max, .. } => max,
        }
    }
}

/// A bandwidth bottleneck: a link that sends `bytes_per_sec` and queues at most
/// `queue_bytes` ahead of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// The link's rate in bytes (UDP payload) per second; > 0.
    pub bytes_per_sec: u64,
    /// The most bytes that may wait for the link, the datagram being sent included; a
    /// datagram that would exceed it is dropped. At least the largest datagram (e.g.
    /// 64 KiB), or every datagram longer than it is dropped.
    pub queue_bytes: u64,
}

impl RateLimit {
    /// A bottleneck of `bytes_per_sec` with a queue of `queue` worth of its rate, at
    /// least 64 KiB (so one datagram of any size fits).
    pub fn with_queue_time(bytes_per_sec: u64, queue: Duration) -> Self {
        let queue_bytes = ((bytes_per_sec as f64 * queue.as_secs_f64()) as u64).max(64 << 10);
        Self { bytes_per_sec, queue_bytes }
    }
}

/// The impairments of one direction. The default impairs nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Extra random delay per datagram, on top of `delay`.
    pub jitter: Jitter,
    /// Probability in [0, 1] that a datagram is lost.
    pub loss: f64,
    /// Probability in [0, 1] that a datagram is held back by `reorder_delay`, letting
    /// the datagrams behind it overtake it.
    pub reorder: f64,
    /// How long a reordered datagram is held back, on top of its delay and jitter.
    pub reorder_delay: Duration,
    /// A bandwidth bottleneck, or none (unlimited).
    pub rate: Option<RateLimit>,
}

impl Impairment {
    /// Checks the ranges: probabilities in [0, 1], a rate and a queue above zero.
    pub fn validate(&self) -> Result<(), RelayError> {
        let probability = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(RelayError::Invalid(format!("{name} must be a probability in [0, 1], not {p}")))
            }
        };
        probability("loss", self.loss)?;
        probability("reorder", self.reorder)?;
        if let Some(rate) = self.rate
            && (rate.bytes_per_sec == 0 || rate.queue_bytes == 0)
        {
            return Err(RelayError::Invalid("a rate limit needs a rate and a queue above zero".into()));
        }
        if let Jitter::Normal { sd, .. } = self.jitter
            && sd.is_zero()
        {
            return Err(RelayError::Invalid("normal jitter needs a standard deviation above zero".into()));
        }
        Ok(())
    }
}

/// What to relay, and how to impair it.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Where the relay listens for clients (port 0: any free port).
    pub listen: SocketAddr,
    /// The server the relay forwards to.
    pub server: SocketAddr,
    /// Impairments of the datagrams clients send to the server.
    pub to_server: Impairment,
    /// Impairments of the datagrams the server sends to clients.
    pub to_client: Impairment,
    /// Seed of the relay's random decisions.
    pub seed: u64,
}

impl RelayConfig {
    /// A relay on a free loopback port in front of `server`, impairing both directions
    /// alike.
    pub fn symmetric(server: SocketAddr, impairment: Impairment, seed: u64) -> Self {
        let listen = match server {
            SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, 0)),
        };
        Self { listen, server, to_server: impairment, to_client: impairment, seed }
    }
}

/// What one direction of the relay did so far. Every datagram received is either
/// forwarded, lost, dropped by the queue, failed to send, or still on its way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DirectionStats {
    /// Datagrams that arrived at the relay.
    pub received: u64,
    /// Datagrams sent on.
    pub forwarded: u64,
    /// Payload bytes sent on.
    pub forwarded_bytes: u64,
    /// Datagrams dropped by random loss.
    pub lost: u64,
    /// Datagrams dropped because the bottleneck's queue was full.
    pub queue_dropped: u64,
    /// Datagrams held back to be reordered (whether or not another one overtook them).
    pub reordered: u64,
    /// Datagrams whose sending failed (e.g. the peer's port was gone).
    pub send_failed: u64,
}

impl DirectionStats {
    /// Datagrams the impairments dropped (loss and queue).
    pub fn dropped(&self) -> u64 {
        self.lost + self.queue_dropped
    }
}

impl Sub for DirectionStats {
    type Output = Self;

    /// The counts between two snapshots (`later - earlier`).
    fn sub(self, earlier: Self) -> Self {
        Self {
            received: self.received.saturating_sub(earlier.received),
            forwarded: self.forwarded.saturating_sub(earlier.forwarded),
            forwarded_bytes: self.forwarded_bytes.saturating_sub(earlier.forwarded_bytes),
            lost: self.lost.saturating_sub(earlier.lost),
            queue_dropped: self.queue_dropped.saturating_sub(earlier.queue_dropped),
            reordered: self.reordered.saturating_sub(earlier.reordered),
            send_failed: self.send_failed.saturating_sub(earlier.send_failed),
        }
    }
}

/// What the relay did so far, per direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RelayStats {
    /// Client flows (distinct source addresses) seen.
    pub flows: u64,
    /// Clients to server.
    pub to_server: DirectionStats,
    /// Server to clients.
    pub to_client: DirectionStats,
}

impl RelayStats {
    /// Datagrams the impairments dropped, both directions.
    pub fn dropped(&self) -> u64 {
        self.to_server.dropped() + self.to_client.dropped()
    }

    /// Datagrams that arrived at the relay, both directions.
    pub fn received(&self) -> u64 {
        self.to_server.received + self.to_client.received
    }
}

impl Sub for RelayStats {
    type Output = Self;

    /// The counts between two snapshots (`later - earlier`).
    fn sub(self, earlier: Self) -> Self {
        Self {
            flows: self.flows.saturating_sub(earlier.flows),
            to_server: self.to_server - earlier.to_server,
            to_client: self.to_client - earlier.to_client,
        }
    }
}

impl fmt::Display for RelayStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = |s: &DirectionStats| {
            format!(
                "{} received, {} forwarded, {} lost, {} queue-dropped, {} reordered",
                s.received, s.forwarded, s.lost, s.queue_dropped, s.reordered
            )
        };
        write!(f, "{} flows; to server: {}; to clients: {}", self.flows, dir(&self.to_server), dir(&self.to_client))
    }
}

/// The live counters of one direction.
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    lost: AtomicU64,
    queue_dropped: AtomicU64,
    reordered: AtomicU64,
    send_failed: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DirectionStats {
            received: get(&self.received),
            forwarded: get(&self.forwarded),
            forwarded_bytes: get(&self.forwarded_bytes),
            lost: get(&self.lost),
            queue_dropped: get(&self.queue_dropped),
            reordered: get(&self.reordered),
            send_failed: get(&self.send_failed),
        }
    }
}

/// Why a datagram was not delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Random loss.
    Lost,
    /// The bottleneck's queue was full.
    QueueFull,
}

/// A datagram's fate: when it is delivered, or why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered at this instant.
    Deliver {
        /// When the relay sends it on.
        at: Instant,
        /// Whether it was held back to be reordered.
        reordered: bool,
    },
    /// Not delivered.
    Dropped(DropReason),
}

/// One direction's impairments as a pure function of the datagrams' arrival times and
/// sizes: no sockets, no clock. [`Link::admit`] decides each datagram in arrival order.
#[derive(Debug)]
pub struct Link {
    impairment: Impairment,
    rng: ChaCha8Rng,
    /// When the bottleneck will have sent everything admitted so far.
    busy_until: Option<Instant>,
    /// The latest delivery given to an in-order datagram: the path keeps order.
    last_in_order: Option<Instant>,
}

impl Link {
    /// A link with `impairment`, its random decisions drawn from `seed`.
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Self { impairment, rng: ChaCha8Rng::seed_from_u64(seed), busy_until: None, last_in_order: None }
    }

    /// Decides the fate of a datagram of `len` bytes that arrived at `arrived`. Calls
    /// must come in arrival order (`arrived` never decreasing).
    pub fn admit(&mut self, arrived: Instant, len: usize) -> Fate {
        let imp = self.impairment;
        // Always draw all four numbers, so that each decision's stream does not depend
        // on which impairments are enabled.
        let (u_loss, u_jitter1, u_jitter2, u_reorder): (f64, f64, f64, f64) =
            (self.rng.random(), self.rng.random(), self.rng.random(), self.rng.random());
        if u_loss < imp.loss {
            return Fate::Dropped(DropReason::Lost);
        }
        let departs = match imp.rate {
            None => arrived,
            Some(rate) => {
                let busy_until = self.busy_until.unwrap_or(arrived).max(arrived);
                // Bytes still waiting for the link (what it has not sent by now), in
                // integers so that a queue filled exactly to its size is not a rounding
                // error away from a drop.
                let per_sec = u128::from(rate.bytes_per_sec);
                let backlog = (busy_until - arrived).as_nanos() * per_sec / 1_000_000_000;
                if backlog + len as u128 > u128::from(rate.queue_bytes) {
                    return Fate::Dropped(DropReason::QueueFull);
                }
                let nanos = (len as u128 * 1_000_000_000).div_ceil(per_sec);
                let sending = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                self.busy_until = Some(busy_until + sending);
                busy_until + sending
            }
        };
        let mut at = departs + imp.delay + imp.jitter.sample(u_jitter1, u_jitter2);
        if let Some(last) = self.last_in_order {
            at = at.max(last);
        }
        self.last_in_order = Some(at);
        let reordered = u_reorder < imp.reorder;
        if reordered {
            at += imp.reorder_delay;
        }
        Fate::Deliver { at, reordered }
    }
}

/// A datagram waiting for its delivery time.
struct Pending {
    at: Instant,
    /// Arrival order, to keep equal delivery times in order.
    seq: u64,
    data: Vec<u8>,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    /// Reversed: the earliest delivery is the greatest, the top of `BinaryHeap`.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A datagram as it arrived, on its way to a direction's scheduler.
struct Arrival {
    arrived: Instant,
    data: Vec<u8>,
    /// The socket to send it from, and where to.
    socket: Arc<UdpSocket>,
    to: SocketAddr,
}

/// A running relay. Dropping it stops the relay (datagrams still in flight are lost).
pub struct Relay {
    local_addr: SocketAddr,
    flows: Arc<AtomicU64>,
    to_server: Arc<Counters>,
    to_client: Arc<Counters>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay").field("local_addr", &self.local_addr).field("stats", &self.stats()).finish()
    }
}

impl Relay {
    /// Binds `config.listen` and starts relaying on a thread of its own. Does not need
    /// (and does not use) the caller's tokio runtime; blocks only until the socket is
    /// bound.
    pub fn start(config: RelayConfig) -> Result<Self, RelayError> {
        config.to_server.validate()?;
        config.to_client.validate()?;
        let flows = Arc::new(AtomicU64::new(0));
        let (to_server, to_client) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        let (stop_tx, stop_rx) = oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let shared = (flows.clone(), to_server.clone(), to_client.clone());
        let thread = std::thread::Builder::new().name("udp-relay".into()).spawn(move || {
            runtime.block_on(async move {
                let mut tasks = match bind_and_spawn(config, shared).await {
                    Ok((addr, tasks)) => {
                        let _ = ready_tx.send(Ok(addr));
                        tasks
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                tokio::select! {
                    _ = stop_rx => {}
                    // A task ends only if its socket failed for good: then stop.
                    _ = tasks.join_next() => {}
                }
                // Dropping the set aborts the relay's tasks.
                drop(tasks);
            });
        })?;
        let local_addr = ready_rx.recv().map_err(|_| RelayError::Thread)??;
        Ok(Self { local_addr, flows, to_server, to_client, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address clients dial instead of the server's.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            flows: self.flows.load(Ordering::Relaxed),
            to_server: self.to_server.snapshot(),
            to_client: self.to_client.snapshot(),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type Shared = (Arc<AtomicU64>, Arc<Counters>, Arc<Counters>);

/// Binds the listening socket and spawns the relay's tasks: the listener, and a
/// scheduler per direction (each flow's upstream reader is spawned by the listener).
async fn bind_and_spawn(config: RelayConfig, shared: Shared) -> Result<(SocketAddr, JoinSet<()>), RelayError> {
    let (flows, to_server_counters, to_client_counters) = shared;
    let front = Arc::new(UdpSocket::bind(config.listen).await?);
    let local_addr = front.local_addr()?;
    // Distinct seeds per direction: the two directions' decisions are independent.
    let up = Link::new(config.to_server, config.seed);
    let down = Link::new(config.to_client, config.seed ^ 0x9e37_79b9_7f4a_7c15);
    let (up_tx, up_rx) = mpsc::unbounded_channel();
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    tasks.spawn(schedule(up, up_rx, to_server_counters.clone()));
    tasks.spawn(schedule(down, down_rx, to_client_counters.clone()));
    tasks.spawn(listen(front, config.server, flows, up_tx, down_tx, to_server_counters, to_client_counters));
    Ok((local_addr, tasks))
}

/// Reads clients' datagrams, opens an upstream socket (and its reader) for each new
/// client address, and hands each datagram to the to-server scheduler.
async fn listen(
    front: Arc<UdpSocket>,
    server: SocketAddr,
    flows: Arc<AtomicU64>,
    up: mpsc::UnboundedSender<Arrival>,
    down: mpsc::UnboundedSender<Arrival>,
    up_counters: Arc<Counters>,
    down_counters: Arc<Counters>,
) {
    let unspecified = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let mut upstream: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    // The flows' readers: aborted when this task ends.
    let mut readers = JoinSet::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Errors on an unconnected UDP socket are transient (e.g. a buffer shortage):
        // count nothing, try again.
        let Ok((len, client)) = front.recv_from(&mut buf).await else { continue };
        let arrived = Instant::now();
        Counters::add(&up_counters.received, 1);
        let socket = match upstream.get(&client) {
            Some(socket) => socket.clone(),
            None => {
                let Ok(socket) = UdpSocket::bind(unspecified).await else {
                    // No socket for this client now; its next datagram tries again.
                    Counters::add(&up_counters.send_failed, 1);
                    continue;
                };
                let socket = Arc::new(socket);
                upstream.insert(client, socket.clone());
                flows.fetch_add(1, Ordering::Relaxed);
                readers.spawn(read_upstream(
                    socket.clone(),
                    server,
                    client,
                    front.clone(),
                    down.clone(),
                    down_counters.clone(),
                ));
                socket
            }
        };
        if up.send(Arrival { arrived, data: buf[..len].to_vec(), socket, to: server }).is_err() {
            return;
        }
    }
}

/// Reads the server's datagrams to one client (on that client's upstream socket) and
/// hands them to the to-client scheduler, to be sent from the listening socket.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    client: SocketAddr,
    front: Arc<UdpSocket>,
    down: mpsc::UnboundedSender<Arrival>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else { continue };
        // Only the server's datagrams belong to this flow.
        if from != server {
            continue;
        }
        let arrived = Instant::now();
        Counters::add(&counters.received, 1);
        let arrival = Arrival { arrived, data: buf[..len].to_vec(), socket: front.clone(), to: client };
        if down.send(arrival).is_err() {
            return;
        }
    }
}

/// One direction: decides each arriving datagram with `link` and sends it at its
/// delivery time. Returns once the arrivals' channel closed and nothing is pending.
async fn schedule(mut link: Link, mut arrivals: mpsc::UnboundedReceiver<Arrival>, counters: Arc<Counters>) {
    let mut pending: BinaryHeap<Pending> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        let next = pending.peek().map(|p| p.at);
        tokio::select! {
            // Take arrivals first: their arrival times are already stamped, and a
            // datagram due now goes out right after.
            biased;
            arrival = arrivals.recv(), if open => {
                let Some(arrival) = arrival else {
                    open = false;
                    continue;
                };
                match link.admit(arrival.arrived, arrival.data.len()) {
                    Fate::Dropped(DropReason::Lost) => Counters::add(&counters.lost, 1),
                    Fate::Dropped(DropReason::QueueFull) => Counters::add(&counters.queue_dropped, 1),
                    Fate::Deliver { at, reordered } => {
                        if reordered {
                            Counters::add(&counters.reordered, 1);
                        }
                        seq += 1;
                        pending.push(Pending { at, seq, data: arrival.data, socket: arrival.socket, to: arrival.to });
                    }
                }
            }
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while pending.peek().is_some_and(|p| p.at <= now) {
                    let Some(p) = pending.pop() else { break };
                    match p.socket.send_to(&p.data, p.to).await {
                        Ok(_) => {
                            Counters::add(&counters.forwarded, 1);
                            Counters::add(&counters.forwarded_bytes, p.data.len() as u64);
                        }
                        Err(_) => Counters::add(&counters.send_failed, 1),
                    }
                }
            }
            else => return,
        }
    }
}

/// An impairment specification as the e2e harness takes it (`--impair`): comma-separated
/// `key=value` items, the same impairment applied to each direction.
///
/// * `rtt=100ms` — round-trip delay; each direction gets half (default 0);
/// * `delay=50ms` — one-way delay per direction (instead of `rtt`);
/// * `jitter=10ms` — uniform extra delay in [0, 10 ms] per direction (default 0);
///   `jitter=normal:5ms:20ms` — half-normal with σ = 5 ms, cut at 20 ms;
/// * `loss=2%` (or `loss=0.02`) — loss probability per direction (default 0);
/// * `reorder=1%` — probability a datagram is held back to be overtaken (default 0);
/// * `reorder-delay=10ms` — how long it is held back (default 10 ms);
/// * `rate=10mbit` — a bottleneck per direction, in `bit`, `kbit`, `mbit`, `gbit` (per
///   second, powers of 10) or `B`, `kB`, `MB`, `GB` (bytes per second); optional `/s`;
/// * `queue=100ms` or `queue=256kB` — the bottleneck's queue (default 100 ms of the
///   rate, at least 64 KiB);
/// * `seed=7` — the relay's seed (default 1).
///
/// Durations take `us`, `ms` or `s`. Unknown keys, repeated keys, missing units and
/// values out of range are errors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImpairSpec {
    /// The impairment of each direction.
    pub impairment: Impairment,
    /// The relay's seed.
    pub seed: u64,
}

impl ImpairSpec {
    /// The relay configuration for a server at `server`.
    pub fn relay_config(&self, server: SocketAddr) -> RelayConfig {
        RelayConfig::symmetric(server, self.impairment, self.seed)
    }
}

impl fmt::Display for ImpairSpec {
    /// A short description, e.g. `rtt 100 ms, loss 2 %, jitter ≤ 10 ms, reorder 1 % (+10 ms)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.impairment;
        write!(f, "rtt {:?}, loss {} %", i.delay * 2, i.loss * 100.0)?;
        match i.jitter {
            Jitter::None => {}
            Jitter::Uniform { max } => write!(f, ", jitter ≤ {max:?}")?,
            Jitter::Normal { sd, max } => write!(f, ", jitter |N(0, {sd:?})| ≤ {max:?}")?,
        }
        if i.reorder > 0.0 {
            write!(f, ", reorder {} % (+{:?})", i.reorder * 100.0, i.reorder_delay)?;
        }
        if let Some(rate) = i.rate {
            write!(f, ", rate {} B/s (queue {} B)", rate.bytes_per_sec, rate.queue_bytes)?;
        }
        write!(f, " per direction, seed {}", self.seed)
    }
}

fn parse_error(spec: &str, reason: impl Into<String>) -> RelayError {
    RelayError::Parse { spec: spec.to_owned(), reason: reason.into() }
}

/// A duration with a unit: `250us`, `100ms`, `1.5s`.
fn parse_duration(item: &str, value: &str) -> Result<Duration, RelayError> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(parse_error(item, "a duration needs a unit: us, ms or s (e.g. 100ms)"));
    };
    let number: f64 = number.trim().parse().map_err(|_| parse_error(item, "not a number"))?;
    Duration::try_from_secs_f64(number * scale).map_err(|_| parse_error(item, "a duration must be finite and ≥ 0"))
}

/// A probability: `2%` or `0.02`.
fn parse_probability(item: &str, value: &str) -> Result<f64, RelayError> {
    let p = match value.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|p| p / 100.0),
        None => value.parse::<f64>(),
    }
    .map_err(|_| parse_error(item, "not a number (e.g. 2% or 0.02)"))?;
    if (0.0..=1.0).contains(&p) { Ok(p) } else { Err(parse_error(item, "a probability must be in [0, 100 %]")) }
}

/// A size or rate with a unit, in bytes: `10mbit` → 1,250,000; `256kB` → 256,000.
fn parse_bytes(item: &str, value: &str) -> Result<u64, RelayError> {
    let value = value.strip_suffix("/s").unwrap_or(value);
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let scale = match unit {
        "bit" => 1.0 / 8.0,
        "kbit" => 1e3 / 8.0,
        "mbit" => 1e6 / 8.0,
        "gbit" => 1e9 / 8.0,
        "B" => 1.0,
        "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return Err(parse_error(item, "unit must be one of bit, kbit, mbit, gbit, B, kB, MB, GB")),
    };
    let number: f64 = number.parse().map_err(|_| parse_error(item, "not a number"))?;
    let bytes = number * scale;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(parse_error(item, "must be at least one byte"));
    }
    Ok(bytes as u64)
}

impl FromStr for ImpairSpec {
    type Err = RelayError;

    fn from_str(spec: &str) -> Result<Self, RelayError> {
        let mut impairment = Impairment { reorder_delay: Duration::from_millis(10), ..Impairment::default() };
        let mut seed = 1;
        let (mut rtt, mut delay, mut rate, mut queue) = (None, None, None, None);
        let mut seen = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(parse_error(item, "expected key=value"));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(parse_error(item, "given twice"));
            }
            seen.push(key);
            match key {
                "rtt" => rtt = Some(parse_duration(item, value)?),
                "delay" => delay = Some(parse_duration(item, value)?),
                "jitter" => {
                    impairment.jitter = match value.strip_prefix("normal:") {
                        Some(rest) => {
                            let Some((sd, max)) = rest.split_once(':') else {
                                return Err(parse_error(item, "normal jitter is normal:SD:MAX, e.g. normal:5ms:20ms"));
                            };
                            let (sd, max) = (parse_duration(item, sd)?, parse_duration(item, max)?);
                            if sd.is_zero() {
                                return Err(parse_error(item, "the standard deviation must be above zero"));
                            }
                            Jitter::Normal { sd, max }
                        }
                        None => Jitter::Uniform { max: parse_duration(item, value)? },
                    }
                }
                "loss" => impairment.loss = parse_probability(item, value)?,
                "reorder" => impairment.reorder = parse_probability(item, value)?,
                "reorder-delay" => impairment.reorder_delay = parse_duration(item, value)?,
                "rate" => rate = Some(parse_bytes(item, value)?),
                "queue" => {
                    // `100ms` is a time; `256kB` (or `256kB/s`, read as bytes) a size.
                    queue = Some(if value.ends_with('s') && !value.ends_with("/s") {
                        Err(parse_duration(item, value)?)
                    } else {
                        Ok(parse_bytes(item, value)?)
                    })
                }
                "seed" => seed = value.parse().map_err(|_| parse_error(item, "the seed is an unsigned integer"))?,
                _ => {
                    return Err(parse_error(
                        item,
                        "unknown key; expected rtt, delay, jitter, loss, reorder, reorder-delay, rate, queue or seed",
                    ));
                }
            }
        }
        impairment.delay = match (rtt, delay) {
            (Some(_), Some(_)) => return Err(parse_error(spec, "give rtt or delay, not both")),
            (Some(rtt), None) => rtt / 2,
            (None, Some(delay)) => delay,
            (None, None) => Duration::ZERO,
        };
        impairment.rate = match (rate, queue) {
            (None, Some(_)) => return Err(parse_error(spec, "queue needs a rate")),
            (None, None) => None,
            (Some(rate), None) => Some(RateLimit::with_queue_time(rate, Duration::from_millis(100))),
            (Some(rate), Some(Err(time))) => Some(RateLimit::with_queue_time(rate, time)),
            (Some(rate), Some(Ok(bytes))) => Some(RateLimit { bytes_per_sec: rate, queue_bytes: bytes }),
        };
        impairment.validate()?;
        Ok(Self { impairment, seed })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Feeds `count` datagrams of `len` bytes, one every `gap`, through `link`; returns
    /// each one's arrival and fate.
    fn feed(link: &mut Link, count: usize, len: usize, gap: Duration) -> Vec<(Instant, Fate)> {
        let start = Instant::now();
        (0..count)
            .map(|i| {
                let arrived = start + gap * i as u32;
                (arrived, link.admit(arrived, len))
            })
            .collect()
    }

    /// Pairs of delivered datagrams (by arrival index) that arrive out of order.
    fn inversions(fates: &[(Instant, Fate)]) -> usize {
        let delivered: Vec<Instant> = fates
            .iter()
            .filter_map(|(_, f)| match f {
                Fate::Deliver { at, .. } => Some(*at),
                Fate::Dropped(_) => None,
            })
            .collect();
        // The scheduler delivers equal times in arrival order, so only a strict
        // decrease is a reordering.
        (0..delivered.len()).map(|i| delivered[i + 1..].iter().filter(|&&later| later < delivered[i]).count()).sum()
    }

    fn count(fates: &[(Instant, Fate)], which: impl Fn(&Fate) -> bool) -> usize {
        fates.iter().filter(|(_, f)| which(f)).count()
    }

    #[test]
    fn loss_is_within_a_binomial_tolerance_and_zero_when_off() {
        let n = 10_000;
        let p = 0.02;
        for seed in [1, 2, 3] {
            let mut link = Link::new(Impairment { loss: p, ..Impairment::default() }, seed);
            let lost = count(&feed(&mut link, n, 1200, MS), |f| *f == Fate::Dropped(DropReason::Lost));
            // Mean 200, standard deviation √(n p (1 − p)) = 14: ±5σ.
            let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
            assert!((lost as f64 - mean).abs() <= 5.0 * sd, "seed {seed}: {lost} lost of {n}");
        }
        let mut clean = Link::new(Impairment { delay: 10 * MS, ..Impairment::default() }, 1);
        assert_eq!(count(&feed(&mut clean, n, 1200, MS), |f| matches!(f, Fate::Dropped(_))), 0);
    }

    #[test]
    fn the_same_seed_makes_the_same_decisions() {
        let imp = Impairment {
            loss: 0.05,
            jitter: Jitter::Normal { sd: 3 * MS, max: 10 * MS },
            reorder: 0.05,
            reorder_delay: 5 * MS,
            ..Impairment::default()
        };
        let drops = |seed| {
            feed(&mut Link::new(imp, seed), 2000, 1200, MS)
                .iter()
                .map(|(_, f)| matches!(f, Fate::Dropped(_)))
                .collect::<Vec<_>>()
        };
        assert_eq!(drops(7), drops(7));
        assert_ne!(drops(7), drops(8));
        // Reordering draws its own numbers: turning it off loses the same datagrams.
        let without_reorder: Vec<bool> = feed(&mut Link::new(Impairment { reorder: 0.0, ..imp }, 7), 2000, 1200, MS)
            .iter()
            .map(|(_, f)| matches!(f, Fate::Dropped(_)))
            .collect();
        assert_eq!(without_reorder, drops(7));
    }

    #[test]
    fn every_datagram_waits_at_least_the_one_way_delay_and_jitter_stays_bounded() {
        let delay = 50 * MS;
        for jitter in [Jitter::None, Jitter::Uniform { max: 10 * MS }, Jitter::Normal { sd: 4 * MS, max: 10 * MS }] {
            let imp = Impairment { delay, jitter, loss: 0.02, ..Impairment::default() };
            // Spaced wider than the jitter, so order-keeping never stretches a delay.
            let fates = feed(&mut Link::new(imp, 5), 2000, 1200, 20 * MS);
            let mut waits = Vec::new();
            for (arrived, fate) in &fates {
                if let Fate::Deliver { at, reordered } = fate {
                    assert!(!reordered);
                    waits.push(*at - *arrived);
                }
            }
            assert!(waits.iter().all(|w| *w >= delay && *w <= delay + jitter.max()), "{jitter:?}");
            // Jitter, when on, varies the delay.
            assert_eq!(waits.iter().any(|w| *w > delay), jitter != Jitter::None, "{jitter:?}");
        }
    }

    #[test]
    fn reordering_reorders_some_datagrams_when_enabled_and_none_when_disabled() {
        let base = Impairment {
            delay: 50 * MS,
            jitter: Jitter::Uniform { max: 10 * MS },
            loss: 0.02,
            reorder_delay: 10 * MS,
            ..Impairment::default()
        };
        // Without reordering, even with jitter and datagrams closer than it, the path
        // keeps order.
        let fates = feed(&mut Link::new(base, 3), 5000, 1200, MS);
        assert_eq!(inversions(&fates), 0);
        assert_eq!(count(&fates, |f| matches!(f, Fate::Deliver { reordered: true, .. })), 0);
        // With 1 %: about 50 held back by 10 ms, each overtaken by the next ~10.
        let fates = feed(&mut Link::new(Impairment { reorder: 0.01, ..base }, 3), 5000, 1200, MS);
        let held = count(&fates, |f| matches!(f, Fate::Deliver { reordered: true, .. }));
        assert!((20..=100).contains(&held), "{held} held back");
        assert!(inversions(&fates) >= held, "{} inversions for {held} held back", inversions(&fates));
    }

    #[test]
    fn a_bottleneck_forwards_at_most_its_rate_and_drops_what_its_queue_cannot_hold() {
        let rate = RateLimit { bytes_per_sec: 100_000, queue_bytes: 10_000 };
        let imp = Impairment { rate: Some(rate), ..Impairment::default() };
        // A burst of 100 datagrams of 1000 B at once: the queue holds 10 of them.
        let start = Instant::now();
        let mut link = Link::new(imp, 1);
        let fates: Vec<Fate> = (0..100).map(|_| link.admit(start, 1000)).collect();
        assert_eq!(fates.iter().filter(|f| matches!(f, Fate::Deliver { .. })).count(), 10);
        assert_eq!(fates.iter().filter(|f| **f == Fate::Dropped(DropReason::QueueFull)).count(), 90);
        // They leave one after the other, 10 ms apart (1000 B at 100 kB/s).
        for (i, fate) in fates.iter().take(10).enumerate() {
            assert_eq!(*fate, Fate::Deliver { at: start + 10 * MS * (i as u32 + 1), reordered: false });
        }
        // Offered 10× the rate for 10 s (1000 B every 1 ms): what is forwarded is at most
        // rate × 10 s plus a full queue, and the rest is dropped by the queue.
        let mut link = Link::new(imp, 1);
        let fates = feed(&mut link, 10_000, 1000, MS);
        let forwarded = count(&fates, |f| matches!(f, Fate::Deliver { .. })) as u64;
        assert!(forwarded * 1000 <= rate.bytes_per_sec * 10 + rate.queue_bytes, "{forwarded} forwarded");
        assert!(forwarded * 1000 >= rate.bytes_per_sec * 10 - rate.queue_bytes, "{forwarded} forwarded");
        assert_eq!(count(&fates, |f| *f == Fate::Dropped(DropReason::QueueFull)) as u64, 10_000 - forwarded);
        // Offered below the rate, nothing is dropped.
        let fates = feed(&mut Link::new(imp, 1), 1000, 1000, 20 * MS);
        assert_eq!(count(&fates, |f| matches!(f, Fate::Dropped(_))), 0);
    }

    #[test]
    fn specifications_parse_and_bad_ones_say_why() {
        let spec: ImpairSpec = "rtt=100ms,loss=2%".parse().unwrap();
        assert_eq!(spec.impairment.delay, 50 * MS);
        assert_eq!(spec.impairment.loss, 0.02);
        assert_eq!(spec.impairment.rate, None);
        assert_eq!(spec.seed, 1);
        let spec: ImpairSpec =
            "delay=20ms, jitter=normal:2ms:8ms, reorder=0.5%, reorder-delay=3ms, rate=8mbit/s, queue=50kB, seed=9"
                .parse()
                .unwrap();
        assert_eq!(spec.impairment.delay, 20 * MS);
        assert_eq!(spec.impairment.jitter, Jitter::Normal { sd: 2 * MS, max: 8 * MS });
        assert_eq!(spec.impairment.reorder, 0.005);
        assert_eq!(spec.impairment.reorder_delay, 3 * MS);
        assert_eq!(spec.impairment.rate, Some(RateLimit { bytes_per_sec: 1_000_000, queue_bytes: 50_000 }));
        assert_eq!(spec.seed, 9);
        let spec: ImpairSpec = "rate=10MB,queue=20ms,jitter=5ms".parse().unwrap();
        assert_eq!(spec.impairment.rate, Some(RateLimit { bytes_per_sec: 10_000_000, queue_bytes: 200_000 }));
        assert_eq!(spec.impairment.jitter, Jitter::Uniform { max: 5 * MS });
        for (bad, says) in [
            ("rtt=100", "unit"),
            ("loss=120%", "probability"),
            ("loss=two", "not a number"),
            ("latency=5ms", "unknown key"),
            ("rtt=1s,rtt=2s", "twice"),
            ("rtt=1s,delay=2ms", "not both"),
            ("queue=10kB", "needs a rate"),
            ("rate=10furlongs", "unit"),
            ("jitter=normal:0ms:5ms", "above zero"),
            ("rtt", "key=value"),
        ] {
            let e = bad.parse::<ImpairSpec>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    /// A UDP echo server: returns each datagram to its sender, and the distinct senders.
    async fn echo() -> (SocketAddr, tokio::task::JoinHandle<()>, Arc<std::sync::Mutex<Vec<SocketAddr>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let senders = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = senders.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok((len, from)) = socket.recv_from(&mut buf).await {
                {
                    let mut seen = seen.lock().unwrap();
                    if !seen.contains(&from) {
                        seen.push(from);
                    }
                }
                let _ = socket.send_to(&buf[..len], from).await;
            }
        });
        (addr, task, senders)
    }

    #[tokio::test]
    async fn the_relay_forwards_both_ways_with_a_flow_per_client_after_the_delay() {
        let (server, echo_task, senders) = echo().await;
        let delay = 20 * MS;
        let imp = Impairment { delay, ..Impairment::default() };
        let relay = Relay::start(RelayConfig::symmetric(server, imp, 1)).unwrap();
        let clients = [UdpSocket::bind("127.0.0.1:0").await.unwrap(), UdpSocket::bind("127.0.0.1:0").await.unwrap()];
        for (i, client) in clients.iter().enumerate() {
            for j in 0..5u8 {
                let sent = std::time::Instant::now();
                client.send_to(&[i as u8, j], relay.local_addr()).await.unwrap();
                let mut buf = [0u8; 16];
                let (len, from) =
                    tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf)).await.unwrap().unwrap();
                // The reply comes from the relay, with the payload unchanged, no sooner
                // than the two one-way delays (timers never fire early).
                assert_eq!((&buf[..len], from), (&[i as u8, j][..], relay.local_addr()));
                assert!(sent.elapsed() >= 2 * delay);
            }
        }
        // The server saw two flows, each from a socket of the relay's, not the clients'.
        let senders = senders.lock().unwrap().clone();
        assert_eq!(senders.len(), 2);
        for client in &clients {
            assert!(!senders.contains(&client.local_addr().unwrap()));
        }
        // The relay counts a datagram once its send returned, which may be just after
        // the client read it: wait for the count (bounded), then check it exactly.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while relay.stats().to_client.forwarded < 10 && std::time::Instant::now() < deadline {
            tokio::time::sleep(MS).await;
        }
        let stats = relay.stats();
        assert_eq!(stats.flows, 2);
        for dir in [stats.to_server, stats.to_client] {
            assert_eq!((dir.received, dir.forwarded, dir.forwarded_bytes, dir.dropped()), (10, 10, 20, 0));
        }
        drop(relay);
        echo_task.abort();
    }

    #[tokio::test]
    async fn the_relay_counts_what_its_impairments_drop() {
        let (server, echo_task, _) = echo().await;
        let imp = Impairment { loss: 0.5, ..Impairment::default() };
        let relay = Relay::start(RelayConfig::symmetric(server, imp, 11)).unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let sent = 200u64;
        for j in 0..sent {
            client.send_to(&j.to_le_bytes(), relay.local_addr()).await.unwrap();
            // One at a time, so the kernel's socket buffers never overflow.
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        // Every datagram is accounted for once the relay is idle.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let settled = |s: &RelayStats| {
            s.to_server.received == sent
                && s.to_server.forwarded + s.to_server.lost == sent
                && s.to_client.received == s.to_server.forwarded
                && s.to_client.forwarded + s.to_client.lost == s.to_client.received
        };
        while !settled(&relay.stats()) && std::time::Instant::now() < deadline {
            tokio::time::sleep(10 * MS).await;
        }
        let stats = relay.stats();
        assert!(settled(&stats), "{stats}");
        // The client got exactly what the relay forwarded to it.
        let mut received = 0;
        let mut buf = [0u8; 16];
        while client.try_recv_from(&mut buf).is_ok() {
            received += 1;
        }
        assert_eq!(received, stats.to_client.forwarded);
        // Half lost each way: both directions lost some and forwarded some.
        assert!(stats.to_server.lost > 0 && stats.to_server.forwarded > 0, "{stats}");
        drop(relay);
        echo_task.abort();
    }
}
