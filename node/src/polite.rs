//! A polite background node, as BOINC clients are: it computes at the lowest CPU and I/O
//! priority, so whatever the volunteer does comes first, and it stops while the machine runs
//! on battery. The battery probe reads a directory laid out as Linux's
//! `/sys/class/power_supply` (`CANOPY_POWER_SUPPLY_DIR` names another, for tests).

use std::path::{Path, PathBuf};

/// Where Linux describes the machine's power supplies.
pub const POWER_SUPPLY_DIR: &str = "/sys/class/power_supply";
/// Environment variable naming another power-supply directory (tests drive it).
pub const POWER_SUPPLY_ENV: &str = "CANOPY_POWER_SUPPLY_DIR";

/// The priority a node computes at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Priority {
    /// The lowest CPU priority (nice 19) and the idle I/O class: the node uses only what
    /// nothing else wants. The default for volunteers.
    #[default]
    Low,
    /// The priority it was started with: for machines that do nothing else.
    Normal,
}

/// Lowers the calling thread, and every thread it creates from now on, to the lowest CPU
/// priority and (on Linux) the idle I/O class. Call it first thing, before the runtime starts
/// its threads. Elsewhere than Unix it does nothing and says so.
#[allow(unsafe_code)] // two system calls with integer arguments; no safe wrapper in std.
pub fn lower_priority() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        // SAFETY: setpriority only reads its integer arguments.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(target_os = "linux")]
    {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        // SAFETY: ioprio_set takes three integers and touches no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as libc::c_long,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(unix))]
    tracing::info!(
        "--priority low is not applied on this platform: the node runs at normal priority"
    );
    Ok(())
}

/// The power-supply directory: `CANOPY_POWER_SUPPLY_DIR`, else Linux's.
pub fn power_supply_dir() -> PathBuf {
    std::env::var_os(POWER_SUPPLY_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(POWER_SUPPLY_DIR))
}

/// Whether the machine runs on battery now, from a power-supply directory laid out as
/// `/sys/class/power_supply` (one directory per supply with `type`, and `online` or
/// `status`): a battery that is discharging, or mains and USB supplies that are all offline
/// where there is a battery. `None`: no battery is described (a desktop, a server, another
/// platform), so never on battery.
pub fn on_battery(dir: &Path) -> Option<bool> {
    let read = |supply: &Path, file: &str| {
        std::fs::read_to_string(supply.join(file))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let mut battery = false;
    let mut discharging = false;
    let (mut external, mut external_online) = (false, false);
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let supply = entry.path();
        match read(&supply, "type").as_deref() {
            Some("Battery") => {
                battery = true;
                discharging |= read(&supply, "status").as_deref() == Some("Discharging");
            }
            Some("Mains" | "USB" | "USB_C" | "USB_PD") => {
                external = true;
                external_online |= read(&supply, "online").as_deref() == Some("1");
            }
            _ => {}
        }
    }
    battery.then_some(discharging || (external && !external_online))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supply(dir: &Path, name: &str, files: &[(&str, &str)]) {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for (file, text) in files {
            std::fs::write(d.join(file), format!("{text}\n")).unwrap();
        }
    }

    #[test]
    fn battery_is_read_from_the_power_supply_directory() {
        let laptop = tempfile::tempdir().unwrap();
        supply(laptop.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        supply(
            laptop.path(),
            "BAT0",
            &[("type", "Battery"), ("status", "Charging")],
        );
        assert_eq!(on_battery(laptop.path()), Some(false));
        supply(laptop.path(), "AC", &[("online", "0")]);
        assert_eq!(on_battery(laptop.path()), Some(true), "unplugged");
        supply(laptop.path(), "AC", &[("online", "1")]);
        supply(laptop.path(), "BAT0", &[("status", "Discharging")]);
        assert_eq!(on_battery(laptop.path()), Some(true), "discharging");

        // A desktop: mains only, or nothing at all, is never on battery.
        let desktop = tempfile::tempdir().unwrap();
        supply(desktop.path(), "AC", &[("type", "Mains"), ("online", "1")]);
        assert_eq!(on_battery(desktop.path()), None);
        assert_eq!(on_battery(&desktop.path().join("missing")), None);
        // A battery with no status and no external supply described: not on battery.
        let odd = tempfile::tempdir().unwrap();
        supply(odd.path(), "BAT1", &[("type", "Battery")]);
        assert_eq!(on_battery(odd.path()), Some(false));
    }

    #[cfg(target_os = "linux")]
    #[test]
    #[allow(unsafe_code)]
    fn low_priority_is_nice_19_and_idle_io_for_the_thread_and_its_children() {
        // Linux keeps both per thread: lowering one thread leaves the test harness alone.
        let (nice, io, child_nice) = std::thread::spawn(|| {
            lower_priority().unwrap();
            // SAFETY: plain integer calls.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let io = unsafe {
                libc::syscall(libc::SYS_ioprio_get, 1 as libc::c_long, 0 as libc::c_long)
            };
            let child = std::thread::spawn(|| unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) })
                .join()
                .unwrap();
            (nice, io, child)
        })
        .join()
        .unwrap();
        assert_eq!(nice, 19);
        assert_eq!(io >> 13, 3, "the idle I/O class");
        assert_eq!(child_nice, 19, "threads started later inherit it");
    }
}
