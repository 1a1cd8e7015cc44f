//! `canopy-node service` as a volunteer runs it on Linux: the real binary writes a systemd
//! user unit that runs `join` with the volunteer's flags and absolute paths, which
//! `systemd-analyze verify --user` accepts; a different unit is replaced only with `--force`;
//! a bad join flag is refused before anything is written; `uninstall` removes the unit, and
//! says so when there is none. `--no-start` throughout: no user manager runs here, and the
//! tests touch only temporary directories (HOME and XDG_CONFIG_HOME point into them).
//!
//! Without `systemd-analyze` the verify step says so and passes, unless
//! `CANOPY_REQUIRE_DEPLOY_TOOLS=1` (CI sets it).

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use canopy_tests::harness::{Program, binary, deploy_tool, run_with_timeout};

const ADDR: &str =
    "/ip4/203.0.113.7/tcp/4740/p2p/12D3KooWRh8tC5w9fyYZci3S9vTrNDbMNdXj13XfBj5aof2awhA9";

/// A volunteer's home in a temporary directory, with a data directory whose name needs
/// quoting (a space) and escaping (`%`, a systemd specifier) in the unit.
struct Home {
    root: PathBuf,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Home {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().canonicalize().expect("canonical temp dir");
        Self {
            data: root.join("Canopy data 100%"),
            root,
            _tmp: tmp,
        }
    }

    fn config(&self) -> PathBuf {
        self.root.join("config")
    }

    fn unit(&self) -> PathBuf {
        self.config().join("systemd/user/canopy-node.service")
    }

    /// `canopy-node --data-dir <data> <args…>` in this home, with none of the shell's
    /// `CANOPY_*` settings.
    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(node());
        command
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .current_dir(&self.root)
            .env("HOME", self.root.join("home"))
            .env("XDG_CONFIG_HOME", self.config());
        for var in [
            "CANOPY_DATA_DIR",
            "CANOPY_IDENTITY",
            "CANOPY_INVITE",
            "CANOPY_PRIORITY",
            "CANOPY_WORK_ON_BATTERY",
        ] {
            command.env_remove(var);
        }
        let shown = format!("{command:?}");
        run_with_timeout(command, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{shown}: {e}"))
    }

    /// Like [`Home::run`], which must succeed; what it printed.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let said = printed(&output);
        assert!(output.status.success(), "canopy-node {args:?}:\n{said}");
        said
    }

    fn read_unit(&self) -> String {
        let unit = self.unit();
        std::fs::read_to_string(&unit).unwrap_or_else(|e| panic!("reading {}: {e}", unit.display()))
    }
}

