//! Helpers for end-to-end tests: locate (building if needed) the workspace's binaries in the
//! same profile as the running test, and run them with a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Errors of the harness itself (not of the program under test).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The test executable's location does not look like `target/<profile>/deps/…`.
    #[error("cannot find the target directory from {0}")]
    TargetDir(PathBuf),
    /// Building a binary failed.
    #[error("cargo build of {bin} failed:\n{stderr}")]
    Build {
        /// The binary.
        bin: String,
        /// What cargo printed.
        stderr: String,
    },
    /// A process did not finish in time and was killed.
    #[error("{program} did not finish within {timeout:?}")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline.
        timeout: Duration,
    },
    /// Spawning or waiting failed.
    #[error("running {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// The path of workspace binary `bin` of package `package`, built in the profile of the
/// running test (so `cargo test --release` tests release binaries).
pub fn binary(package: &str, bin: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
        program: "current_exe".into(),
        source,
    })?;
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| HarnessError::TargetDir(exe.clone()))?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| HarnessError::TargetDir(exe.clone()))?;
    let cargo_profile = if profile == "debug" { "dev" } else { profile };
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| HarnessError::TargetDir(exe.clone()))?;
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--profile",
            cargo_profile,
            "-p",
            package,
            "--bin",
            bin,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .map_err(|source| HarnessError::Io {
            program: "cargo".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(HarnessError::Build {
            bin: bin.into(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX)))
}

/// Runs `command` to completion, killing it after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Result<Output, HarnessError> {
    let program = format!("{:?}", command.get_program());
    let io = |source| HarnessError::Io {
        program: program.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io)?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().map_err(io)?.is_some() {
            return child.wait_with_output().map_err(io);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HarnessError::Timeout {
                program: program.clone(),
                timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
