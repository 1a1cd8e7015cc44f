//! One node per data directory and per identity. `canopy-node join` holds an exclusive lock
//! on `<data dir>/node.lock` and on its identity file for as long as it runs, so two nodes started on one directory, or on one key shared
//! through an NFS home, cannot both sign with one key or write one chunk store. The lock is
//! the operating system's (`flock`, which Linux carries over NFS as a byte-range lock): it
//! goes with the process, however the process ends.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::NodeError;

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "node.lock";

/// Locks held for as long as the node runs; dropping it releases them.
#[derive(Debug)]
pub struct NodeLock {
    _held: Vec<File>,
}

impl NodeLock {
    /// Locks `data_dir` (creating it) and the `identity` file (wherever it lies: another
    /// node may name it with `--identity`); a clear error when another process holds either.
    pub fn acquire(data_dir: &Path, identity: &Path) -> Result<Self, NodeError> {
        std::fs::create_dir_all(data_dir).map_err(|source| NodeError::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let mut held = vec![lock_file(&data_dir.join(LOCK_FILE), true)?];
        if identity.exists() {
            held.push(lock_file(identity, false)?);
        }
        Ok(Self { _held: held })
    }
}

fn lock_file(path: &Path, record_pid: bool) -> Result<File, NodeError> {
    let io = |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(record_pid)
        .create(record_pid)
        .truncate(false)
        .open(path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let pid = if record_pid {
                file.read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok())
            } else {
                None
            };
            return Err(NodeError::InUse {
                path: path.to_path_buf(),
                pid,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    if record_pid {
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
    }
    Ok(file)
}

/// The path `identity` names, or the data directory's own identity file.
pub fn identity_file(data_dir: &Path, identity: Option<&Path>) -> PathBuf {
    identity.map_or_else(
        || crate::identity::identity_path(data_dir),
        Path::to_path_buf,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_node_on_one_data_directory_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::identity::identity_path(dir.path());
        let first = NodeLock::acquire(dir.path(), &key).unwrap();
        let err = NodeLock::acquire(dir.path(), &key).unwrap_err();
        match &err {
            NodeError::InUse { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("another canopy-node"), "{err}");
        drop(first);
        NodeLock::acquire(dir.path(), &key).unwrap();
    }

    #[test]
    fn one_identity_file_is_used_by_one_node_whatever_its_data_directory() {
        let (a, b, keys) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let key = keys.path().join("host.key");
        crate::identity::load_or_create_at(&key).unwrap();
        let _first = NodeLock::acquire(a.path(), &key).unwrap();
        let err = NodeLock::acquire(b.path(), &key).unwrap_err();
        assert!(
            matches!(&err, NodeError::InUse { path, pid: None } if path == &key),
            "{err}"
        );
        // A key inside a running node's data directory, named from another: refused too.
        let (d, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let inside = crate::identity::identity_path(d.path());
        crate::identity::load_or_create(d.path()).unwrap();
        let _running = NodeLock::acquire(d.path(), &inside).unwrap();
        let err = NodeLock::acquire(c.path(), &inside).unwrap_err();
        assert!(
            matches!(&err, NodeError::InUse { path, .. } if path == &inside),
            "{err}"
        );
        // Another key on the second directory is fine.
        let other = keys.path().join("other.key");
        crate::identity::load_or_create_at(&other).unwrap();
        NodeLock::acquire(b.path(), &other).unwrap();
    }
}