fn node() -> PathBuf {
    binary(Program::Node).expect("build canopy-node")
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `path` as one word of `ExecStart=`: `%` doubled, quoted when it holds a space.
fn exec_word(path: &Path) -> String {
    let text = path.to_str().expect("a UTF-8 path").replace('%', "%%");
    if text.contains(' ') {
        format!("\"{text}\"")
    } else {
        text
    }
}

/// `systemd-analyze verify --user` on the unit: it must exit 0 and say nothing about it.
fn verify(home: &Home) {
    let Some(analyze) = deploy_tool("systemd-analyze") else {
        return;
    };
    // The user manager it simulates wants a runtime directory of its own.
    let runtime = home.root.join("runtime");
    std::fs::create_dir_all(&runtime).expect("runtime dir");
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let mut command = Command::new(analyze);
    command
        .args(["verify", "--user"])
        .arg(home.unit())
        .env("HOME", home.root.join("home"))
        .env("XDG_CONFIG_HOME", home.config())
        .env("XDG_RUNTIME_DIR", &runtime);
    let output = run_with_timeout(command, Duration::from_secs(120)).expect("systemd-analyze");
    let said = printed(&output);
    assert!(
        output.status.success() && !said.contains("canopy-node"),
        "systemd-analyze verify --user:\n{said}\n{}",
        home.read_unit()
    );
    eprintln!("systemd-analyze verify --user canopy-node.service: clean");
}

#[test]
fn service_install_writes_a_user_unit_that_systemd_accepts_and_uninstall_removes_it() {
    let home = Home::new();
    let join = ["--", "--name", "ada", "--priority", "low"];
    let identity = ["--identity", "keys/host a.key"];
    let install = [
        &identity[..],
        &["service", "install", ADDR, "--no-start"],
        &join,
    ]
    .concat();
    let said = home.ok(&install);
    assert!(
        said.contains("wrote ") && said.contains("journalctl --user -u canopy-node"),
        "{said}"
    );
    assert!(said.contains("loginctl enable-linger"), "{said}");
    let unit = home.read_unit();
    let exec = format!(
        "ExecStart={} --data-dir {} --identity {} join {ADDR} --name ada --priority low",
        exec_word(&node()),
        exec_word(&home.data),
        exec_word(&home.root.join("keys/host a.key")),
    );
    assert!(unit.lines().any(|l| l == exec), "no `{exec}` in\n{unit}");
    for line in [
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "WantedBy=default.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line} in\n{unit}");
    }
    let mode = std::fs::metadata(home.unit())
        .expect("unit")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the unit may hold an invitation: mode {mode:o}"
    );
    verify(&home);

    // `show` prints what `install` wrote; installing it again changes nothing.
    let show = [&identity[..], &["service", "show", ADDR], &join].concat();
    let shown = home.run(&show);
    assert!(shown.status.success(), "{}", printed(&shown));
    assert_eq!(String::from_utf8_lossy(&shown.stdout), unit);
    let again = home.ok(&install);
    assert!(again.contains("unchanged"), "{again}");

    let said = home.ok(&["service", "uninstall", "--no-start"]);
    assert!(said.contains("removed"), "{said}");
    assert!(!home.unit().exists());
    let said = home.ok(&["service", "uninstall", "--no-start"]);
    assert!(
        said.contains("no canopy-node service is installed"),
        "{said}"
    );
}

#[test]
fn service_install_replaces_a_different_unit_only_with_force() {
    let home = Home::new();
    home.ok(&[
        "service",
        "install",
        ADDR,
        "--no-start",
        "--",
        "--name",
        "ada",
    ]);
    let first = home.read_unit();
    let other = [
        "service",
        "install",
        ADDR,
        "--no-start",
        "--",
        "--name",
        "bob",
    ];
    let refused = home.run(&other);
    let said = printed(&refused);
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("already holds a different service") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(
        home.read_unit(),
        first,
        "a refused install leaves the unit alone"
    );
    let said = home.ok(&[&other[..4], &["--force"], &other[4..]].concat());
    assert!(said.contains("replaced"), "{said}");
    let unit = home.read_unit();
    assert!(
        unit.contains("--name bob") && !unit.contains("--name ada"),
        "{unit}"
    );
}

#[test]
fn service_install_refuses_bad_join_flags_and_writes_nothing() {
    let home = Home::new();
    let bad = [
        "service",
        "install",
        ADDR,
        "--no-start",
        "--",
        "--priority",
        "sometimes",
    ];
    let output = home.run(&bad);
    let said = printed(&output);
    assert!(!output.status.success(), "{said}");
    assert!(
        said.contains("join flags after `--` are refused")
            && said.contains("'sometimes'")
            && said.contains("low, normal"),
        "{said}"
    );
    let no_peer = home.run(&[
        "service",
        "install",
        "/ip4/203.0.113.7/tcp/4740",
        "--no-start",
    ]);
    let said = printed(&no_peer);
    assert!(
        !no_peer.status.success() && said.contains("/p2p/<peer id>"),
        "{said}"
    );
    assert!(!home.unit().exists(), "nothing is written");
    assert!(!home.config().exists(), "not even the directory");
}
