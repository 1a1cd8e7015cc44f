//! The service managers: where each keeps its file and the commands that register, start,
//! stop and forget the service.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::files::{launchd_plist, systemd_user_unit, windows_task_xml};
use super::{
    LAUNCHD_LABEL, LAUNCHD_LOG, RESTART_SECS, SYSTEMD_UNIT, ServiceError, Spec, WINDOWS_TASK,
    WINDOWS_TASK_FILE, chain, say,
};

/// The service managers Canopy writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    /// systemd's per-user manager (Linux).
    SystemdUser,
    /// launchd's per-user agents (macOS).
    Launchd,
    /// The Windows Task Scheduler.
    TaskScheduler,
}

/// How an install changes what was there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing was installed.
    New,
    /// The same file was installed.
    Unchanged,
    /// A different file was installed and is replaced (`--force`).
    Replaced,
}

/// A command the installer runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The program.
    pub program: &'static str,
    /// Its arguments.
    pub args: Vec<String>,
    /// Whether a failure is only noted (stopping what may not be running).
    pub tolerate_failure: bool,
}

impl Step {
    fn new(program: &'static str, args: &[&str]) -> Self {
        Self {
            program,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            tolerate_failure: false,
        }
    }

    fn tolerated(self) -> Self {
        Self {
            tolerate_failure: true,
            ..self
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.program)?;
        for arg in &self.args {
            write!(f, " {}", shell_word(arg))?;
        }
        Ok(())
    }
}

