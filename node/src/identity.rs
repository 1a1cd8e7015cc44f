//! The node's identity on disk: one ed25519 secret key in `<data dir>/identity.key`, created on
//! first run with mode 0600, that is both its Canopy signing key and its libp2p identity.

use std::io::Write;
use std::path::{Path, PathBuf};

use canopy_protocol::Keypair;
use zeroize::Zeroizing;

use crate::error::NodeError;

/// File name of the secret key inside the data directory.
pub const IDENTITY_FILE: &str = "identity.key";

/// The identity file's path in `data_dir`.
pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

/// Loads the identity from `data_dir`, creating the directory and a fresh key on first run.
/// Returns the keypair and whether it was just created.
pub fn load_or_create(data_dir: &Path) -> Result<(Keypair, bool), NodeError> {
    load_or_create_at(&identity_path(data_dir))
}

/// Loads the identity from the key file `path`, creating its directory and a fresh key on
/// first run (`--identity FILE`: one key per machine where data directories are shared).
pub fn load_or_create_at(path: &Path) -> Result<(Keypair, bool), NodeError> {
    let path = path.to_path_buf();
    let dir = path.parent().unwrap_or(Path::new("."));
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            let secret: &[u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| NodeError::CorruptIdentity {
                        path: path.clone(),
                        len: bytes.len(),
                    })?;
            Ok((Keypair::from_secret_bytes(secret), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let keys = Keypair::generate()?;
            write_private(&path, keys.secret_bytes().as_ref())?;
            Ok((keys, true))
        }
        Err(source) => Err(NodeError::Io { path, source }),
    }
}

/// Writes `bytes` to a file readable only by its owner (mode 0600 on Unix), atomically (temp
/// file + rename): keys, and configurations that hold tokens.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), NodeError> {
    let io = |source| NodeError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(identity_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(identity_path(dir.path()), b"short").unwrap();
        let err = load_or_create(dir.path()).unwrap_err();
        assert!(
            matches!(err, NodeError::CorruptIdentity { len: 5, .. }),
            "{err}"
        );
    }
}
