//! The node as a service of the user, started at login: `canopy-node service
//! install|uninstall|show` writes a systemd user unit (Linux), a launchd agent (macOS) or a
//! Task Scheduler task (Windows) that runs `canopy-node join` with the volunteer's flags.
//!
//! The generators ([`systemd_user_unit`], [`launchd_plist`], [`windows_task_xml`], in
//! `service/files.rs`) are pure and tested on every platform, with each format's quoting.
//! [`Spec::new`] is the one check of what the service will run: the coordinator's address
//! and the join flags go through the real `join` parser, so a bad flag is refused at install
//! time rather than at the next login. [`Manager`] (`service/manager.rs`) says which service manager this platform has,
//! where its file lies and which commands register it; [`run`] is the thin I/O layer the
//! binary calls.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use libp2p::Multiaddr;

use crate::cli::{ArgsError, Cli, Command, JoinConfig};
use crate::polite::Priority;

mod files;
mod manager;

pub use files::{
    launchd_plist, systemd_user_unit, systemd_word, windows_task_xml, windows_word, xml_escape,
};
pub use manager::{Change, Manager, Step};
use manager::{run_step, shell_word};

/// The systemd user unit's name.
pub const SYSTEMD_UNIT: &str = "canopy-node.service";
/// The launchd agent's label (its plist is `~/Library/LaunchAgents/<label>.plist`).
pub const LAUNCHD_LABEL: &str = "org.canopy.node";
/// The Windows scheduled task's name, in the Task Scheduler folder `Canopy`.
pub const WINDOWS_TASK: &str = r"Canopy\canopy-node";
/// The file in the data directory that holds the Windows task's XML.
pub const WINDOWS_TASK_FILE: &str = "canopy-node-task.xml";
/// Where launchd writes the node's output, under the data directory.
pub const LAUNCHD_LOG: &str = "logs/canopy-node.log";
/// Seconds the service manager waits after SIGTERM (the node hands its task back) before it
/// kills the node.
pub const STOP_TIMEOUT_SECS: u32 = 60;
/// Seconds between a failure and the restart.
pub const RESTART_SECS: u32 = 30;

const DESCRIPTION: &str = "Canopy node (volunteer compute for open language models)";
const WRITTEN_BY: &str =
    "Written by `canopy-node service install`; `canopy-node service uninstall` removes it.";
/// `canopy-node service …`.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Write the service and start it, now and at every login (`--no-start`: only write it).
    Install(InstallArgs),
    /// Stop the service and remove it.
    Uninstall {
        /// Only remove the file; do not ask the service manager to stop the node.
        #[arg(long)]
        no_start: bool,
    },
    /// Print the file `install` would write, for review.
    Show(UnitArgs),
}

/// What the service runs: `join` with these arguments.
#[derive(Debug, clap::Args)]
pub struct UnitArgs {
    /// The coordinator's address, ending in `/p2p/<peer id>` (as for `join`).
    pub coordinator: Multiaddr,
    /// Further flags for `join`, after `--` (e.g. `-- --name ada --gpus all`).
    #[arg(last = true, value_name = "JOIN FLAGS")]
    pub join: Vec<String>,
}

/// Flags of `canopy-node service install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// What the service runs.
    #[command(flatten)]
    pub unit: UnitArgs,
    /// Only write the file; do not register or start the service.
    #[arg(long)]
    pub no_start: bool,
    /// Replace an installed service that differs.
    #[arg(long)]
    pub force: bool,
}

