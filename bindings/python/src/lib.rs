//! `privagg._native`: the Python binding of the client SDK ([`privagg_client`]).
//!
//! A thin layer: it turns keyword arguments into [`ClientOptions`] (the identity files
//! through [`ClientOptions::load_identity`], as the `privagg client` command does), NumPy
//! arrays into the SDK's vectors, and [`SdkError`]s into the exception classes of
//! `privagg.errors` (pure Python, so that they are easy to document and extend). The
//! pure-Python package around it (`python/privagg`) adds the asyncio wrapper, the local
//! server helper and the type stubs.
//!
//! Every call runs as a task on one tokio runtime shared by all clients of the process,
//! while the calling thread waits without the GIL. It wakes every 100 ms to run Python's
//! signal handlers (Ctrl-C raises `KeyboardInterrupt`) and to see whether the call was
//! cancelled (`Client._cancel`, used by `AsyncClient`); either aborts the task and closes
//! the client, since a round left half-way cannot be resumed. `run`'s `train` callback
//! is sent back to the calling thread, so it runs there, as Python code expects.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, mpsc};
use std::time::Duration;

use ndarray::{Array1, ArrayView1};
use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use privagg_client::{
    AbortCode, AdversaryClass, Client, ClientOptions, DEFAULT_MAX_EPSILON, DEFAULT_MIN_NOISE_MULTIPLIER, EndReason,
    IdentityFiles, PrivacyPolicy, RoundError, RoundReport, SdkError,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// How often a waiting call runs Python's signal handlers and checks for cancellation.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The runtime every client of the process runs on (created on first use).
fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("privagg")
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the privagg runtime: {e}")))
}

/// Why a blocking call stopped before its task finished.
enum Stop {
    /// A Python signal handler raised (Ctrl-C: `KeyboardInterrupt`).
    Signal(PyErr),
    /// `Client._cancel` was called.
    Cancelled,
    /// The task ended without an answer: a panic in privagg, a bug.
    Crashed,
}

/// What a call's task tells the thread that waits for it.
enum Event<T> {
    /// The call finished with this.
    Done(T),
    /// `run` needs `train(model)`, on the calling thread; the answer goes to `reply`.
    Train { model: Array1<f32>, reply: mpsc::SyncSender<TrainResult> },
}

/// What `train` gave: the update and its weight, or why there is none.
type TrainResult = Result<(Array1<f32>, f32), TrainFailure>;

/// Why `train` gave no update.
#[derive(Debug)]
enum TrainFailure {
    /// It raised (or returned something unusable): the client leaves the round.
    Raised(String),
    /// Ctrl-C while it ran: the client leaves the session ([`privagg_client::Interrupt`]),
    /// so that the server does not count the attempt against the round.
    Interrupted,
}

impl std::fmt::Display for TrainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Raised(message) => f.write_str(message),
            Self::Interrupted => f.write_str("interrupted (KeyboardInterrupt)"),
        }
    }
}

/// A task's way to have `train` run on the thread that waits for it.
struct Trainer<T>(mpsc::Sender<Event<T>>);

