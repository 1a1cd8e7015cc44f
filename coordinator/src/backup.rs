//! `canopy-coordinator backup DIR`: a consistent copy of a project, taken while it runs.
//!
//! The copy is itself a project directory: the configuration, the coordinator's key, a
//! snapshot of the state database (SQLite's `VACUUM INTO`, one consistent read), and every
//! chunk of every object that snapshot names. Restoring is running the coordinator on it
//! (`canopy-coordinator run --config DIR/canopy.toml`), where it lies or copied back to where
//! the project lived; it carries on from the round the snapshot was taken in, and its nodes
//! reconnect by themselves.
//!
//! Chunks are immutable and named by their hash, so copying them beside a running coordinator
//! is safe; but a round that closes meanwhile may delete objects the snapshot still names. The
//! backup then takes a fresh snapshot and copies what it lacks, a few times at most.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use canopy_node::identity::IDENTITY_FILE;
use canopy_node::store::chunk_path;
use canopy_protocol::{Digest, SignedManifest};
use rusqlite::{Connection, OpenFlags};

use crate::config::FILE_NAME;
use crate::project::DB_FILE;

/// Snapshots taken at most before the backup gives up on a run that keeps moving.
pub const ATTEMPTS: u32 = 5;

/// Why a backup could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The destination holds files already.
    #[error("{0} is not empty: back up into a new or empty directory")]
    NotEmpty(PathBuf),
    /// The project has no state database to back up.
    #[error("no project state in {0} (is this the project's directory?)")]
    NoProject(PathBuf),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The database could not be read or snapshotted.
    #[error("state database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored manifest does not decode.
    #[error("a stored manifest does not decode: {0}")]
    Corrupt(String),
    /// Objects kept disappearing under the backup.
    #[error(
        "{missing} chunk(s) named by the state were deleted before they could be copied, {ATTEMPTS} times over; try again"
    )]
    Moving {
        /// Chunks missing at the last attempt.
        missing: usize,
    },
}

/// What a backup holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    /// The round in progress when the snapshot was taken (none before the first).
    pub round: Option<u64>,
    /// Objects the snapshot names.
    pub objects: usize,
    /// Their chunks, copied.
    pub chunks: usize,
    /// Bytes of chunks copied.
    pub bytes: u64,
    /// Snapshots taken.
    pub attempts: u32,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Backs up the project in `project` (configured by `config`) into `out`, a new or empty