/// A word as a POSIX shell reads it back: single quotes around anything but plain characters.
pub(super) fn shell_word(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/._:,+=@%-".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl Manager {
    /// This platform's service manager, or [`ServiceError::Unsupported`].
    pub fn current() -> Result<Self, ServiceError> {
        if cfg!(target_os = "linux") {
            Ok(Self::SystemdUser)
        } else if cfg!(target_os = "macos") {
            Ok(Self::Launchd)
        } else if cfg!(windows) {
            Ok(Self::TaskScheduler)
        } else {
            Err(ServiceError::Unsupported {
                os: std::env::consts::OS,
            })
        }
    }

    /// The service file's text.
    pub fn render(self, spec: &Spec) -> Result<String, ServiceError> {
        Ok(match self {
            Self::SystemdUser => systemd_user_unit(spec),
            Self::Launchd => launchd_plist(spec),
            Self::TaskScheduler => windows_task_xml(spec, &windows_user()?),
        })
    }

    /// The file's bytes: UTF-8, or for the Task Scheduler UTF-16 (little-endian, with its
    /// byte-order mark) as the XML declares.
    pub fn encode(self, text: &str) -> Vec<u8> {
        match self {
            Self::TaskScheduler => [0xFEFF_u16]
                .into_iter()
                .chain(text.encode_utf16())
                .flat_map(u16::to_le_bytes)
                .collect(),
            Self::SystemdUser | Self::Launchd => text.as_bytes().to_vec(),
        }
    }

    /// Where the service file lies: under the user's configuration (systemd) or home
    /// directory (launchd), or in the data directory (the Task Scheduler keeps its own copy).
    pub fn file(self, data_dir: &Path) -> Result<PathBuf, ServiceError> {
        let base = || directories::BaseDirs::new().ok_or(ServiceError::NoHome);
        Ok(match self {
            Self::SystemdUser => base()?.config_dir().join("systemd/user").join(SYSTEMD_UNIT),
            Self::Launchd => base()?
                .home_dir()
                .join("Library/LaunchAgents")
                .join(format!("{LAUNCHD_LABEL}.plist")),
            Self::TaskScheduler => data_dir.join(WINDOWS_TASK_FILE),
        })
    }

    /// The commands that register and start the service whose file is `file`.
    pub fn start_steps(self, file: &Path, change: Change) -> Result<Vec<Step>, ServiceError> {
        let file = file.to_string_lossy();
        Ok(match self {
            Self::SystemdUser => {
                let mut steps = vec![Step::new("systemctl", &["--user", "daemon-reload"])];
                steps.push(match change {
                    Change::Replaced => Step::new("systemctl", &["--user", "enable", SYSTEMD_UNIT]),
                    _ => Step::new("systemctl", &["--user", "enable", "--now", SYSTEMD_UNIT]),
                });
                if change == Change::Replaced {
                    steps.push(Step::new("systemctl", &["--user", "restart", SYSTEMD_UNIT]));
                }
                steps
            }
            Self::Launchd => {
                let domain = gui_domain()?;
                let mut steps = Vec::new();
                if change != Change::New {
                    let service = format!("{domain}/{LAUNCHD_LABEL}");
                    steps.push(Step::new("launchctl", &["bootout", &service]).tolerated());
                }
                steps.push(Step::new("launchctl", &["bootstrap", &domain, &file]));
                steps
            }
            Self::TaskScheduler => {
                let mut steps = Vec::new();
                if change == Change::Replaced {
                    steps.push(Step::new("schtasks", &["/End", "/TN", WINDOWS_TASK]).tolerated());
                }
                steps.push(Step::new(
                    "schtasks",
                    &["/Create", "/TN", WINDOWS_TASK, "/XML", &file, "/F"],
                ));
                steps.push(Step::new("schtasks", &["/Run", "/TN", WINDOWS_TASK]));
                steps
            }
        })
    }

    /// The commands that stop and unregister the service, before its file is removed.
    pub fn stop_steps(self) -> Result<Vec<Step>, ServiceError> {
        Ok(match self {
            Self::SystemdUser => vec![Step::new(
                "systemctl",
                &["--user", "disable", "--now", SYSTEMD_UNIT],
            )],
            Self::Launchd => {
                let service = format!("{}/{LAUNCHD_LABEL}", gui_domain()?);
                vec![Step::new("launchctl", &["bootout", &service]).tolerated()]
            }
            Self::TaskScheduler => vec![
                Step::new("schtasks", &["/End", "/TN", WINDOWS_TASK]).tolerated(),
                Step::new("schtasks", &["/Delete", "/TN", WINDOWS_TASK, "/F"]).tolerated(),
            ],
        })
    }

    /// The commands that run once the file is removed.
    pub fn forget_steps(self) -> Vec<Step> {
        match self {
            Self::SystemdUser => vec![Step::new("systemctl", &["--user", "daemon-reload"])],
            Self::Launchd | Self::TaskScheduler => Vec::new(),
        }
    }

    /// What is now set up, how to follow it and how to undo it, in plain words.
    pub(super) fn summary(self, file: &Path, data_dir: &Path, started: bool, node: &str) -> String {
        let file = file.display();
        let log = shell_word(&data_dir.join(LAUNCHD_LOG).to_string_lossy());
        let mut words = match (self, started) {
            (Self::SystemdUser, true) => format!(
                "canopy-node now runs as a systemd service of this user: it starts when you log in, and again {RESTART_SECS} s after a failure.\n\
                 \x20 logs:   journalctl --user -u canopy-node -f\n"
            ),
            (Self::SystemdUser, false) => format!(
                "Not started (--no-start). To start it now and at every login:\n\
                 \x20 systemctl --user daemon-reload && systemctl --user enable --now {SYSTEMD_UNIT}\n\
                 \x20 logs:   journalctl --user -u canopy-node -f\n"
            ),
            (Self::Launchd, true) => format!(
                "canopy-node now runs as a launchd agent of this user: it starts when you log in, and again after a failure.\n\
                 \x20 logs:   tail -f {log}\n"
            ),
            (Self::Launchd, false) => format!(
                "Not started (--no-start): launchd loads it at your next login, or now with\n\
                 \x20 launchctl bootstrap gui/$(id -u) {}\n",
                shell_word(&file.to_string())
            ),
            (Self::TaskScheduler, true) => format!(
                "canopy-node now runs as the scheduled task {WINDOWS_TASK}: it starts when you log in, and again a minute after a failure.\n"
            ),
            (Self::TaskScheduler, false) => format!(
                "Not registered (--no-start). To register it and start it now:\n\
                 \x20 schtasks /Create /TN {WINDOWS_TASK} /XML \"{file}\" /F\n\
                 \x20 schtasks /Run /TN {WINDOWS_TASK}\n"
            ),
        };
        words.push_str(&format!(
            "  status: {node} status\n  pause:  {node} pause (`resume` goes on)\n  remove: {node} service uninstall\n"
        ));
        if self == Self::SystemdUser {
            words.push_str(
                "It runs while you are logged in; `loginctl enable-linger $USER` lets it run from boot, without a login session (a GPU then needs your user in the `render` group).\n",
            );
        }
        words
    }
}

