//! Headless Chromium for tests of the dashboard page: dump the DOM after the page's scripts
//! have run, and take a screenshot.
//!
//! Without a `chromium` (or `chromium-browser`, `google-chrome`) on the PATH the browser tests
//! skip, unless `CANOPY_REQUIRE_BROWSER=1` is set (CI sets it), when they fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::{on_path, required, run_with_timeout};

/// The Chromium binary, if one is installed.
pub fn chromium() -> Option<PathBuf> {
    on_path(&["chromium", "chromium-browser", "google-chrome"])
}

/// Whether a missing browser fails the test rather than skipping it.
pub fn browser_required() -> bool {
    required("CANOPY_REQUIRE_BROWSER")
}

fn command(bin: &Path, profile: &Path, url: &str, budget_ms: u32, extra: &[String]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--virtual-time-budget={budget_ms}"))
    .args(extra)
    .arg(url);
    cmd
}

/// The DOM of `url` after `budget_ms` of (virtual) time, as Chromium serialises it.
pub fn dump_dom(bin: &Path, profile: &Path, url: &str, budget_ms: u32) -> String {
    let cmd = command(bin, profile, url, budget_ms, &["--dump-dom".into()]);
    let out = run_with_timeout(cmd, Duration::from_secs(120)).expect("chromium --dump-dom");
    assert!(
        out.status.success(),
        "chromium --dump-dom failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of `url` after `budget_ms`, written to `png`.
pub fn screenshot(bin: &Path, profile: &Path, url: &str, budget_ms: u32, png: &Path) {
    let extra = [
        format!("--screenshot={}", png.display()),
        "--window-size=1280,1600".to_string(),
        "--hide-scrollbars".to_string(),
    ];
    let cmd = command(bin, profile, url, budget_ms, &extra);
    let out = run_with_timeout(cmd, Duration::from_secs(120)).expect("chromium --screenshot");
    assert!(
        out.status.success() && png.is_file(),
        "chromium --screenshot failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where test artifacts go: `<target dir>/test-artifacts/` (created).
pub fn artifact_dir() -> PathBuf {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(std::env::temp_dir)
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir
}
