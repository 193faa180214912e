//! `privagg client --train COMMAND`: the user's training command, run once per round on
//! the round's model, outside the protocol (before the client advertises its keys).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use ndarray::Array1;
use privagg_client::RoundContext;
use privagg_server::storage::{npy_bytes, write_atomically};

/// Runs the training command of `--train` in a private scratch directory.
pub struct Trainer {
    command: String,
    weight: f32,
    scratch: tempfile::TempDir,
    /// Set on Ctrl-C: the running command is stopped and training fails at once.
    interrupted: Arc<AtomicBool>,
}

/// How often a running training command is checked on (exit, Ctrl-C).
const POLL: Duration = Duration::from_millis(50);

impl Trainer {
    /// A trainer that runs `command` (with `{model}`, `{update}` and `{round}`
    /// placeholders) and weights its updates by `weight` (DP off).
    pub fn new(command: String, weight: f32) -> Result<Self> {
        if !command.contains("{update}") {
            anyhow::bail!("--train: the command must contain {{update}}, the path where it writes the update");
        }
        let scratch = tempfile::Builder::new()
            .prefix("privagg-train-")
            .tempdir()
            .context("--train: cannot create a scratch directory")?;
        Ok(Self { command, weight, scratch, interrupted: Arc::default() })
    }

    /// A flag that, once set, stops the running training command (its whole process
    /// group) and makes training fail: what Ctrl-C sets. The command runs in a
    /// process group of its own, so this is the only way a signal reaches it.
    pub fn interrupt_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupted)
    }

    /// One round's training: writes the model, runs the command, reads the update it
    /// wrote. The error names what failed, for the round's record and the user.
    pub fn train(&self, round: RoundContext<'_>) -> Result<(Array1<f32>, f32), String> {
        self.run(round).map_err(|e| format!("{e:#}"))
    }

    fn run(&self, round: RoundContext<'_>) -> Result<(Array1<f32>, f32)> {
        let model_path = self.scratch.path().join(format!("model-{}.npy", round.round));
        let update_path = self.scratch.path().join(format!("update-{}.npy", round.round));
        let model = npy_bytes(&round.model.to_vec())?;
        write_atomically(&model_path, &model)?;
        let command = self
            .command
            .replace("{model}", &quote(&model_path))
            .replace("{update}", &quote(&update_path))
            .replace("{round}", &round.round.to_string());
        tracing::info!(round = round.round, %command, "training");
        let child = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .context("--train: cannot run `sh`")?;
        let status = self.wait(child, round.round)?;
        if !status.success() {
            anyhow::bail!("--train: the training command failed for round {} ({status})", round.round);
        }
        let update = crate::read_update(&update_path)
            .with_context(|| format!("--train: the command did not leave a usable update for round {}", round.round))?;
        let _ = std::fs::remove_file(&model_path);
        let _ = std::fs::remove_file(&update_path);
        Ok((Array1::from(update), self.weight))
    }
}

impl Trainer {
    /// Waits for the training command, stopping its process group if interrupted.
    fn wait(&self, mut child: Child, round: u64) -> Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = child.try_wait().context("--train: cannot wait for the command")? {
                return Ok(status);
            }
            if self.interrupted.load(Ordering::Acquire) {
                // The group is the command's (process_group(0)): `sh` and what it started.
                let group = format!("-{}", child.id());
                let _ = Command::new("kill").args(["-s", "TERM", "--", &group]).status();
                let _ = child.kill();
                let _ = child.wait();
                anyhow::bail!("--train: interrupted while training for round {round}; the command was stopped");
            }
            std::thread::sleep(POLL);
        }
    }
}

/// A path as one single-quoted shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
