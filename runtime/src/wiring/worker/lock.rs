//! The data dir's lock on the embedded log, `<data-dir>/worker.lock`: every worker on the
//! embedded log holds it shared while it runs (several may share a log, as tests do); the
//! `reset` command takes it exclusively, so offsets and state never change under a running
//! worker. On Kafka the group's membership says whether workers run.

use std::fs::{File, OpenOptions, TryLockError};

use crate::base::config::{Broker, Config};
use crate::base::error::{Error, Result};

const FILE: &str = "worker.lock";

/// A held lock on a data dir; released when dropped.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

fn open(config: &Config) -> Result<File> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| Error::io(format!("creating {}", config.data_dir.display()), e))?;
    let path = config.data_dir.join(FILE);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// A worker's shared hold on the embedded log's data dir (`None` on Kafka and `memory://`).
pub(crate) fn hold_shared(config: &Config) -> Result<Option<DataDirLock>> {
    if config.broker != Broker::Embedded {
        return Ok(None);
    }
    let file = open(config)?;
    file.lock_shared()
        .map_err(|e| Error::io(format!("locking {}", config.data_dir.display()), e))?;
    Ok(Some(DataDirLock { _file: file }))
}

/// The data dir to itself, or an error when a worker runs on it.
pub(crate) fn try_exclusive(config: &Config) -> Result<DataDirLock> {
    let file = open(config)?;
    match file.try_lock() {
        Ok(()) => Ok(DataDirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Error::config(
            "--data-dir (RILL_DATA_DIR)",
            format!(
                "a worker is running on {}; stop it first",
                config.data_dir.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(Error::io(
            format!("locking {}", config.data_dir.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_worker_keeps_the_exclusive_lock_away() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new("app");
        config.data_dir = dir.path().to_path_buf();
        let worker = hold_shared(&config).unwrap();
        let second = hold_shared(&config).unwrap();
        let err = try_exclusive(&config).unwrap_err().to_string();
        assert!(err.contains("a worker is running"), "{err}");
        drop((worker, second));
        let reset = try_exclusive(&config).unwrap();
        drop(reset);
        config.broker = Broker::Memory;
        assert!(hold_shared(&config).unwrap().is_none());
    }
}
