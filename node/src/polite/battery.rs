//! The battery probe: whether the machine runs on battery, read from a directory laid out as
//! Linux's `/sys/class/power_supply` (`CANOPY_POWER_SUPPLY_DIR` names another, for tests).

use std::path::{Path, PathBuf};

/// Where Linux describes the machine's power supplies.
pub const POWER_SUPPLY_DIR: &str = "/sys/class/power_supply";
/// Environment variable naming another power-supply directory (tests drive it).
pub const POWER_SUPPLY_ENV: &str = "CANOPY_POWER_SUPPLY_DIR";

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
}