/// Why a service cannot be shown, installed or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The coordinator's address has no `/p2p/<peer id>` ending.
    #[error(transparent)]
    Coordinator(ArgsError),
    /// The join flags do not parse.
    #[error("the join flags after `--` are refused: {reason}")]
    JoinFlags {
        /// The parser's words.
        reason: String,
    },
    /// The join flags parse but are refused by `join`'s checks.
    #[error("the join flags after `--` are refused")]
    Join(#[source] ArgsError),
    /// A global flag among the join flags.
    #[error(
        "{flag} goes before `service` (`canopy-node {flag} … service install`), not after `--`"
    )]
    GlobalFlag {
        /// The flag.
        flag: &'static str,
    },
    /// A path that the service file cannot hold: not UTF-8.
    #[error("the {what} {path:?} is not valid UTF-8")]
    NotUtf8 {
        /// Which path.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// A path or flag with a control character (a newline, say).
    #[error("the {what} \"{value}\" holds a control character")]
    ControlCharacter {
        /// Which value.
        what: &'static str,
        /// The value, escaped.
        value: String,
    },
    /// An installed service differs from the one asked for.
    #[error(
        "{path} already holds a different service; `canopy-node service show …` prints the new one, and `install --force` replaces it"
    )]
    Differs {
        /// The installed file.
        path: PathBuf,
    },
    /// No data directory could be found.
    #[error("no data directory: pass --data-dir or set CANOPY_DATA_DIR")]
    NoDataDir,
    /// No home directory could be found.
    #[error("no home directory: set HOME")]
    NoHome,
    /// No user name for the Windows task.
    #[error("no user name: USERNAME is not set")]
    NoUser,
    /// This program's own path is unknown.
    #[error("finding this program's path")]
    CurrentExe(#[source] std::io::Error),
    /// A file or directory operation failed.
    #[error("{action} {path}")]
    Io {
        /// What was being done ("writing", "removing", …).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing to the terminal failed.
    #[error("printing")]
    Output(#[source] std::io::Error),
    /// A service-manager command could not be started.
    #[error("could not run `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A service-manager command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on standard error.
        stderr: String,
    },
    /// The service file is written, but registering or starting it failed.
    #[error(
        "{path} is written, but the service manager did not start it (`--no-start` only writes it)"
    )]
    NotStarted {
        /// The service file.
        path: PathBuf,
        /// The command that failed.
        #[source]
        source: Box<ServiceError>,
    },
    /// Stopping the service failed, so its file is kept.
    #[error(
        "the service manager did not stop the service, so {path} is kept (`uninstall --no-start` removes it anyway)"
    )]
    NotStopped {
        /// The service file.
        path: PathBuf,
        /// The command that failed.
        #[source]
        source: Box<ServiceError>,
    },
    /// `id -u` printed no user id.
    #[error("`id -u` printed {0:?}, not a user id")]
    Uid(String),
    /// This platform has none of the service managers Canopy knows.
    #[error(
        "`canopy-node service` knows systemd (Linux), launchd (macOS) and the Task Scheduler (Windows), not {os}: run `canopy-node join` from your own service manager"
    )]
    Unsupported {
        /// The operating system.
        os: &'static str,
    },
}

/// What the service runs: this program, its data directory and identity, and `join`'s
/// arguments, all checked. Paths are taken as given: the installer makes them absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    exe: String,
    data_dir: String,
    identity: Option<String>,
    join: Vec<String>,
    priority: Priority,
}

impl Spec {
    /// Checks what the service will run: the coordinator's address must end in
    /// `/p2p/<peer id>`, and `join <coordinator> <extra…>` must pass `join`'s own parser and
    /// checks, as the service will run it (without this shell's `CANOPY_*` variables).
    pub fn new(
        exe: &Path,
        data_dir: &Path,
        identity: Option<&Path>,
        coordinator: &Multiaddr,
        extra: &[String],
    ) -> Result<Self, ServiceError> {
        crate::cli::coordinator_peer(coordinator).map_err(ServiceError::Coordinator)?;
        for arg in extra {
            plain("join flag", arg)?;
        }
        let priority = check_join(coordinator, extra)?;
        let mut join = vec![coordinator.to_string()];
        join.extend(extra.iter().cloned());
        Ok(Self {
            exe: utf8("program path", exe)?,
            data_dir: utf8("data directory", data_dir)?,
            identity: identity.map(|p| utf8("identity file", p)).transpose()?,
            join,
            priority,
        })
    }

    /// The program the service runs.
    pub fn exe(&self) -> &str {
        &self.exe
    }

    /// The node's data directory.
    pub fn data_dir(&self) -> &str {
        &self.data_dir
    }

    /// The priority `join` will run at (`--priority`): the service manager's settings follow
    /// it.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// The arguments after the program: `--data-dir <dir> [--identity <file>] join <coordinator>
    /// <extra…>`.
    pub fn args(&self) -> Vec<&str> {
        let mut args = vec!["--data-dir", self.data_dir.as_str()];
        if let Some(identity) = &self.identity {
            args.extend(["--identity", identity.as_str()]);
        }
        args.push("join");
        args.extend(self.join.iter().map(String::as_str));
        args
    }
}