impl<T> Trainer<T> {
    /// Blocks the task's thread (the SDK calls `train` off the runtime) until the
    /// waiting thread has run `train(model)`.
    fn train(&self, model: ArrayView1<'_, f32>) -> TrainResult {
        let gone = || TrainFailure::Raised("the calling thread stopped waiting".into());
        let (reply, answer) = mpsc::sync_channel(1);
        self.0.send(Event::Train { model: model.to_owned(), reply }).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

/// Runs the future `make` builds as a task on the shared runtime and waits for it on
/// this thread (which holds no GIL), waking every [`POLL_INTERVAL`] to run Python's
/// signal handlers and check `cancel`, and running `train` here whenever the task asks.
/// A signal or a cancellation aborts the task: it is dropped on the runtime at its next
/// await, which closes any client it owns.
///
/// The task owns everything it touches, so waiting depends on no timer of the runtime:
/// Ctrl-C is honoured even if the runtime's threads are busy.
fn wait_for<T, F>(
    rt: &tokio::runtime::Runtime,
    cancel: &AtomicBool,
    make: impl FnOnce(Trainer<T>) -> F,
    mut train: impl FnMut(Python<'_>, Array1<f32>) -> TrainResult,
) -> Result<T, Stop>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (events, received) = mpsc::channel();
    let future = make(Trainer(events.clone()));
    let task = rt.spawn(async move {
        let _ = events.send(Event::Done(future.await));
    });
    let stop = |why: Stop| {
        task.abort();
        Err(why)
    };
    loop {
        match received.recv_timeout(POLL_INTERVAL) {
            Ok(Event::Done(out)) => return Ok(out),
            Ok(Event::Train { model, reply }) => {
                let _ = reply.send(Python::attach(|py| train(py, model)));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return stop(Stop::Crashed),
        }
        if cancel.load(Ordering::Acquire) {
            return stop(Stop::Cancelled);
        }
        if let Err(interrupt) = Python::attach(|py| py.check_signals()) {
            return stop(Stop::Signal(interrupt));
        }
    }
}

/// For calls that never train.
fn no_training(_: Python<'_>, _: Array1<f32>) -> TrainResult {
    Err(TrainFailure::Raised("this call does not train".into()))
}

/// An exception of `privagg.errors` by class name, with `message` and attributes.
fn error(py: Python<'_>, class: &str, message: String, attrs: &[(&str, Py<PyAny>)]) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let cls = py.import("privagg.errors")?.getattr(class)?;
        let exc = cls.call1((message.clone(),))?;
        for (name, value) in attrs {
            exc.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

/// The `privagg.errors` exception for an SDK error (its message is the error's text,
/// which never holds the admission token).
fn sdk_error(py: Python<'_>, err: SdkError) -> PyErr {
    let message = err.to_string();
    let int = |v: u64| v.into_pyobject(py).map(|v| v.into_any().unbind());
    let (class, attrs): (&str, Vec<(&str, Py<PyAny>)>) = match &err {
        SdkError::Unreachable(_) => ("Unreachable", vec![]),
        SdkError::Refused(_) => ("Refused", vec![]),
        SdkError::Handshake(_) => ("HandshakeError", vec![]),
        SdkError::Tls(_) => ("TlsError", vec![]),
        SdkError::Identity(_) => ("IdentityError", vec![]),
        SdkError::ConnectionLost(_) => ("ConnectionLost", vec![]),
        SdkError::Frame(_) => ("ProtocolError", vec![]),
        SdkError::Memory { .. } => ("StateError", vec![]),
        SdkError::Local(_) => ("LocalError", vec![]),
        SdkError::SessionEnded { completed_rounds, end, .. } => {
            let end = end_reason(*end).into_pyobject(py).map(|v| v.into_any().unbind());
            let attrs = [int(*completed_rounds).map(|v| ("completed_rounds", v)), end.map(|v| ("end", v))];
            ("SessionEnded", attrs.into_iter().filter_map(Result::ok).collect())
        }
        SdkError::Round(round) => match round {
            RoundError::PolicyRefused(_) => ("PolicyRefused", vec![]),
            RoundError::DimensionMismatch { expected, got } => {
                let attrs = [("expected", *expected as u64), ("got", *got as u64)]
                    .into_iter()
                    .filter_map(|(name, v)| int(v).ok().map(|v| (name, v)))
                    .collect();
                ("DimensionMismatch", attrs)
            }
            RoundError::InvalidUpdate(_) => ("InvalidUpdate", vec![]),
            RoundError::TrainingOverran { .. } => ("TrainingOverran", vec![]),
            RoundError::Aborted { code, .. } => {
                let code = abort_code(*code).into_pyobject(py).map(|v| v.into_any().unbind());
                ("RoundAborted", code.map(|c| vec![("code", c)]).unwrap_or_default())
            }
            _ => ("RoundError", vec![]),
        },
        _ => ("PrivaggError", vec![]),
    };
    error(py, class, message, &attrs)
}

/// Why the session ended, as `SessionEnded.end` gives it.
fn end_reason(end: EndReason) -> &'static str {
    match end {
        EndReason::Complete => "complete",
        EndReason::BudgetSpent => "budget_spent",
        EndReason::RoundFailed => "round_failed",
        EndReason::Shutdown => "shutdown",
        EndReason::ServerError => "server_error",
    }
}

/// The name of an abort code, as `RoundAborted.code` gives it.
fn abort_code(code: AbortCode) -> String {
    format!("{code:?}")
}

/// Reads a 1-D float32 or float64 NumPy array into the SDK's `f32` vector, refusing
/// everything else with `InvalidUpdate` (shape, NaN or infinity) or `UpdateTypeError`
/// (not an array, or not a float array). One pass, one copy: the copy is what lets the
/// GIL go while the round runs, since Python code could otherwise change the array under it.
fn read_update(py: Python<'_>, what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    fn finite<T: Copy + Into<f64>>(
        py: Python<'_>,
        what: &str,
        view: ArrayView1<'_, T>,
        convert: impl Fn(T) -> f32,
    ) -> PyResult<Vec<f32>> {
        let mut out = Vec::with_capacity(view.len());
        for (i, &v) in view.iter().enumerate() {
            let f = convert(v);
            if !f.is_finite() {
                let value = if Into::<f64>::into(v).is_nan() { "NaN" } else { "an infinity" };
                let message = format!(
                    "{what} holds {value} at index {i} (after conversion to float32); privagg sums finite values only"
                );
                return Err(error(py, "InvalidUpdate", message, &[]));
            }
            out.push(f);
        }
        Ok(out)
    }
    if let Ok(array) = obj.cast::<PyArray1<f32>>() {
        let array = array.try_readonly().map_err(|e| error(py, "InvalidUpdate", format!("{what}: {e}"), &[]))?;
        return finite(py, what, array.as_array(), |v| v);
    }
    if let Ok(array) = obj.cast::<PyArray1<f64>>() {
        let array = array.try_readonly().map_err(|e| error(py, "InvalidUpdate", format!("{what}: {e}"), &[]))?;
        return finite(py, what, array.as_array(), |v| v as f32);
    }
    let Ok(array) = obj.cast::<PyUntypedArray>() else {
        let kind = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        let message = format!("{what} must be a 1-D numpy.ndarray of float32 or float64, got {kind}");
        return Err(error(py, "UpdateTypeError", message, &[]));
    };
    if array.ndim() != 1 {
        let message = format!("{what} must be 1-D (the flattened model update), got shape {:?}", array.shape());
        return Err(error(py, "InvalidUpdate", message, &[]));
    }
    let dtype = array.dtype().str().map(|s| s.to_string()).unwrap_or_else(|_| "?".into());
    let message =
        format!("{what} must be float32 or float64, got dtype {dtype}; convert it with .astype(numpy.float32)");
    Err(error(py, "UpdateTypeError", message, &[]))
}

/// What one round did for this client (`privagg.RoundReport`).
#[pyclass(module = "privagg", name = "RoundReport", frozen, get_all, eq)]
#[derive(Clone, Debug, PartialEq)]
pub struct PyRoundReport {
    /// The round number.
    round: u64,
    /// How many clients' inputs the released sum covers.
    inputs: u32,
    /// L2 norm of the update before clipping (DP on).
    pre_clip_norm: f64,
    /// Bytes this client sent during the round.
    bytes_sent: u64,
    /// Bytes it received.
    bytes_received: u64,
    /// The ε this client accounts for everything it sent this server, at its budget's
    /// δ; `None` if no round with DP was charged.
    epsilon: Option<f64>,
}

impl From<RoundReport> for PyRoundReport {
    fn from(r: RoundReport) -> Self {
        Self {
            round: r.round,
            inputs: r.inputs,
            pre_clip_norm: r.pre_clip_norm,
            bytes_sent: r.bytes_sent,
            bytes_received: r.bytes_received,
            epsilon: r.epsilon,
        }
    }
}

#[pymethods]
impl PyRoundReport {
    fn __repr__(&self) -> String {
        format!(
            "RoundReport(round={}, inputs={}, pre_clip_norm={}, bytes_sent={}, bytes_received={}, epsilon={:?})",
            self.round, self.inputs, self.pre_clip_norm, self.bytes_sent, self.bytes_received, self.epsilon
        )
    }
}

/// A connection to a privagg aggregation server, admitted and ready for rounds.
///
/// `Client(server, server_cert, *, token_file=None, cert=None, key=None, client_ca=None,
/// allow_no_dp=False, min_noise_multiplier=DEFAULT_MIN_NOISE_MULTIPLIER,
/// max_epsilon=DEFAULT_MAX_EPSILON, max_participations=None, threat="malicious",
/// corrupt_fraction=None, server_name="localhost", state_dir=None, remember=True,
/// connect_timeout=10.0, max_attempts_per_round=3)` connects to `server` ("HOST:PORT"),
/// pinning the DER certificate file `server_cert`, and gets admitted. The identity and
/// policy options are those of `privagg client`; the default policy requires DP with at
/// least the default noise multiplier and keeps an ε budget per server. Blocking calls
/// release the GIL; Ctrl-C stops one and closes the client. Raises `OSError` for an
/// unreadable `server_cert`, `ValueError` for bad options, and `privagg.Unreachable`,
/// `Refused`, `HandshakeError`, `TlsError` or `IdentityError`. Full contract:
/// `privagg/_native.pyi`.
#[pyclass(module = "privagg", name = "Client", frozen)]
pub struct PyClient {
    /// The SDK client; `None` once closed (or stopped by an interrupt).
    inner: Mutex<Option<Client>>,
    /// Set by `_cancel`: the call in progress stops and the client closes.
    cancel: AtomicBool,
    /// The server's address, for `repr`.
    server: SocketAddr,
}

/// The outcome of a call made without the GIL, turned into Python once it is back.
enum Outcome<T> {
    Done(T),
    Failed(SdkError),
    Stopped(Stop),
    Closed,
}

impl<T> Outcome<T> {
    fn into_py(self, py: Python<'_>) -> PyResult<T> {
        match self {
            Self::Done(v) => Ok(v),
            Self::Failed(e) => Err(sdk_error(py, e)),
            Self::Stopped(Stop::Signal(e)) => Err(e),
            Self::Stopped(Stop::Cancelled) => {
                Err(error(py, "Cancelled", "the call was cancelled; the client is closed".into(), &[]))
            }
            Self::Stopped(Stop::Crashed) => Err(PyRuntimeError::new_err(
                "privagg's client task ended without an answer (a bug in privagg); the client is closed",
            )),
            Self::Closed => Err(error(py, "ClientClosed", "the client is closed".into(), &[])),
        }
    }
}

impl PyClient {
    fn lock(&self) -> MutexGuard<'_, Option<Client>> {
        // A panic while the lock was held leaves at worst a client mid-round, which the
        // next call's round handles like any other; the data is not torn.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `call` on the connected client, as a task on the runtime, without the GIL
    /// (see [`wait_for`]); `train` answers the task's training requests. The task hands
    /// the client back when it is done; an interrupt or a cancellation closes it.
    fn with_client<T, F>(
        &self,
        py: Python<'_>,
        call: impl FnOnce(Client, Trainer<(Client, Result<T, SdkError>)>) -> F + Send,
        train: impl FnMut(Python<'_>, Array1<f32>) -> TrainResult + Send,
    ) -> PyResult<T>
    where
        T: Send + 'static,
        F: Future<Output = (Client, Result<T, SdkError>)> + Send + 'static,
    {
        let rt = runtime()?;
        py.detach(|| {
            // Held for the whole call: a second call waits, and `closed` reads "busy".
            let mut guard = self.lock();
            let Some(client) = guard.take() else { return Outcome::Closed };
            match wait_for(rt, &self.cancel, |trainer| call(client, trainer), train) {
                Ok((client, result)) => {
                    // A cancellation that came as the call finished still closes the client,
                    // as does an interrupted `train` (its connection is closed already).
                    let interrupted = matches!(result, Err(SdkError::Interrupted));
                    if self.cancel.load(Ordering::Acquire) || interrupted {
                        let _enter = rt.enter();
                        drop(client);
                    } else {
                        *guard = Some(client);
                    }
                    result.map_or_else(Outcome::Failed, Outcome::Done)
                }
                Err(stop) => Outcome::Stopped(stop),
            }
        })
        .into_py(py)
    }
}

/// Parses `host:port` (a name is resolved; the first address wins).
fn resolve(server: &str) -> PyResult<SocketAddr> {
    let mut addrs = server
        .to_socket_addrs()
        .map_err(|e| PyValueError::new_err(format!("server {server:?} is not a usable HOST:PORT address: {e}")))?;
    addrs.next().ok_or_else(|| PyValueError::new_err(format!("server {server:?} resolves to no address")))
}

#[pymethods]
impl PyClient {
    /// Connects to `server` and gets admitted (see the class documentation).
    #[new]
    #[pyo3(signature = (
        server, server_cert, *, token_file=None, cert=None, key=None, client_ca=None,
        allow_no_dp=false, min_noise_multiplier=DEFAULT_MIN_NOISE_MULTIPLIER,
        max_epsilon=DEFAULT_MAX_EPSILON, max_participations=None, threat="malicious",
        corrupt_fraction=None, server_name="localhost", state_dir=None, remember=true,
        connect_timeout=10.0, max_attempts_per_round=3
    ))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn new(
        py: Python<'_>,
        server: &str,
        server_cert: PathBuf,
        token_file: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
        allow_no_dp: bool,
        min_noise_multiplier: f64,
        max_epsilon: f64,
        max_participations: Option<u64>,
        threat: &str,
        corrupt_fraction: Option<f64>,
        server_name: &str,
        state_dir: Option<PathBuf>,
        remember: bool,
        connect_timeout: f64,
        max_attempts_per_round: u32,
    ) -> PyResult<Self> {
        let address = resolve(server)?;
        // An unreadable certificate file raises the matching OSError (FileNotFoundError, …).
        let pinned = std::fs::read(&server_cert).map_err(|e| {
            PyErr::from(std::io::Error::new(e.kind(), format!("server_cert {}: {e}", server_cert.display())))
        })?;
        let mut options = ClientOptions::new(address, pinned);
        let mut files = IdentityFiles::new();
        files.token_file = token_file;
        files.cert = cert;
        files.key = key;
        files.client_ca = client_ca;
        options.load_identity(&files).map_err(|e| sdk_error(py, e))?;
        options.server_name = server_name.to_owned();
        options.privacy = PrivacyPolicy {
            allow_no_dp,
            min_noise_multiplier,
            // math.inf: no budget; anything else (NaN included) is checked below.
            max_epsilon: (max_epsilon != f64::INFINITY).then_some(max_epsilon),
            max_participations,
            ..PrivacyPolicy::default()
        };
        options.policy.server = match threat {
            "malicious" => AdversaryClass::SemiMaliciousServer,
            "curious" => AdversaryClass::CuriousServer,
            other => {
                return Err(PyValueError::new_err(format!(
                    "threat must be \"malicious\" or \"curious\", got {other:?}"
                )));
            }
        };
        if let Some(fraction) = corrupt_fraction {
            options.policy.corrupt_fraction = fraction;
        }
        options.validate().map_err(|e| PyValueError::new_err(e.to_string()))?;
        if !remember {
            options.state_dir = None;
        } else if state_dir.is_some() {
            options.state_dir = state_dir;
        }
        if !(connect_timeout > 0.0 && connect_timeout.is_finite()) {
            return Err(PyValueError::new_err("connect_timeout must be a positive number of seconds"));
        }
        options.connect_deadline = Duration::from_secs_f64(connect_timeout);
        options.max_attempts_per_round = max_attempts_per_round.max(1);
        let rt = runtime()?;
        let cancel = AtomicBool::new(false);
        let connected = py.detach(|| match wait_for(rt, &cancel, |_| Client::connect(options), no_training) {
            Ok(Ok(client)) => Outcome::Done(client),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(stop) => Outcome::Stopped(stop),
        });
        let client = connected.into_py(py)?;
        Ok(Self { inner: Mutex::new(Some(client)), cancel, server: address })
    }

    /// Takes part in the next round with `update` (1-D float32 or float64, finite, the
    /// model's length; copied once) and `weight` (> 0; counts only without DP), and
    /// returns its `RoundReport` once the round completed with this input in the sum.
    /// Raises `privagg.InvalidUpdate`/`UpdateTypeError` before sending anything for a bad
    /// update, `DimensionMismatch`, `PolicyRefused`, `RoundAborted`/`RoundError`,
    /// `SessionEnded`, `ConnectionLost` or `ClientClosed`.
    #[pyo3(signature = (update, weight=1.0))]
    fn submit(&self, py: Python<'_>, update: &Bound<'_, PyAny>, weight: f32) -> PyResult<PyRoundReport> {
        let update = read_update(py, "update", update)?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(error(py, "InvalidUpdate", format!("weight must be a finite number > 0, got {weight}"), &[]));
        }
        let call = move |mut client: Client, _| async move {
            let result = client.submit(ArrayView1::from(&update), weight).await.map(PyRoundReport::from);
            (client, result)
        };
        self.with_client(py, call, no_training)
    }

    /// Takes part in every round until the session ends and returns the reports of the
    /// rounds this client's input was summed in. `train(model)` gets the current global
    /// model (a fresh float32 array) and returns the update, or `(update, weight)`; it
    /// runs on the calling thread. Rounds that abort or lose the connection are skipped;
    /// an exception `train` raises leaves the round and is re-raised unchanged.
    fn run(&self, py: Python<'_>, train: Py<PyAny>) -> PyResult<Vec<PyRoundReport>> {
        let call = |mut client: Client, trainer: Trainer<_>| async move {
            let interrupt = client.interrupt_handle();
            let step = move |model: ArrayView1<'_, f32>| {
                let result = trainer.train(model);
                if matches!(result, Err(TrainFailure::Interrupted)) {
                    interrupt.interrupt();
                }
                result
            };
            let result = client.run_weighted(step).await;
            (client, result.map(|reports| reports.into_iter().map(PyRoundReport::from).collect()))
        };
        // The exception `train` raised (or its bad result's), re-raised as it was.
        let mut raised = None;
        let result = self.with_client(py, call, |py, model| {
            let out = train.call1(py, (model.into_pyarray(py),)).and_then(|out| train_result(py, out.bind(py)));
            out.map_err(|e| {
                let failure = if e.is_instance_of::<PyKeyboardInterrupt>(py) {
                    TrainFailure::Interrupted
                } else {
                    TrainFailure::Raised(e.to_string())
                };
                raised = Some(e);
                failure
            })
        });
        match (result, raised) {
            (Err(_), Some(original)) => Err(original),
            (result, _) => result,
        }
    }

