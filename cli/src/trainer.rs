//! `privagg client --train COMMAND`: the user's training command, run once per round on
//! the round's model, outside the protocol (before the client advertises its keys).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use ndarray::Array1;
use privagg_client::RoundContext;
use privagg_server::storage::{npy_bytes, write_atomically};

/// Runs the training command of `--train` in a private scratch directory.
pub struct Trainer {
    command: String,
    weight: f32,
    scratch: tempfile::TempDir,
}

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
        Ok(Self { command, weight, scratch })
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
        let status = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .stdin(Stdio::null())
            .status()
            .context("--train: cannot run `sh`")?;
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

/// A path as one single-quoted shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