/// The path as text for a service file, which holds no control characters.
fn utf8(what: &'static str, path: &Path) -> Result<String, ServiceError> {
    let text = path.to_str().ok_or_else(|| ServiceError::NotUtf8 {
        what,
        path: path.to_path_buf(),
    })?;
    plain(what, text)?;
    Ok(text.to_owned())
}

fn plain(what: &'static str, value: &str) -> Result<(), ServiceError> {
    if value.chars().any(char::is_control) {
        return Err(ServiceError::ControlCharacter {
            what,
            value: value.escape_debug().to_string(),
        });
    }
    Ok(())
}

/// Parses `canopy-node join <coordinator> <extra…>` as the service will (its environment has
/// no `CANOPY_*` variables) and checks it as `join` does; the priority it asks for.
fn check_join(coordinator: &Multiaddr, extra: &[String]) -> Result<Priority, ServiceError> {
    for arg in extra {
        for flag in ["--data-dir", "--identity"] {
            if arg == flag || arg.starts_with(&format!("{flag}=")) {
                return Err(ServiceError::GlobalFlag { flag });
            }
        }
    }
    let argv = [
        "canopy-node".to_owned(),
        "join".to_owned(),
        coordinator.to_string(),
    ]
    .into_iter()
    .chain(extra.iter().cloned());
    let no_env = |arg: clap::Arg| arg.env(None::<&'static str>);
    let parser = Cli::command()
        .mut_args(no_env)
        .mut_subcommand("join", |join| join.mut_args(no_env));
    let refused = |e: clap::Error| ServiceError::JoinFlags {
        reason: clap_reason(&e),
    };
    let matches = parser.try_get_matches_from(argv).map_err(refused)?;
    let Command::Join(args) = Cli::from_arg_matches(&matches).map_err(refused)?.command else {
        return Err(ServiceError::JoinFlags {
            reason: "not a join command line".into(),
        });
    };
    Ok(JoinConfig::from_args(*args)
        .map_err(ServiceError::Join)?
        .priority)
}

/// A clap error's first paragraph on one line, without its `error:` prefix.
fn clap_reason(e: &clap::Error) -> String {
    let text = e.to_string();
    let text = text.trim().trim_start_matches("error: ");
    let first = text.split("\n\n").next().unwrap_or(text);
    first.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut words = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        words.push_str(&format!(": {c}"));
        cause = c.source();
    }
    words
}

fn say(out: &mut dyn Write, line: impl std::fmt::Display) -> Result<(), ServiceError> {
    writeln!(out, "{line}").map_err(ServiceError::Output)
}

/// `path` made absolute, with symbolic links and `..` resolved in the part that exists
/// (on Windows only made absolute: canonical paths there are `\\?\` paths).
fn absolutize(path: &Path) -> Result<PathBuf, ServiceError> {
    let absolute = std::path::absolute(path).map_err(|source| ServiceError::Io {
        action: "finding the absolute path of",
        path: path.to_path_buf(),
        source,
    })?;
    if cfg!(windows) {
        return Ok(absolute);
    }
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(canonical) = existing.canonicalize() {
            return Ok(rest.iter().rev().fold(canonical, |p, name| p.join(name)));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return Ok(absolute),
        }
    }
}

/// What the global flags say: the data directory and identity file, absolute.
struct Place {
    data_dir: PathBuf,
    identity: Option<PathBuf>,
    /// How to run this node's commands (`canopy-node --data-dir …` where one was given).
    node: String,
}

impl Place {
    fn new(data_dir: Option<PathBuf>, identity: Option<PathBuf>) -> Result<Self, ServiceError> {
        let given = data_dir.is_some();
        let data_dir = crate::cli::data_dir(data_dir).ok_or(ServiceError::NoDataDir)?;
        let data_dir = absolutize(&data_dir)?;
        let identity = identity.as_deref().map(absolutize).transpose()?;
        let mut node = String::from("canopy-node");
        if given {
            node.push_str(&format!(
                " --data-dir {}",
                shell_word(&data_dir.to_string_lossy())
            ));
        }
        if let Some(identity) = &identity {
            node.push_str(&format!(
                " --identity {}",
                shell_word(&identity.to_string_lossy())
            ));
        }
        Ok(Self {
            data_dir,
            identity,
            node,
        })
    }

