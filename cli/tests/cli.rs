//! The `privagg` command as users run it: separate processes over QUIC on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ndarray::{Array1, Array2};
use ndarray_npy::write_npy;

fn privagg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_privagg"))
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A child process whose output goes to files (a pipe nobody reads could fill up and
/// stall it).
struct Child {
    process: std::process::Child,
    out: std::path::PathBuf,
    err: std::path::PathBuf,
}

impl Drop for Child {
    /// A failed test must not leave its processes running.
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn spawn(mut command: Command, dir: &Path, name: &str) -> Child {
    let (out, err) = (dir.join(format!("{name}.out")), dir.join(format!("{name}.err")));
    let process = command
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    Child { process, out, err }
}

/// Waits for a child, killing it after `limit` (a hung process fails the test).
fn wait(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.process.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.process.kill();
            let mut logs = String::new();
            for entry in std::fs::read_dir(child.err.parent().unwrap()).unwrap().flatten() {
                if entry.path().extension().is_some_and(|e| e == "err") {
                    logs +=
                        &format!("--- {}\n{}", entry.path().display(), std::fs::read_to_string(entry.path()).unwrap());
                }
            }
            panic!("{} still running after {limit:?}; logs:\n{logs}", child.err.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: std::fs::read(&child.out).unwrap(), stderr: std::fs::read(&child.err).unwrap() }
}

#[test]
fn privacy_prints_epsilon_as_json() {
    let out = privagg()
        .args([
            "privacy",
            "--noise-multiplier",
            "1.1",
            "--sampling-rate",
            "0.01",
            "--rounds",
            "1000",
            "--delta",
            "1e-5",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let expected = privagg_dp::accountant::epsilon_gaussian(1.1, 0.01, 1000, 1e-5).unwrap();
    assert!((v["epsilon"].as_f64().unwrap() - expected).abs() < 1e-12);
    let text = privagg()
        .args(["privacy", "--noise-multiplier", "1", "--sampling-rate", "1", "--rounds", "1", "--delta", "1e-5"])
        .output()
        .unwrap();
    assert!(stdout(&text).contains("analytic Gaussian"), "{}", stdout(&text));
}

#[test]
fn params_prints_k_and_t_and_the_serve_flags_that_reproduce_them() {
    let out = privagg()
        .args(["params", "--clients", "1000", "--corrupt-fraction", "0.05", "--dropout-fraction", "0.33"])
        .args(["--threat", "curious", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((v["k"].as_u64(), v["t"].as_u64().map(|t| t <= 24)), (Some(72), Some(true)));
    assert_eq!(v["min_clients"].as_u64(), Some(670));
    assert_eq!(v["serve_flags"], "--clients 1000 --min-clients 670 --corrupt-fraction 0.05 --threat curious");

    // What `params` prints is what `serve` runs: the same flags give the same k and t
    // in `serve`'s plan (`privagg plan` is `serve` without the serving).
    for (clients, extra) in [("10", None), ("40", Some("--min-clients=30"))] {
        let mut params = privagg();
        params.args(["params", "--clients", clients, "--json"]).args(extra);
        let v: serde_json::Value = serde_json::from_str(&stdout(&params.output().unwrap())).unwrap();
        let flags: Vec<String> = v["serve_flags"].as_str().unwrap().split(' ').map(String::from).collect();
        let plan = privagg().args(["plan", "--dim", "4", "--json"]).args(&flags).output().unwrap();
        assert!(plan.status.success(), "{plan:?}");
        let plan: serde_json::Value = serde_json::from_str(&stdout(&plan)).unwrap();
        assert_eq!((&plan["k"], &plan["t"]), (&v["k"], &v["t"]), "{clients} clients: {plan}");
    }

    // Settings no graph is safe for are refused with serve's own reason.
    let bad = privagg()
        .args(["params", "--clients", "100", "--corrupt-fraction", "0.5", "--dropout-fraction", "0.5"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--min-clients 50"), "{bad:?}");
    let zero = privagg().args(["params", "--clients", "10", "--min-clients", "0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&zero.stderr).contains("--min-clients must be in 1..=10"), "{zero:?}");
}

#[test]
fn every_subcommand_explains_itself() {
    for sub in ["serve", "client", "demo", "privacy", "params", "ca", "log"] {
        let out = privagg().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success() && stdout(&out).contains("Usage"), "{sub}");
    }
}

#[test]
fn a_client_refuses_a_file_that_is_not_a_vector_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let matrix = dir.path().join("m.npy");
    write_npy(&matrix, &Array2::<f32>::zeros((2, 3))).unwrap();
    let ints = dir.path().join("i.npy");
    write_npy(&ints, &Array1::<i32>::zeros(3)).unwrap();
    std::fs::write(dir.path().join("cert.der"), b"not even a certificate").unwrap();
    // Each error says what is wrong with the file: its shape, its dtype, or that it is
    // not there.
    for (file, says) in
        [(&matrix, "has 2 dimensions"), (&ints, "expected float32"), (&dir.path().join("missing.npy"), "missing.npy")]
    {
        let out = privagg()
            .args(["client", "--server", "127.0.0.1:9", "--ca"])
            .arg(dir.path().join("cert.der"))
            .arg("--update")
            .arg(file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}

fn write_update(dir: &Path, name: &str, values: Vec<f64>) -> std::path::PathBuf {
    let path = dir.join(name);
    write_npy(&path, &Array1::from(values)).unwrap();
    path
}

#[test]
fn serve_and_clients_as_processes_give_the_mean_and_a_wrong_length_leaves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let dim = 16;
    let init = dir.path().join("init.npy");
    write_npy(&init, &Array1::<f32>::from_elem(dim, 0.25)).unwrap();
    // Clients are admitted, and know each other, by certificates from the enrollment authority.
    let (root, credentials) = credentials(dir.path(), &["client0", "client1", "client2", "wrong"]);
    let mut serve = privagg();
    serve
        .args(["serve", "--listen", &listen, "--dim", "16", "--clients", "4", "--min-clients", "3", "--rounds", "1"])
        .args(["--no-dp", "--server-lr", "1", "--phase-timeout", "120", "--lobby-timeout", "120"])
        .arg("--state")
        .arg(&state)
        .arg("--model-init")
        .arg(&init)
        .arg("--client-ca")
        .arg(&root);
    let (server, cert) = start_server(serve, dir.path(), &state);
    let updates: Vec<Vec<f64>> =
        (0..3).map(|i| (0..dim).map(|j| ((i * dim + j) as f64 * 0.37).sin()).collect()).collect();
    let spawn_client = |file: &Path, name: &str| {
        let mut client = privagg();
        client.args(["client", "--server", &listen, "--ca"]).arg(&cert).arg("--update").arg(file);
        client.arg("--cert").arg(credentials.join(format!("{name}.der")));
        client.arg("--key").arg(credentials.join(format!("{name}.key")));
        client.arg("--client-ca").arg(&root).arg("--allow-no-dp");
        spawn(client, dir.path(), name)
    };
    let clients: Vec<_> = updates
        .iter()
        .enumerate()
        .map(|(i, u)| spawn_client(&write_update(dir.path(), &format!("u{i}.npy"), u.clone()), &format!("client{i}")))
        .collect();
    let wrong = spawn_client(&write_update(dir.path(), "wrong.npy", vec![0.0; dim + 1]), "wrong");
    // The phase deadlines are two minutes: finishing well before that shows the wrong
    // client left at once instead of being waited for.
    let limit = Duration::from_secs(60);
    let wrong = wait(wrong, limit);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("17 values"), "{wrong:?}");
    for c in clients {
        let out = wait(c, limit);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains("3 inputs in the sum"), "{}", stdout(&out));
    }
    let server = wait(server, limit);
    assert!(server.status.success(), "{}", String::from_utf8_lossy(&server.stderr));
    // Its log went to a file: plain text, no terminal colour codes.
    assert!(server.stderr.contains(&b'\n') && !server.stderr.contains(&0x1b), "ANSI codes in a redirected log");
    let model = privagg_server::storage::read_vector(&state.join("model-1.npy")).unwrap();
    for j in 0..dim {
        let mean = updates.iter().map(|u| u[j]).sum::<f64>() / 3.0;
        assert!((f64::from(model[j]) - (0.25 + mean)).abs() < 1e-4, "coordinate {j}");
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("round-1.json")).unwrap()).unwrap();
    assert_eq!(record["included"].as_array().unwrap().len(), 3);
    // Every seat is traced to its holder: the certificate's name and the fingerprint
    // `privagg identity` prints for it.
    let holders = record["clients"].as_object().unwrap();
    assert_eq!(holders.len(), 4, "{record}");
    for name in ["client0", "client1", "client2", "wrong"] {
        let out = privagg().args(["identity", "--cert"]).arg(credentials.join(format!("{name}.der"))).output().unwrap();
        let fingerprint = stdout(&out).trim().to_owned();
        let holder = holders.values().find(|h| h["name"] == name).unwrap_or_else(|| panic!("{name} in {record}"));
        assert_eq!(holder["identity"], fingerprint.as_str());
    }
    assert!(record["dropped"][0]["reason"].as_str().unwrap().starts_with("left"), "{record}");

    // The round is in the log; `log verify` says so, and names a changed model.
    let key = state.join("log.pub");
    let verify = || privagg().args(["log", "verify", "--state"]).arg(&state).arg("--key").arg(&key).output().unwrap();
    let out = verify();
    assert!(out.status.success() && stdout(&out).contains("log OK: 1 rounds"), "{out:?}");
    std::fs::write(state.join("model-1.npy"), privagg_server::storage::npy_bytes(&[0.0; 4]).unwrap()).unwrap();
    let out = verify();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model-1.npy hashes to"), "{out:?}");
}

/// Starts `serve` as a child process and waits until it has written its certificate
/// (it listens by then); returns the process and the certificate's path.
fn start_server(serve: Command, dir: &Path, state: &Path) -> (Child, std::path::PathBuf) {
    let server = spawn(serve, dir, "server");
    let cert = state.join("cert.der");
    let start = Instant::now();
    while !cert.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no certificate written");
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, cert)
}

/// Issues an enrollment authority and credentials for `names` under `dir`; returns the
/// root certificate and the directory of the credentials.
fn credentials(dir: &Path, names: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let (authority, out) = (dir.join("authority"), dir.join("clients"));
    assert!(privagg().args(["ca", "init", "--dir"]).arg(&authority).status().unwrap().success());
    for name in names {
        let mut issue = privagg();
        issue.args(["ca", "issue", "--name", name, "--dir"]).arg(&authority).arg("--out").arg(&out);
        assert!(issue.status().unwrap().success());
    }
    (authority.join("ca.der"), out)
}

/// A `privagg client` of a session without DP, enrolled as `name` (credentials from
/// [`credentials`]) with its memory under `dir`.
fn enrolled_client(listen: &str, cert: &Path, root: &Path, credentials: &Path, dir: &Path, name: &str) -> Command {
    let mut client = privagg();
    client.args(["client", "--server", listen, "--ca"]).arg(cert).arg("--allow-no-dp");
    client.arg("--cert").arg(credentials.join(format!("{name}.der")));
    client.arg("--key").arg(credentials.join(format!("{name}.key")));
    client.arg("--client-ca").arg(root).arg("--state").arg(dir.join(format!("{name}-memory")));
    client
}

#[test]
fn a_five_round_session_driven_by_training_commands_improves_the_model_each_round() {
    // The README's recipe: every client is a `privagg client --train` process that
    // trains with a user command on the model it is given, for every round.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let listen = format!("127.0.0.1:{}", free_port());
    let (dim, clients) = (12, 5);
    let names: Vec<String> = (0..clients).map(|i| format!("client{i}")).collect();
    let (root, credentials) = credentials(dir.path(), &names.iter().map(String::as_str).collect::<Vec<_>>());
    let mut serve = privagg();
    serve
        .args(["serve", "--listen", &listen, "--dim", &dim.to_string(), "--clients", "5", "--rounds", "5"])
        .args(["--no-dp", "--server-lr", "1", "--lobby-timeout", "120", "--train-timeout", "60"])
        .arg("--state")
        .arg(&state)
        .arg("--client-ca")
        .arg(&root);
    let (server, cert) = start_server(serve, dir.path(), &state);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/toy_train.py");
    let processes: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut client = enrolled_client(&listen, &cert, &root, &credentials, dir.path(), name);
            client.arg("--train").arg(format!("python3 '{}' {{model}} {{update}} {i}", script.display()));
            client.arg("--model-out").arg(dir.path().join(format!("{name}-model.npy")));
            spawn(client, dir.path(), name)
        })
        .collect();
    let limit = Duration::from_secs(120);
    for process in processes {
        let out = wait(process, limit);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains("took part in 5 rounds"), "{}", stdout(&out));
    }
    let server = wait(server, limit);
    assert!(server.status.success(), "{}", String::from_utf8_lossy(&server.stderr));
    // The mean of the clients' targets (toy_train.py): each round halves the distance.
    let goal: Vec<f64> = (0..dim)
        .map(|j| (0..clients).map(|i| ((i * dim + j) as f64 * 0.37).sin()).sum::<f64>() / clients as f64)
        .collect();
    let distance = |model: &[f32]| goal.iter().zip(model).map(|(g, &m)| (g - f64::from(m)).powi(2)).sum::<f64>().sqrt();
    let mut last = distance(&vec![0.0; dim]);
    for round in 1..=5 {
        let model = privagg_server::storage::read_vector(&state.join(format!("model-{round}.npy"))).unwrap();
        let now = distance(&model);
        assert!((now - last / 2.0).abs() < 1e-3 * last, "round {round}: {last} -> {now}");
        last = now;
    }
    // --model-out holds the model after the last round, as the server stored it.
    let final_model = privagg_server::storage::read_vector(&state.join("model-5.npy")).unwrap();
    for name in &names {
        let model_out = privagg_server::storage::read_vector(&dir.path().join(format!("{name}-model.npy"))).unwrap();
        assert_eq!(model_out, final_model, "{name}");
    }
}

#[test]
fn a_client_interrupted_while_training_stops_its_command_leaves_at_once_and_costs_the_round_no_attempt() {
    // Rounds of 3, all needed, one attempt allowed and the session stopping on a failed
    // round; every timeout is 10 minutes, so only a client that leaves politely lets
    // this finish. Client 0 is interrupted (SIGINT, as Ctrl-C sends) while its training
    // command runs: the command is stopped, the client closes its connection, the
    // attempt aborts without counting, and the retry with a newcomer completes.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let listen = format!("127.0.0.1:{}", free_port());
    let names = ["client0", "client1", "client2", "client3"];
    let (root, credentials) = credentials(dir.path(), &names);
    let mut serve = privagg();
    serve
        .args(["serve", "--listen", &listen, "--dim", "4", "--clients", "3", "--min-clients", "3", "--rounds", "1"])
        .args(["--no-dp", "--max-round-attempts", "1", "--stop-after-failed-round"])
        .args(["--phase-timeout", "600", "--train-timeout", "600", "--lobby-timeout", "600"])
        .arg("--state")
        .arg(&state)
        .arg("--client-ca")
        .arg(&root);
    let (server, cert) = start_server(serve, dir.path(), &state);
    let client = |name: &str| enrolled_client(&listen, &cert, &root, &credentials, dir.path(), name);
    let started = dir.path().join("training-started");
    let survivor = dir.path().join("survived");
    let mut trainer = client("client0");
    // `sleep` outlives `sh` unless the whole process group is stopped; no update is
    // ever written to {update}.
    trainer.arg("--train").arg(format!(
        "touch '{}'; sleep 600; touch '{}' {{update}}",
        started.display(),
        survivor.display()
    ));
    let trainer = spawn(trainer, dir.path(), "client0");
    let submitters: Vec<_> = (1..3)
        .map(|i| {
            let mut c = client(names[i]);
            c.arg("--update").arg(write_update(dir.path(), &format!("u{i}.npy"), vec![i as f64; 4]));
            spawn(c, dir.path(), names[i])
        })
        .collect();
    let start = Instant::now();
    while !started.exists() {
        let log = std::fs::read_to_string(&trainer.err).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(60), "client 0 never started training: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = trainer.process.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let limit = Duration::from_secs(120);
    let interrupted = wait(trainer, limit);
    assert!(!interrupted.status.success());
    let said = String::from_utf8_lossy(&interrupted.stderr);
    assert!(said.contains("interrupted"), "{said}");
    let mut newcomer = client("client3");
    newcomer.arg("--update").arg(write_update(dir.path(), "u3.npy", vec![3.0; 4]));
    let newcomer = spawn(newcomer, dir.path(), "client3");
    for process in submitters.into_iter().chain([newcomer]) {
        let out = wait(process, limit);
        assert!(out.status.success(), "{out:?}");
    }
    let server = wait(server, limit);
    assert!(server.status.success(), "{}", String::from_utf8_lossy(&server.stderr));
    let model = privagg_server::storage::read_vector(&state.join("model-1.npy")).unwrap();
    assert_eq!(model, vec![2.0f32; 4], "the mean of clients 1, 2 and 3");
    assert!(!survivor.exists(), "the training command kept running after the interrupt");
}

#[test]
fn clients_find_the_server_by_host_name_and_name_what_is_wrong_with_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    let (root, credentials) = credentials(dir.path(), &["a", "b"]);
    let mut serve = privagg();
    serve
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--dim", "4", "--clients", "2", "--rounds", "1"])
        .args(["--no-dp", "--lobby-timeout", "120", "--state"])
        .arg(&state)
        .arg("--client-ca")
        .arg(&root);
    let (server, cert) = start_server(serve, dir.path(), &state);
    let update = write_update(dir.path(), "u.npy", vec![0.5; 4]);
    let client_at = |host: &str, name: &str, pinned: &Path| {
        let mut client = privagg();
        client.args(["client", "--server", host, "--ca"]).arg(pinned);
        client.arg("--update").arg(&update).arg("--allow-no-dp").arg("--client-ca").arg(&root);
        client.arg("--cert").arg(credentials.join(format!("{name}.der")));
        client.arg("--key").arg(credentials.join(format!("{name}.key")));
        client.arg("--state").arg(dir.path().join(format!("{name}-memory")));
        client
    };
    let local = format!("localhost:{port}");
    let client = |name: &str, pinned: &Path| client_at(&local, name, pinned);
    // Another certificate pinned (here the authority's root): a TLS failure that says
    // which option to check, not "unreachable".
    let out = client("a", &root).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS handshake failed") && err.contains("--ca"), "{err}");
    // A PEM file is named as one before anything is sent.
    let pem = dir.path().join("cert.pem");
    std::fs::write(&pem, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    let out = client("a", &pem).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("PEM"), "{out:?}");
    // A host that does not resolve is named with its option.
    let out = client_at("no-such-host.invalid:1", "a", &cert).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server no-such-host.invalid:1"), "{out:?}");
    // `localhost:PORT` reaches the server.
    let (a, b) = (spawn(client("a", &cert), dir.path(), "a"), spawn(client("b", &cert), dir.path(), "b"));
    for out in [wait(a, Duration::from_secs(60)), wait(b, Duration::from_secs(60))] {
        assert!(out.status.success(), "{out:?}");
    }
    assert!(wait(server, Duration::from_secs(60)).status.success());
}

#[test]
fn flags_accept_the_toml_spelling_of_the_mechanism() {
    for spelling in ["discrete-gaussian", "discrete_gaussian"] {
        let args = ["plan", "--dim", "10", "--clients", "5", "--threat", "curious", "--mechanism", spelling, "--json"];
        let out = privagg().args(args).output().unwrap();
        assert!(out.status.success(), "{spelling}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn impossible_values_are_refused_by_name_before_the_state_directory_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let base = ["--dim", "4", "--clients", "5", "--threat", "curious", "--insecure-open-admission"];
    for (flag, value, says) in [
        ("--max-epsilon", "nan", "--max-epsilon"),
        ("--max-epsilon", "0", "--max-epsilon"),
        ("--max-epsilon", "-3", "--max-epsilon"),
        ("--adaptive-clip", "1.5", "--adaptive-clip"),
        ("--noise-multiplier", "-1", "noise_multiplier"),
        ("--clip", "0", "clip"),
        ("--delta", "1.5", "delta"),
        ("--bits", "80", "bits"),
        ("--server-momentum", "1", "--server-momentum"),
        // A negative number is taken as the value (no `=` needed) and refused by its check.
        ("--phase-timeout", "-1", "--phase-timeout"),
        ("--clip", "-2", "clip"),
    ] {
        let state = dir.path().join("state");
        let out = privagg()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(base)
            .args([flag, value])
            .arg("--state")
            .arg(&state)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{flag} {value}: {err}");
        assert!(!state.exists(), "{flag} {value}: a refused configuration left a state directory");
    }
    // A client's budget: NaN is not "no budget", and a negative noise floor is no floor.
    std::fs::write(dir.path().join("cert.der"), b"unused").unwrap();
    for (flag, value, says) in [
        ("--max-epsilon", "nan", "max_epsilon"),
        ("--max-epsilon", "-1", "max_epsilon"),
        ("--min-noise-multiplier", "-1", "min_noise_multiplier"),
        ("--max-participations", "0", "max_participations"),
        ("--corrupt-fraction", "1", "corrupt_fraction"),
    ] {
        let update = write_update(dir.path(), "u.npy", vec![0.0; 4]);
        let out = privagg()
            .args(["client", "--server", "127.0.0.1:9", "--ca"])
            .arg(dir.path().join("cert.der"))
            .arg("--update")
            .arg(update)
            .args([flag, value])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "{flag} {value}: {err}");
    }
}

#[test]
fn min_clients_follows_clients_unless_given() {
    // 80 % of --clients, rounded up: 5 clients plan rounds of at least 4 (the old fixed
    // default of 8 refused any --clients below 8).
    let out =
        privagg().args(["plan", "--dim", "10", "--clients", "5", "--threat", "curious", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let given = ["plan", "--dim", "10", "--clients", "5", "--min-clients", "9", "--threat", "curious"];
    let out = privagg().args(given).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn ca_init_and_issue_write_a_root_and_client_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("authority");
    let out = dir.path().join("clients");
    let init = privagg().args(["ca", "init", "--dir"]).arg(&ca).output().unwrap();
    assert!(init.status.success(), "{init:?}");
    let again = privagg().args(["ca", "init", "--dir"]).arg(&ca).output().unwrap();
    assert!(!again.status.success(), "an authority is never overwritten");
    let issue =
        privagg().args(["ca", "issue", "--name", "bank-3", "--dir"]).arg(&ca).arg("--out").arg(&out).output().unwrap();
    assert!(issue.status.success(), "{issue:?}");
    for file in [ca.join("ca.der"), ca.join("ca.key"), out.join("bank-3.der"), out.join("bank-3.key")] {
        assert!(std::fs::metadata(&file).unwrap().len() > 0, "{}", file.display());
    }
    let bad =
        privagg().args(["ca", "issue", "--name", "../x", "--dir"]).arg(&ca).arg("--out").arg(&out).output().unwrap();
    assert!(!bad.status.success());
}

#[test]
fn plan_prints_the_epsilon_serve_logs_and_both_refuse_sampling_they_do_not_do() {
    let dir = tempfile::tempdir().unwrap();
    let flags = [
        "--dim",
        "4000",
        "--clients",
        "50",
        "--min-clients",
        "40",
        "--rounds",
        "30",
        "--noise-multiplier",
        "1.2",
        "--threat",
        "curious",
        "--max-epsilon",
        "inf",
    ];
    let plan = privagg().arg("plan").args(flags).arg("--json").output().unwrap();
    assert!(plan.status.success(), "{}", String::from_utf8_lossy(&plan.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    let planned = plan["epsilon"].as_f64().unwrap();
    assert_eq!(plan["plan"]["epsilon"].as_f64(), Some(planned));
    assert!(planned > 0.0 && plan["plan"]["zcdp_rho"].as_f64().unwrap() > 0.0);

    // Neither tokens nor a client root: open admission must be asked for.
    let closed = privagg()
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(flags)
        .arg("--state")
        .arg(dir.path().join("state-closed"))
        .output()
        .unwrap();
    assert!(!closed.status.success());
    assert!(String::from_utf8_lossy(&closed.stderr).contains("--insecure-open-admission"));
    let mut serve = privagg();
    serve
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(flags)
        .arg("--insecure-open-admission");
    serve.arg("--state").arg(dir.path().join("state")).env("NO_COLOR", "1");
    let server = spawn(serve, dir.path(), "server");
    let start = Instant::now();
    let logged = loop {
        let log = std::fs::read_to_string(&server.err).unwrap();
        if let Some(line) = log.lines().find(|l| l.contains("DP plan for the session")) {
            let value = line.split("epsilon=").nth(1).unwrap().split_whitespace().next().unwrap();
            break value.trim_end_matches(|c: char| !c.is_ascii_digit()).parse::<f64>().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no plan logged: {log}");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(server);
    assert_eq!(logged, planned);

    for command in ["plan", "serve"] {
        let refused = privagg().arg(command).args(flags).args(["--sampling-rate", "0.01"]).output().unwrap();
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("--sampling-rate 0.01"), "{command}");
    }

    // With random check-ins the headline stays the same (against the server) and a
    // second, amplified figure is given; a population too small to fill rounds is refused.
    let checked = |clients: &str, min_clients: &str| {
        let mut flags = flags.to_vec();
        (flags[3], flags[5]) = (clients, min_clients);
        privagg().arg("plan").args(flags).args(["--check-ins", "--sampling-rate", "0.02", "--json"]).output().unwrap()
    };
    let small = checked("100000", "1800");
    assert!(!small.status.success());
    assert!(String::from_utf8_lossy(&small.stderr).contains("check-ins"), "{small:?}");
    let out = checked("100000", "1600");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (headline, sampled) = (v["epsilon"].as_f64().unwrap(), v["plan"]["check_ins"]["epsilon"].as_f64().unwrap());
    assert!(sampled < headline / 10.0, "{sampled} vs {headline}");
    assert!(v["plan"]["check_ins"]["delta"].as_f64().unwrap() >= 1e-5);
}
