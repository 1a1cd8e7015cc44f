//! The idle probe: how long since someone last used this machine. On Linux it asks logind
//! for the idle state of the physical seat (desktops report it, after their own idle delay)
//! and reads the access times of terminals (`/dev/pts/*`, `/dev/tty<N>`), which the kernel
//! updates on input; on macOS it reads `HIDIdleTime`; on Windows `GetLastInputInfo`.
//! `CANOPY_INPUT_DEVICES_DIR` names a directory whose files' times stand for the input
//! devices instead (tests drive it).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Environment variable naming a directory whose files' modification and access times are
/// taken as the times of the last input (tests and unusual machines).
pub const INPUT_DIR_ENV: &str = "CANOPY_INPUT_DEVICES_DIR";
/// How long an answer from a program (`loginctl`, `ioreg`) is reused.
const PROGRAM_ANSWER_TTL: Duration = Duration::from_secs(10);

/// Something that tells how long the machine has gone without user input.
pub trait IdleProbe: Send {
    /// How long since the last user input; `None` when this probe cannot tell.
    fn idle_for(&mut self) -> Option<Duration>;
}

/// The probe for this platform, or the directory `CANOPY_INPUT_DEVICES_DIR` names.
pub fn probe_from_env() -> Box<dyn IdleProbe> {
    if let Some(dir) = std::env::var_os(INPUT_DIR_ENV) {
        return Box::new(DeviceTimes::every_file_in(PathBuf::from(dir)));
    }
    platform_probe()
}

#[cfg(target_os = "linux")]
fn platform_probe() -> Box<dyn IdleProbe> {
    Box::new(Nearest(vec![
        Box::new(Cached::new(logind_seat)),
        Box::new(DeviceTimes::terminals()),
    ]))
}

#[cfg(target_os = "macos")]
fn platform_probe() -> Box<dyn IdleProbe> {
    Box::new(Cached::new(mac_hid_idle))
}

#[cfg(windows)]
fn platform_probe() -> Box<dyn IdleProbe> {
    Box::new(WindowsLastInput)
}

#[cfg(not(any(target_os = "linux", target_os = "macos", windows)))]
fn platform_probe() -> Box<dyn IdleProbe> {
    Box::new(Nearest(Vec::new()))
}

/// The most recent input any of several probes saw (the shortest idle time).
struct Nearest(Vec<Box<dyn IdleProbe>>);

impl IdleProbe for Nearest {
    fn idle_for(&mut self) -> Option<Duration> {
        self.0.iter_mut().filter_map(|p| p.idle_for()).min()
    }
}

#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
/// Reuses a program's answer for [`PROGRAM_ANSWER_TTL`], adding the time since.
struct Cached {
    ask: fn() -> Option<Duration>,
    last: Option<(Instant, Option<Duration>)>,
}

impl Cached {
    fn new(ask: fn() -> Option<Duration>) -> Self {
        Self { ask, last: None }
    }
}

impl IdleProbe for Cached {
    fn idle_for(&mut self) -> Option<Duration> {
        let fresh = self
            .last
            .filter(|(at, _)| at.elapsed() < PROGRAM_ANSWER_TTL);
        let (at, idle) = match fresh {
            Some(answer) => answer,
            None => {
                let answer = (Instant::now(), (self.ask)());
                self.last = Some(answer);
                answer
            }
        };
        // Idle then and no newer answer: idle that much longer now. In use then: in use.
        idle.map(|d| if d.is_zero() { d } else { d + at.elapsed() })
    }
}

/// Which names in a directory are input devices.
type NameFilter = fn(&str) -> bool;

/// Reads the latest access or modification time of device files.
pub struct DeviceTimes(Vec<(PathBuf, NameFilter)>);

impl DeviceTimes {
    /// Every file in `dir`.
    pub fn every_file_in(dir: PathBuf) -> Self {
        Self(vec![(dir, |_| true)])
    }

    /// Linux's terminals: pseudo-terminals and virtual consoles.
    pub fn terminals() -> Self {
        Self(vec![
            (PathBuf::from("/dev/pts"), |name| {
                name.bytes().all(|b| b.is_ascii_digit())
            }),
            (PathBuf::from("/dev"), |name| {
                name.strip_prefix("tty")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }),
        ])
    }

    fn latest_in(dir: &Path, keep: NameFilter) -> Option<SystemTime> {
        std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(keep))
            .filter_map(|e| e.metadata().ok())
            .filter_map(|m| {
                let times = [m.accessed().ok(), m.modified().ok()];
                times.into_iter().flatten().max()
            })
            .max()
    }
}

impl IdleProbe for DeviceTimes {
    fn idle_for(&mut self) -> Option<Duration> {
        let latest = self
            .0
            .iter()
            .filter_map(|(dir, keep)| Self::latest_in(dir, *keep))
            .max()?;
        // A time in the future (a clock step) counts as input now.
        Some(SystemTime::now().duration_since(latest).unwrap_or_default())
    }
}