    /// The spec for `unit`, with a note for each `CANOPY_*` setting of this shell that the
    /// service will not see.
    fn spec(&self, unit: &UnitArgs, notes: &mut dyn Write) -> Result<Spec, ServiceError> {
        // The environment variables `join` reads, which a service started at login does not see.
        let cli = <Cli as clap::CommandFactory>::command();
        let env_flags = cli
            .find_subcommand("join")
            .into_iter()
            .flat_map(|join| join.get_arguments())
            .filter_map(|a| Some((a.get_env()?.to_owned(), format!("--{}", a.get_long()?))));
        for (var, flag) in env_flags {
            let passed = unit.join.iter().any(|a| a.starts_with(&flag));
            if std::env::var_os(&var).is_some() && !passed {
                say(
                    notes,
                    format_args!(
                        "note: {} is set here, but the service does not see it: pass {flag} \
                         after `--`, or set it in {}",
                        var.to_string_lossy(),
                        crate::settings::FILE
                    ),
                )?;
            }
        }
        let exe = std::env::current_exe().map_err(ServiceError::CurrentExe)?;
        Spec::new(
            &exe,
            &self.data_dir,
            self.identity.as_deref(),
            &unit.coordinator,
            &unit.join,
        )
    }
}

/// Runs `canopy-node service …` with the global `--data-dir` and `--identity`: progress and
/// results on `out`, notes for the volunteer on `notes`.
pub fn run(
    command: ServiceCommand,
    data_dir: Option<PathBuf>,
    identity: Option<PathBuf>,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), ServiceError> {
    let manager = Manager::current()?;
    let place = Place::new(data_dir, identity)?;
    match command {
        ServiceCommand::Show(unit) => {
            let text = manager.render(&place.spec(&unit, notes)?)?;
            out.write_all(text.as_bytes())
                .map_err(ServiceError::Output)?;
            let file = manager.file(&place.data_dir)?;
            say(
                notes,
                format_args!("(`install` writes this to {})", file.display()),
            )
        }
        ServiceCommand::Install(args) => install(manager, &place, &args, out, notes),
        ServiceCommand::Uninstall { no_start } => uninstall(manager, &place, no_start, out),
    }
}

fn install(
    manager: Manager,
    place: &Place,
    args: &InstallArgs,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> Result<(), ServiceError> {
    let spec = place.spec(&args.unit, notes)?;
    let bytes = manager.encode(&manager.render(&spec)?);
    let file = manager.file(&place.data_dir)?;
    let io = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| ServiceError::Io {
            action,
            path,
            source,
        }
    };
    let change = match std::fs::read(&file) {
        Ok(installed) if installed == bytes => Change::Unchanged,
        Ok(_) if !args.force => return Err(ServiceError::Differs { path: file }),
        Ok(_) => Change::Replaced,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Change::New,
        Err(e) => return Err(io("reading", &file)(e)),
    };
    if manager == Manager::Launchd {
        // launchd opens the log file but does not create its directory.
        let logs = place.data_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io("creating", &logs))?;
    }
    if change == Change::Unchanged {
        say(
            out,
            format_args!("{} is installed already, unchanged", file.display()),
        )?;
    } else {
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        // Readable by this user only: the join flags may hold an invitation token.
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("writing in", dir))?;
        tmp.write_all(&bytes).map_err(io("writing", tmp.path()))?;
        tmp.persist(&file)
            .map_err(|e| io("writing", &file)(e.error))?;
        let verb = if change == Change::Replaced {
            "replaced"
        } else {
            "wrote"
        };
        say(out, format_args!("{verb} {}", file.display()))?;
    }
    if !args.no_start {
        let not_started = |source| ServiceError::NotStarted {
            path: file.clone(),
            source: Box::new(source),
        };
        for step in manager.start_steps(&file, change).map_err(not_started)? {
            run_step(&step, out).map_err(not_started)?;
        }
    }
    say(
        out,
        manager
            .summary(&file, &place.data_dir, !args.no_start, &place.node)
            .trim_end(),
    )
}