    /// Closes the connection politely (what was sent is delivered first). Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let rt = runtime()?;
        py.detach(|| {
            let client = self.lock().take();
            if let Some(client) = client {
                // Closing has its own short deadline; an interrupt only cuts it shorter.
                let never = AtomicBool::new(false);
                let _ = wait_for(rt, &never, |_| client.close(), no_training);
            }
        });
        Ok(())
    }

    /// Whether the client is closed (by `close`, an interrupt or a cancellation).
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        // Waiting for the lock while a round runs would hold the GIL: check without it.
        py.detach(|| self.inner.try_lock().map(|c| c.is_none()).unwrap_or(false))
    }

    /// Stops the call in progress (it raises `privagg.Cancelled`) and closes the client;
    /// with no call in progress, closes it at once. Safe from any thread; used by
    /// `AsyncClient` when its task is cancelled.
    fn _cancel(&self, py: Python<'_>) {
        self.cancel.store(true, Ordering::Release);
        // No call in progress (it holds the lock): close now.
        py.detach(|| {
            let idle = self.inner.try_lock().ok().and_then(|mut guard| guard.take());
            if let (Some(client), Ok(rt)) = (idle, runtime()) {
                let _enter = rt.enter();
                drop(client);
            }
        });
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.close(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!("privagg.Client(server={:?})", self.server.to_string())
    }
}