/// `DOMAIN\name` of the user running this program, for the Windows task.
fn windows_user() -> Result<String, ServiceError> {
    let name = std::env::var("USERNAME").map_err(|_| ServiceError::NoUser)?;
    Ok(match std::env::var("USERDOMAIN") {
        Ok(domain) if !domain.is_empty() => format!("{domain}\\{name}"),
        _ => name,
    })
}

/// launchd's domain for this user's agents, `gui/<uid>`.
fn gui_domain() -> Result<String, ServiceError> {
    let step = Step::new("id", &["-u"]);
    let printed = run_quietly(&step)?;
    let uid: u32 = printed
        .trim()
        .parse()
        .map_err(|_| ServiceError::Uid(printed.clone()))?;
    Ok(format!("gui/{uid}"))
}

/// Runs `step`; its standard output, or why it failed.
fn run_quietly(step: &Step) -> Result<String, ServiceError> {
    let output = std::process::Command::new(step.program)
        .args(&step.args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ServiceError::Spawn {
            command: step.to_string(),
            source,
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(ServiceError::Failed {
            command: step.to_string(),
            status: output.status.to_string(),
            stderr: if stderr.is_empty() {
                "(nothing on standard error)".into()
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `step`, saying so; a tolerated failure is noted and passed over.
pub(super) fn run_step(step: &Step, out: &mut dyn Write) -> Result<(), ServiceError> {
    match run_quietly(step) {
        Ok(_) => say(out, format_args!("ran: {step}")),
        Err(e) if step.tolerate_failure => say(out, format_args!("note: {}; going on", chain(&e))),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steps_register_start_stop_and_forget() {
        let file = Path::new("/home/ada/.config/systemd/user/canopy-node.service");
        let lines = |steps: Vec<Step>| steps.iter().map(Step::to_string).collect::<Vec<_>>();
        let systemd = Manager::SystemdUser;
        assert_eq!(
            lines(systemd.start_steps(file, Change::New).unwrap()),
            [
                "systemctl --user daemon-reload",
                "systemctl --user enable --now canopy-node.service"
            ]
        );
        assert_eq!(
            lines(systemd.start_steps(file, Change::Replaced).unwrap())[1..],
            [
                "systemctl --user enable canopy-node.service",
                "systemctl --user restart canopy-node.service"
            ]
        );
        assert_eq!(
            lines(systemd.stop_steps().unwrap()),
            ["systemctl --user disable --now canopy-node.service"]
        );
        assert_eq!(
            lines(systemd.forget_steps()),
            ["systemctl --user daemon-reload"]
        );
        let xml = Path::new(r"C:\Users\Ada Lovelace\canopy-node-task.xml");
        let windows = Manager::TaskScheduler;
        assert_eq!(
            lines(windows.start_steps(xml, Change::New).unwrap()),
            [
                r"schtasks /Create /TN 'Canopy\canopy-node' /XML 'C:\Users\Ada Lovelace\canopy-node-task.xml' /F",
                r"schtasks /Run /TN 'Canopy\canopy-node'"
            ]
        );
        let stop = windows.stop_steps().unwrap();
        assert!(stop.iter().all(|s| s.tolerate_failure));
        assert_eq!(stop[1].args, ["/Delete", "/TN", WINDOWS_TASK, "/F"]);
    }

    #[cfg(unix)]
    #[test]
    fn a_failed_command_says_what_it_ran_its_status_and_stderr() {
        let step = Step::new("sh", &["-c", "echo no bus >&2; exit 3"]);
        let e = run_quietly(&step).unwrap_err().to_string();
        assert_eq!(
            e,
            "`sh -c 'echo no bus >&2; exit 3'` failed (exit status: 3): no bus"
        );
        let missing = Step::new("canopy-no-such-program", &[]);
        assert!(matches!(
            run_quietly(&missing),
            Err(ServiceError::Spawn { .. })
        ));
        let mut out = Vec::new();
        run_step(&step.tolerated(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.starts_with("note: `sh -c") && out.contains("going on"),
            "{out}"
        );
    }
}