fn uninstall(
    manager: Manager,
    place: &Place,
    no_start: bool,
    out: &mut dyn Write,
) -> Result<(), ServiceError> {
    let file = manager.file(&place.data_dir)?;
    if !file.exists() {
        return say(
            out,
            format_args!(
                "no canopy-node service is installed ({} does not exist)",
                file.display()
            ),
        );
    }
    if !no_start {
        let not_stopped = |source| ServiceError::NotStopped {
            path: file.clone(),
            source: Box::new(source),
        };
        for step in manager.stop_steps().map_err(not_stopped)? {
            run_step(&step, out).map_err(not_stopped)?;
        }
    }
    std::fs::remove_file(&file).map_err(|source| ServiceError::Io {
        action: "removing",
        path: file.clone(),
        source,
    })?;
    say(out, format_args!("removed {}", file.display()))?;
    if !no_start {
        for step in manager.forget_steps() {
            run_step(&step, out)?;
        }
    }
    say(
        out,
        "canopy-node no longer starts at login; its data directory and identity are kept",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const ADDR: &str =
        "/ip4/203.0.113.7/tcp/4740/p2p/12D3KooWRh8tC5w9fyYZci3S9vTrNDbMNdXj13XfBj5aof2awhA9";
    /// A path with every character the formats escape.
    pub(super) const AWKWARD: &str = "/home/ada/Canopy & <co> \"quoted\" 'x' 100% $HOME \\ ;";

    pub(super) fn spec_with(
        exe: &str,
        data_dir: &str,
        identity: Option<&str>,
        extra: &[&str],
    ) -> Result<Spec, ServiceError> {
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        Spec::new(
            Path::new(exe),
            Path::new(data_dir),
            identity.map(Path::new),
            &ADDR.parse().unwrap(),
            &extra,
        )
    }

    pub(super) fn awkward() -> Spec {
        spec_with(
            "/opt/Canopy Node/bin/canopy-node",
            AWKWARD,
            Some("/home/ada/keys/host a.key"),
            &[
                "--name",
                "Ada & \"Bob\" <lab>",
                "--org=$ACME 50%",
                "--gpus",
                "all",
            ],
        )
        .unwrap()
    }

    /// The full command line the service runs.
    pub(super) fn argv(spec: &Spec) -> Vec<String> {
        std::iter::once(spec.exe())
            .chain(spec.args())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn bad_join_flags_are_refused_before_anything_is_written() {
        let refused = |extra: &[&str]| {
            let e = spec_with("/bin/canopy-node", "/d", None, extra).unwrap_err();
            chain(&e)
        };
        let e = refused(&["--priority", "sometimes"]);
        assert!(
            e.contains("invalid value 'sometimes'") && e.contains("low, normal"),
            "{e}"
        );
        let e = refused(&["--colour"]);
        assert!(e.contains("unexpected argument '--colour'"), "{e}");
        let e = refused(&["--country", "France"]);
        assert!(
            e.contains("refused: --country \"France\" must be a two-letter"),
            "{e}"
        );
        let e = refused(&["--data-dir", "/elsewhere"]);
        assert!(e.contains("--data-dir goes before `service`"), "{e}");
        let e = refused(&["--identity=/k"]);
        assert!(e.contains("--identity goes before"), "{e}");
        let e = refused(&["--name", "two\nlines"]);
        assert!(
            e.contains(r#"join flag "two\nlines" holds a control character"#),
            "{e}"
        );
        let e = refused(&["/ip4/127.0.0.1/tcp/1"]);
        assert!(e.contains("unexpected argument"), "{e}");
        let no_peer: Multiaddr = "/ip4/127.0.0.1/tcp/4740".parse().unwrap();
        let e = Spec::new(Path::new("/x"), Path::new("/d"), None, &no_peer, &[]).unwrap_err();
        assert!(chain(&e).contains("must end in /p2p/<peer id>"), "{e}");
        let e = spec_with("/x", "/d\r", None, &[]).unwrap_err();
        assert!(chain(&e).contains("data directory"), "{e}");
    }

    #[test]
    fn paths_are_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        let made = absolutize(&dir.path().join("a/../b/new dir")).unwrap();
        assert!(made.is_absolute(), "{made:?}");
        if !cfg!(windows) {
            assert_eq!(made, real.join("a/../b/new dir"), "a does not exist: kept");
            std::fs::create_dir(real.join("a")).unwrap();
            let made = absolutize(&dir.path().join("a/../b/new dir")).unwrap();
            assert_eq!(made, real.join("b/new dir"));
        }
        assert!(absolutize(Path::new("relative")).unwrap().is_absolute());
    }
}