impl Drop for PyClient {
    /// A client garbage-collected without `close` still closes its connection at once.
    fn drop(&mut self) {
        let client = self.inner.get_mut().map(Option::take).unwrap_or_else(|p| p.into_inner().take());
        if let (Some(client), Ok(rt)) = (client, runtime()) {
            let _enter = rt.enter();
            drop(client);
        }
    }
}

/// What `train` returned: an update, or `(update, weight)`.
fn train_result(py: Python<'_>, out: &Bound<'_, PyAny>) -> PyResult<(Array1<f32>, f32)> {
    if let Ok(pair) = out.cast::<PyTuple>() {
        if pair.len() != 2 {
            let message = format!("train returned a tuple of {} items; return update or (update, weight)", pair.len());
            return Err(error(py, "UpdateTypeError", message, &[]));
        }
        let update = read_update(py, "the update train returned", &pair.get_item(0)?)?;
        let weight: f32 = pair
            .get_item(1)?
            .extract()
            .map_err(|_| error(py, "UpdateTypeError", "the weight train returned must be a number".into(), &[]))?;
        if !(weight.is_finite() && weight > 0.0) {
            return Err(error(
                py,
                "InvalidUpdate",
                format!("train returned weight {weight}; it must be finite and > 0"),
                &[],
            ));
        }
        return Ok((Array1::from(update), weight));
    }
    Ok((Array1::from(read_update(py, "the update train returned", out)?), 1.0))
}

/// Sends the SDK's log (reconnects, skipped rounds, protocol progress) to standard error,
/// filtered by `filter` (`tracing` env-filter syntax, e.g. "info" or
/// "privagg_client=debug"). Returns False if a logger was already installed. Nothing
/// secret is logged.
#[pyfunction]
#[pyo3(signature = (filter="info"))]
fn enable_logging(filter: &str) -> PyResult<bool> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| PyValueError::new_err(format!("bad log filter {filter:?}: {e}")))?;
    Ok(tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .is_ok())
}

/// The native module: `Client`, `RoundReport`, `enable_logging` and the SDK's policy
/// defaults.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(enable_logging, m)?)?;
    m.add_class::<PyClient>()?;
    m.add_class::<PyRoundReport>()?;
    m.add("DEFAULT_MIN_NOISE_MULTIPLIER", DEFAULT_MIN_NOISE_MULTIPLIER)?;
    m.add("DEFAULT_MAX_EPSILON", DEFAULT_MAX_EPSILON)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
