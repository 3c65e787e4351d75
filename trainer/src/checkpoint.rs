//! Surviving interruption: the plateau schedule ("LR divided by 10 when the loss stops
//! decreasing") and a checkpoint after every epoch, switched in atomically, so `--resume` after a
//! crash or `kill -9` loses no finished epoch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use loupe::model::AestheticNet;
use serde::{Deserialize, Serialize};

use crate::train::TrainConfig;

/// What a finished epoch leaves behind.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub images: usize,
    pub seconds: f64,
}

/// "LR divided by 10 when the training loss stops decreasing" — burn has no plateau scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    pub lr: f64,
    pub best_loss: f64,
    pub epochs_without_improvement: usize,
    pub patience: usize,
}

impl Plateau {
    pub fn new(lr: f64, patience: usize) -> Self {
        Self { lr, best_loss: f64::INFINITY, epochs_without_improvement: 0, patience: patience.max(1) }
    }

    /// Record an epoch's training loss; returns the learning rate for the next epoch.
    pub fn step(&mut self, loss: f64) -> f64 {
        // "Decreasing" means by more than noise: 0.1% relative.
        if loss < self.best_loss * (1.0 - 1e-3) {
            self.best_loss = loss;
            self.epochs_without_improvement = 0;
        } else {
            self.epochs_without_improvement += 1;
            if self.epochs_without_improvement >= self.patience {
                self.lr /= 10.0;
                self.epochs_without_improvement = 0;
            }
        }
        self.lr
    }
}

/// `<out>/checkpoint/state.json`: the last COMPLETE epoch and where its files are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointState {
    pub config: TrainConfig,
    pub epochs_done: usize,
    pub plateau: Plateau,
    pub history: Vec<EpochRecord>,
    pub failed_images: BTreeMap<u64, String>,
}

pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn new(out: &Path) -> Self {
        Self { dir: out.join("checkpoint") }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn epoch_dir(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:03}"))
    }

    pub fn load_state(&self) -> Result<Option<CheckpointState>> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))?))
    }

    /// Model and optimizer of the last complete epoch.
    pub fn load(&self, state: &CheckpointState, net: AestheticNet, optimizer: ModuleOptimizer) -> Result<(AestheticNet, ModuleOptimizer)> {
        let dir = self.epoch_dir(state.epochs_done);
        let net = net.try_load_file(dir.join("model.bpk")).map_err(|e| anyhow::anyhow!("checkpoint model: {e:?}"))?;
        let optimizer = optimizer.load(dir.join("optimizer.bpk")).map_err(|e| anyhow::anyhow!("checkpoint optimizer: {e:?}"))?;
        Ok((net, optimizer))
    }

    /// Write the epoch's files first, then switch `state.json` to them with an atomic rename: a
    /// kill at any moment leaves the previous complete epoch loadable.
    pub fn save(&self, state: &CheckpointState, net: &AestheticNet, optimizer: &ModuleOptimizer) -> Result<()> {
        let dir = self.epoch_dir(state.epochs_done);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        net.clone().save_file(dir.join("model.bpk")).map_err(|e| anyhow::anyhow!("saving the model: {e:?}"))?;
        optimizer.save(dir.join("optimizer.bpk")).map_err(|e| anyhow::anyhow!("saving the optimizer: {e:?}"))?;
        let temporary = self.dir.join("state.json.tmp");
        std::fs::write(&temporary, serde_json::to_vec_pretty(state)?)?;
        std::fs::rename(&temporary, self.state_path())?;
        // Older epochs are no longer needed.
        if state.epochs_done >= 2 {
            let _ = std::fs::remove_dir_all(self.epoch_dir(state.epochs_done - 2));
        }
        Ok(())
    }
}