/// directory.
pub fn backup(project: &Path, config: &Path, out: &Path) -> Result<BackupSummary, BackupError> {
    let db = project.join(DB_FILE);
    if !db.exists() {
        return Err(BackupError::NoProject(project.to_path_buf()));
    }
    if out.exists() {
        let mut entries = std::fs::read_dir(out).map_err(io(out))?;
        if entries.next().is_some() {
            return Err(BackupError::NotEmpty(out.to_path_buf()));
        }
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut missing = 0;
    let mut bytes = 0u64;
    for attempt in 1..=ATTEMPTS {
        let snapshot = out.join(DB_FILE);
        if snapshot.exists() {
            std::fs::remove_file(&snapshot).map_err(io(&snapshot))?;
        }
        let live = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        live.busy_timeout(std::time::Duration::from_secs(10))?;
        let target = snapshot.to_string_lossy().into_owned();
        live.execute("VACUUM INTO ?1", [&target])?;
        drop(live);
        let (round, objects, needed) = named_chunks(&snapshot)?;
        missing = 0;
        for id in &needed {
            let (from, to) = (chunk_path(project, id), chunk_path(out, id));
            if to.exists() {
                continue;
            }
            match copy_chunk(&from, &to) {
                Ok(n) => bytes += n,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing += 1,
                Err(source) => return Err(BackupError::Io { path: from, source }),
            }
        }
        if missing == 0 {
            for (name, dest) in [(IDENTITY_FILE, IDENTITY_FILE), ("", FILE_NAME)] {
                let from = if name.is_empty() {
                    config.to_path_buf()
                } else {
                    project.join(name)
                };
                let to = out.join(dest);
                std::fs::copy(&from, &to).map_err(io(&from))?;
            }
            return Ok(BackupSummary {
                round,
                objects,
                chunks: needed.len(),
                bytes,
                attempts: attempt,
            });
        }
        tracing::info!(
            attempt,
            missing,
            "the run moved on during the backup: snapshotting again"
        );
    }
    Err(BackupError::Moving { missing })
}

/// The round in progress, the number of objects and every chunk they name, in a snapshot.
fn named_chunks(snapshot: &Path) -> Result<(Option<u64>, usize, BTreeSet<Digest>), BackupError> {
    let c = Connection::open_with_flags(snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let round: Option<i64> = c.query_row("SELECT MAX(round) FROM rounds", [], |r| r.get(0))?;
    let mut stmt = c.prepare("SELECT manifest FROM objects")?;
    let blobs = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut chunks = BTreeSet::new();
    for blob in &blobs {
        let signed =
            SignedManifest::from_frame(blob).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        chunks.extend(signed.manifest().chunks.iter().copied());
    }
    Ok((round.map(|r| r as u64), blobs.len(), chunks))
}

/// Copies one chunk through a temporary file, so a backup cut short leaves no torn chunk.
fn copy_chunk(from: &Path, to: &Path) -> std::io::Result<u64> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = to.with_extension("part");
    let n = std::fs::copy(from, &tmp)?;
    std::fs::rename(&tmp, to)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use canopy_node::store::ChunkStore;
    use canopy_protocol::{Keypair, Manifest, ObjectKind};

    use super::*;
    use crate::config::Config;
    use crate::state::State;

    /// A project directory with a configuration, a key, and `n` objects of 3 chunks each
    /// stored and named in its state.
    fn project(n: u8) -> (tempfile::TempDir, Vec<(Manifest, Vec<u8>)>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), Config::template()).unwrap();
        canopy_node::identity::load_or_create(dir.path()).unwrap();
        let store = ChunkStore::open(dir.path(), 1 << 30).unwrap();
        let mut state = State::open(&dir.path().join(DB_FILE)).unwrap();
        let keys = Keypair::generate().unwrap();
        let mut objects = Vec::new();
        for i in 0..n {
            let data: Vec<u8> = (0..3_000u32)
                .map(|b| (b.wrapping_mul(2_654_435_761) >> 13) as u8 ^ i)
                .collect();
            let manifest =
                Manifest::build(ObjectKind::TrainingShard, &data, 1_024, BTreeMap::new()).unwrap();
            let signed = manifest.clone().sign(&keys).unwrap();
            store.put_object(&manifest, &data).unwrap();
            state.transaction(|tx| tx.put_manifest(&signed, 1)).unwrap();
            objects.push((manifest, data));
        }
        (dir, objects)
    }

    #[test]
    fn a_backup_is_a_project_directory_holding_every_object_its_state_names() {
        let (dir, objects) = project(3);
        let out = dir.path().join("backup");
        let config = dir.path().join(FILE_NAME);
        let summary = backup(dir.path(), &config, &out).unwrap();
        assert_eq!(summary.objects, 3);
        assert_eq!(summary.chunks, 9);
        assert_eq!(summary.attempts, 1);
        // The same key, configuration and state, and each object whole.
        let key = |d: &Path| std::fs::read(d.join(IDENTITY_FILE)).unwrap();
        assert_eq!(key(dir.path()), key(&out));
        assert_eq!(
            std::fs::read_to_string(out.join(FILE_NAME)).unwrap(),
            Config::template()
        );
        let state = State::open(&out.join(DB_FILE)).unwrap();
        let restored = ChunkStore::open(&out, 1 << 30).unwrap();
        for (manifest, data) in &objects {
            assert!(state.read().manifest(&manifest.root).unwrap().is_some());
            assert_eq!(restored.get_object(manifest).unwrap().as_ref(), Some(data));
        }
        // A second backup into the same place is refused, the first left as it was.
        let err = backup(dir.path(), &config, &out).unwrap_err();
        assert!(matches!(err, BackupError::NotEmpty(_)), "{err}");
    }

    #[test]
    fn a_chunk_the_state_names_but_the_store_lost_fails_the_backup_after_retrying() {
        let (dir, objects) = project(1);
        let gone = objects[0].0.chunks[1];
        std::fs::remove_file(chunk_path(dir.path(), &gone)).unwrap();
        let out = dir.path().join("backup");
        let err = backup(dir.path(), &dir.path().join(FILE_NAME), &out).unwrap_err();
        assert!(matches!(err, BackupError::Moving { missing: 1 }), "{err}");
        // Nothing claims to be a usable backup: no key or configuration was written.
        assert!(!out.join(IDENTITY_FILE).exists());
        let err = backup(&dir.path().join("nowhere"), &out, &out).unwrap_err();
        assert!(matches!(err, BackupError::NoProject(_)), "{err}");
    }
}