#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
/// What a program prints, if it ran and succeeded.
fn program_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Idle time from logind's `IdleHint` and `IdleSinceHint` (µs since the epoch) of a seat.
pub fn parse_logind(text: &str, now: SystemTime) -> Option<Duration> {
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
    };
    match value("IdleHint")? {
        "no" => Some(Duration::ZERO),
        "yes" => {
            let since = value("IdleSinceHint")?.parse::<u64>().ok()?;
            let since = SystemTime::UNIX_EPOCH + Duration::from_micros(since);
            Some(now.duration_since(since).unwrap_or_default())
        }
        _ => None,
    }
}

#[cfg(target_os = "linux")]
fn logind_seat() -> Option<Duration> {
    let text = program_output(
        "loginctl",
        &[
            "show-seat",
            "seat0",
            "-p",
            "IdleHint",
            "-p",
            "IdleSinceHint",
        ],
    )?;
    parse_logind(&text, SystemTime::now())
}

/// Idle time from `ioreg -c IOHIDSystem`'s `"HIDIdleTime" = <nanoseconds>`.
pub fn parse_hid_idle(text: &str) -> Option<Duration> {
    let line = text.lines().find(|l| l.contains("\"HIDIdleTime\""))?;
    let ns = line.rsplit('=').next()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

#[cfg(target_os = "macos")]
fn mac_hid_idle() -> Option<Duration> {
    parse_hid_idle(&program_output("ioreg", &["-c", "IOHIDSystem", "-d", "4"])?)
}

/// Windows' own record of the last keyboard or mouse input.
#[cfg(windows)]
struct WindowsLastInput;

#[cfg(windows)]
impl IdleProbe for WindowsLastInput {
    #[allow(unsafe_code)] // two Win32 calls: one fills a struct we own, one reads a counter.
    fn idle_for(&mut self) -> Option<Duration> {
        use windows_sys::Win32::System::SystemInformation::GetTickCount;
        use windows_sys::Win32::UI::Input::KeyboardAndMouse::{GetLastInputInfo, LASTINPUTINFO};
        let mut info = LASTINPUTINFO {
            cbSize: std::mem::size_of::<LASTINPUTINFO>() as u32,
            dwTime: 0,
        };
        // SAFETY: `info` is a valid, initialised LASTINPUTINFO with its size set.
        if unsafe { GetLastInputInfo(&mut info) } == 0 {
            return None;
        }
        // SAFETY: no arguments; reads the system's millisecond counter.
        let now = unsafe { GetTickCount() };
        Some(Duration::from_millis(u64::from(
            now.wrapping_sub(info.dwTime),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_times_give_the_time_since_the_latest_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut probe = DeviceTimes::every_file_in(dir.path().to_path_buf());
        assert_eq!(probe.idle_for(), None, "no device: cannot tell");
        let ago = |d: Duration| SystemTime::now() - d;
        for (name, idle) in [("kbd", 600), ("mouse", 300)] {
            let f = std::fs::File::create(dir.path().join(name)).unwrap();
            let t = ago(Duration::from_secs(idle));
            f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
                .unwrap();
        }
        let idle = probe.idle_for().unwrap();
        assert!(idle >= Duration::from_secs(300) && idle < Duration::from_secs(310));
        std::fs::write(dir.path().join("mouse"), "moved").unwrap();
        assert!(probe.idle_for().unwrap() < Duration::from_secs(5));
    }

    #[test]
    fn logind_and_ioreg_answers_are_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            parse_logind("IdleHint=no\nIdleSinceHint=0\n", now),
            Some(Duration::ZERO)
        );
        let since = (1_000_000 - 420) * 1_000_000u64;
        assert_eq!(
            parse_logind(&format!("IdleHint=yes\nIdleSinceHint={since}\n"), now),
            Some(Duration::from_secs(420))
        );
        assert_eq!(parse_logind("", now), None);
        assert_eq!(parse_logind("IdleHint=yes\n", now), None);
        let ioreg = "    |   \"HIDIdleTime\" = 5000000000\n    |   \"Other\" = 1\n";
        assert_eq!(parse_hid_idle(ioreg), Some(Duration::from_secs(5)));
        assert_eq!(parse_hid_idle("nothing"), None);
    }

    #[test]
    fn the_nearest_input_wins_and_program_answers_are_reused() {
        struct Fixed(Option<Duration>);
        impl IdleProbe for Fixed {
            fn idle_for(&mut self) -> Option<Duration> {
                self.0
            }
        }
        let secs = Duration::from_secs;
        let mut both = Nearest(vec![
            Box::new(Fixed(Some(secs(600)))),
            Box::new(Fixed(None)),
            Box::new(Fixed(Some(secs(30)))),
        ]);
        assert_eq!(both.idle_for(), Some(secs(30)));
        assert_eq!(Nearest(Vec::new()).idle_for(), None);

        let mut cached = Cached::new(|| Some(Duration::from_secs(60)));
        let first = cached.idle_for().unwrap();
        assert!(first >= secs(60));
        assert!(cached.idle_for().unwrap() >= first, "idle keeps growing");
        let mut busy = Cached::new(|| Some(Duration::ZERO));
        assert_eq!(busy.idle_for(), Some(Duration::ZERO));
        assert_eq!(busy.idle_for(), Some(Duration::ZERO));
    }
}
