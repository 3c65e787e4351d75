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

    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn epoch_dir(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:03}"))
    }

    /// The newest checkpoint's state: `state.json`, or when that is unreadable (renamed into place
    /// but never written out before a crash), the newest epoch folder's own copy.
    pub fn load_state(&self) -> Result<Option<CheckpointState>> {
        let path = self.state_path();
        if !path.exists() {
            return Ok(None);
        }
        match read_state(&path) {
            Ok(state) => Ok(Some(state)),
            Err(error) => match self.epoch_states().into_iter().next() {
                Some(state) => {
                    eprintln!("{error:#}; resuming from the newest epoch folder instead (epoch {})", state.epochs_done);
                    Ok(Some(state))
                }
                None => Err(error),
            },
        }
    }

    /// Each epoch folder's own state, newest first (the folders of the last two epochs are kept).
    fn epoch_states(&self) -> Vec<CheckpointState> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut states: Vec<CheckpointState> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
            .filter_map(|e| read_state(&e.path().join("state.json")).ok())
            .collect();
        states.sort_by_key(|s| std::cmp::Reverse(s.epochs_done));
        states
    }

    /// Model and optimizer of the last complete epoch, with that epoch's state. When its files
    /// cannot be read (they never reached the disk before a power cut), the epoch before it,
    /// whose folder is kept for that.
    pub fn load(
        &self,
        state: CheckpointState,
        net: AestheticNet,
        optimizer: ModuleOptimizer,
    ) -> Result<(CheckpointState, AestheticNet, ModuleOptimizer)> {
        let newest = state.epochs_done;
        let older = self.epoch_states().into_iter().filter(|s| s.epochs_done < newest);
        let mut failures = Vec::new();
        for candidate in std::iter::once(state).chain(older) {
            match self.load_epoch(candidate.epochs_done, net.clone(), optimizer.clone()) {
                Ok((net, optimizer)) => {
                    if !failures.is_empty() {
                        eprintln!("{}; resuming after epoch {} instead", failures.join("; "), candidate.epochs_done);
                    }
                    return Ok((candidate, net, optimizer));
                }
                Err(error) => failures.push(format!("epoch {}'s checkpoint cannot be read ({error:#})", candidate.epochs_done)),
            }
        }
        anyhow::bail!("no checkpoint can be resumed: {}", failures.join("; "))
    }

    /// Model and optimizer as `epoch` left them.
    fn load_epoch(&self, epoch: usize, net: AestheticNet, optimizer: ModuleOptimizer) -> Result<(AestheticNet, ModuleOptimizer)> {
        let dir = self.epoch_dir(epoch);
        let net = net.try_load_file(dir.join("model.bpk")).map_err(|e| anyhow::anyhow!("checkpoint model: {e:?}"))?;
        let optimizer = optimizer.load(dir.join("optimizer.bpk")).map_err(|e| anyhow::anyhow!("checkpoint optimizer: {e:?}"))?;
        Ok((net, optimizer))
    }

    /// Write the epoch's files (with a copy of the state) and flush them to the disk, then switch
    /// `state.json` to them with an atomic rename: a kill or a power cut at any moment leaves the
    /// previous complete epoch loadable.
    pub fn save(&self, state: &CheckpointState, net: &AestheticNet, optimizer: &ModuleOptimizer) -> Result<()> {
        let dir = self.epoch_dir(state.epochs_done);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        net.clone().save_file(dir.join("model.bpk")).map_err(|e| anyhow::anyhow!("saving the model: {e:?}"))?;
        optimizer.save(dir.join("optimizer.bpk")).map_err(|e| anyhow::anyhow!("saving the optimizer: {e:?}"))?;
        let state_json = serde_json::to_vec_pretty(state)?;
        std::fs::write(dir.join("state.json"), &state_json)?;
        for file in ["model.bpk", "optimizer.bpk", "state.json"] {
            sync(&dir.join(file))?;
        }
        sync(&dir)?;
        let temporary = self.dir.join("state.json.tmp");
        std::fs::write(&temporary, &state_json)?;
        sync(&temporary)?;
        std::fs::rename(&temporary, self.state_path())?;
        sync(&self.dir)?;
        // Older epochs are no longer needed (the previous one stays, in case this one's files are lost).
        if state.epochs_done >= 2 {
            let _ = std::fs::remove_dir_all(self.epoch_dir(state.epochs_done - 2));
        }
        Ok(())
    }
}

fn read_state(path: &Path) -> Result<CheckpointState> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("corrupt {}", path.display()))
}

/// Flush a file's (or a folder's entries') data to the disk.
fn sync(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).with_context(|| format!("cannot flush {} to disk", path.display()))
}
