//! Which shard of a batch a photo belongs to: a stable hash of its key, so every job array
//! engine (and every rerun, on any machine, in any Loupe version) splits a catalogue the same way.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    // Private: only `new` and `ALL` make shards, so `count` is never 0 (`of_key` divides by it).
    index: u64,
    count: u64,
}

impl Shard {
    /// The whole catalogue as one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: u64, count: u64) -> Result<Self> {
        if count == 0 {
            bail!("the shard count must be at least 1");
        }
        if index >= count {
            bail!("shard index {index} is out of range for {count} shards (indices are 0..{count})");
        }
        Ok(Self { index, count })
    }

    /// The shard a key belongs to: the first 8 bytes of SHA-256 of the key's UTF-8 bytes, read as
    /// a big-endian u64, modulo the shard count. Fixed for good: changing it would move finished
    /// keys between shards. (Python: `int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % n`.)
    fn of_key(key: &str, count: u64) -> u64 {
        let digest = Sha256::digest(key.as_bytes());
        let first = u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"));
        first % count
    }

    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn contains(&self, key: &str) -> bool {
        Self::of_key(key, self.count) == self.index
    }

    /// The file-name tag of this shard's parts: `00003-of-00010`.
    pub fn tag(&self) -> String {
        format!("{:05}-of-{:05}", self.index, self.count)
    }

    /// `K/N` from `--shard`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || format!("'{text}' is not a shard: use K/N, e.g. 3/10 (K counts from 0)");
        let (index, count) = text.split_once('/').with_context(bad)?;
        let index = index.trim().parse().with_context(bad)?;
        let count = count.trim().parse().with_context(bad)?;
        Self::new(index, count)
    }

    /// The shard a job array engine gave this task, from its environment (read through `var`):
    /// Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`), Slurm arrays (`SLURM_ARRAY_TASK_ID`,
    /// `SLURM_ARRAY_TASK_COUNT`, `SLURM_ARRAY_TASK_MIN`), AWS Batch array jobs
    /// (`AWS_BATCH_JOB_ARRAY_INDEX`) and Cloud Run jobs (`CLOUD_RUN_TASK_INDEX`,
    /// `CLOUD_RUN_TASK_COUNT`). Engines that do not say how many tasks there are need `shards`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, shards: Option<u64>) -> Result<Self> {
        let number = |name: &str| -> Result<Option<u64>> {
            var(name).map(|v| v.trim().parse::<u64>().with_context(|| format!("{name}={v:?} is not a number"))).transpose()
        };
        let count_or = |engine: &str, given: Option<u64>| -> Result<u64> {
            shards.or(given).with_context(|| format!("{engine} does not say how many tasks there are: pass --shards N"))
        };
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            return Self::new(index, count_or("a Kubernetes Indexed Job", None)?);
        }
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            // Arrays may start anywhere (`--array=1-10`): the shard counts from the first task.
            let first = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let index = id.checked_sub(first).context("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
            return Self::new(index, count_or("Slurm", number("SLURM_ARRAY_TASK_COUNT")?)?);
        }
        if let Some(index) = number("AWS_BATCH_JOB_ARRAY_INDEX")? {
            return Self::new(index, count_or("AWS Batch", None)?);
        }
        if let Some(index) = number("CLOUD_RUN_TASK_INDEX")? {
            return Self::new(index, count_or("Cloud Run", number("CLOUD_RUN_TASK_COUNT")?)?);
        }
        bail!("--shard-from-env: none of JOB_COMPLETION_INDEX, SLURM_ARRAY_TASK_ID, AWS_BATCH_JOB_ARRAY_INDEX, CLOUD_RUN_TASK_INDEX is set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed outside Rust, with Python's hashlib (see `Shard::of_key`).
    #[test]
    fn the_shard_hash_matches_its_documented_definition() {
        let expected = [
            ("photos/a.jpg", 10, 1),
            ("photos/b.jpg", 10, 2),
            ("/data/catalogue/000001.jpg", 7, 0),
            ("s3://bucket/x/y.png", 1000, 277),
            ("é.jpg", 3, 2),
        ];
        for (key, count, shard) in expected {
            assert_eq!(Shard::of_key(key, count), shard, "{key} mod {count}");
        }
    }

    #[test]
    fn every_key_falls_in_exactly_one_shard() {
        let shards: Vec<Shard> = (0..5).map(|i| Shard::new(i, 5).unwrap()).collect();
        for i in 0..500 {
            let key = format!("img/{i}.jpg");
            assert_eq!(shards.iter().filter(|s| s.contains(&key)).count(), 1, "{key}");
        }
    }

    #[test]
    fn shards_parse_from_flags_and_refuse_nonsense() {
        assert_eq!(Shard::parse("3/10").unwrap(), Shard { index: 3, count: 10 });
        for bad in ["10/10", "1/0", "x/2", "3", "-1/4"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn each_job_array_engine_names_its_shard() {
        let shard = |pairs: &[(&str, &str)], shards| Shard::from_env(env(pairs), shards);
        assert_eq!(shard(&[("JOB_COMPLETION_INDEX", "2")], Some(4)).unwrap(), Shard { index: 2, count: 4 });
        assert!(shard(&[("JOB_COMPLETION_INDEX", "2")], None).unwrap_err().to_string().contains("--shards"));
        let slurm = [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "8")];
        assert_eq!(shard(&slurm, None).unwrap(), Shard { index: 4, count: 8 });
        assert_eq!(shard(&[("AWS_BATCH_JOB_ARRAY_INDEX", "0")], Some(3)).unwrap(), Shard { index: 0, count: 3 });
        let cloud_run = [("CLOUD_RUN_TASK_INDEX", "9"), ("CLOUD_RUN_TASK_COUNT", "10")];
        assert_eq!(shard(&cloud_run, None).unwrap(), Shard { index: 9, count: 10 });
        assert!(shard(&[("CLOUD_RUN_TASK_INDEX", "10"), ("CLOUD_RUN_TASK_COUNT", "10")], None).is_err());
        assert!(shard(&[("JOB_COMPLETION_INDEX", "two")], Some(4)).is_err());
        assert!(shard(&[], Some(4)).is_err());
    }
}
