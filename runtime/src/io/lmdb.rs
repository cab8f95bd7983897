//! Opening rill's LMDB environments (the embedded log and the table store) one way: under the
//! data dir or in a temporary directory (`memory://`), with stale reader slots of killed
//! processes cleared, since they would pin old pages forever.

use std::path::{Path, PathBuf};

use heed::{Env, EnvFlags, EnvOpenOptions, WithoutTls};

use crate::base::config::Config;
use crate::base::error::{Error, Result};

/// An open environment and where it lives.
pub(crate) struct Opened {
    pub(crate) env: Env<WithoutTls>,
    pub(crate) path: PathBuf,
    /// Keeps a `memory://` environment's directory alive; removed on drop.
    pub(crate) temp: Option<tempfile::TempDir>,
}

/// Maps a heed error to [`Error::Storage`] for `path`, adding `full_hint` when the map is full.
pub(crate) fn storage_error(
    path: &Path,
    context: String,
    full_hint: &'static str,
) -> impl FnOnce(heed::Error) -> Error {
    let path = path.to_path_buf();
    move |source| {
        let context = if matches!(source, heed::Error::Mdb(heed::MdbError::MapFull))
            && !full_hint.is_empty()
        {
            format!("{context}: {full_hint}")
        } else {
            context
        };
        Error::Storage {
            path,
            context,
            source,
        }
    }
}

/// Opens `<data_dir>/<dir>`, or a temporary directory when `in_memory`.
pub(crate) fn open(
    config: &Config,
    dir: &str,
    in_memory: bool,
    map_size: usize,
    max_dbs: u32,
) -> Result<Opened> {
    let (path, temp) = if in_memory {
        let temp = tempfile::Builder::new()
            .prefix(&format!("rill-{dir}-"))
            .tempdir()
            .map_err(|e| {
                Error::io(
                    format!("creating a temporary directory for the {dir} store"),
                    e,
                )
            })?;
        (temp.path().to_path_buf(), Some(temp))
    } else {
        let path = config.data_dir.join(dir);
        std::fs::create_dir_all(&path).map_err(|e| {
            Error::io(
                format!(
                    "creating {} (set --data-dir or RILL_DATA_DIR)",
                    path.display()
                ),
                e,
            )
        })?;
        (path, None)
    };
    let storage = |context: &str| storage_error(&path, context.to_owned(), "");
    let mut options = EnvOpenOptions::new().read_txn_without_tls();
    options.map_size(map_size).max_dbs(max_dbs).max_readers(256);
    let env = open_env(&mut options, &path, in_memory)
        .map_err(storage(&format!("opening the {dir} store")))?;
    let stale = env
        .clear_stale_readers()
        .map_err(storage("clearing stale readers"))?;
    if stale > 0 {
        tracing::info!(stale, path = %path.display(), "cleared stale LMDB readers left by a killed process");
    }
    Ok(Opened { env, path, temp })
}

#[allow(unsafe_code, reason = "opening an LMDB environment is unsafe in heed")]
fn open_env(
    options: &mut EnvOpenOptions<WithoutTls>,
    path: &Path,
    in_memory: bool,
) -> heed::Result<Env<WithoutTls>> {
    if in_memory {
        // SAFETY: NO_SYNC only drops durability across OS crashes, which memory:// never has.
        unsafe {
            options.flags(EnvFlags::NO_SYNC);
        }
    }
    // SAFETY: rill opens each environment once per process (the worker owns it; heed refuses a
    // second open of the same path) and never maps the same file twice; other processes use
    // LMDB's own locking.
    unsafe { options.open(path) }
}

/// Resizes an environment's map.
#[allow(unsafe_code, reason = "resizing an LMDB map is unsafe in heed")]
pub(crate) fn resize(env: &Env<WithoutTls>, size: usize) -> heed::Result<()> {
    // SAFETY: callers hold their store's gate exclusively, so no transaction of this process is
    // open on the environment, which is what `mdb_env_set_mapsize` requires.
    unsafe { env.resize(size) }
}
