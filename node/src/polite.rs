//! A polite background node, as BOINC clients are: it computes at the lowest CPU and I/O
//! priority, so whatever the volunteer does comes first, and it works only when its rules
//! allow: not on battery, inside its daily hours, when the machine is idle if asked to, and
//! for at most a share of the time. [`Rules`] says whether the node may work now and why not;
//! the probes it reads ([`battery`], [`idle`]) can be pointed at test directories.

pub mod battery;
pub mod hours;
pub mod idle;
pub mod throttle;

use std::path::PathBuf;
use std::time::Duration;

pub use hours::Hours;
pub use idle::IdleProbe;

/// When the node works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum When {
    /// Whenever its other rules allow, at low priority beside what the volunteer does.
    #[default]
    Always,
    /// Only once nobody has used the machine for the idle time (`--idle-minutes`).
    Idle,
}

/// The rules that decide whether the node works right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Always, or only when the machine is idle.
    pub when: When,
    /// How long without input makes the machine idle.
    pub idle_after: Duration,
    /// Pause while on battery.
    pub pause_on_battery: bool,
    /// Daily working hours, local time (`None`: all day).
    pub hours: Option<Hours>,
    /// Most share of the time spent computing, in percent (`None`: no cap).
    pub cpu_share: Option<u8>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            when: When::Always,
            idle_after: Duration::from_secs(3 * 60),
            pause_on_battery: true,
            hours: None,
            cpu_share: None,
        }
    }
}

/// What the rules read: the power-supply directory and the idle probe.
pub struct Probes {
    /// The battery probe's directory.
    pub power_dir: PathBuf,
    /// The idle probe.
    pub idle: Box<dyn IdleProbe>,
}

impl Probes {
    /// The machine's probes, or the test directories the environment names.
    pub fn from_env() -> Self {
        Self {
            power_dir: battery::power_supply_dir(),
            idle: idle::probe_from_env(),
        }
    }
}

/// Whole minutes in words.
fn minutes(d: Duration) -> String {
    match d.as_secs() / 60 {
        1 => "1 minute".into(),
        n => format!("{n} minutes"),
    }
}

impl Rules {
    /// Why the node may not work now (in words for `status`), or `None` when it may.
    /// `minute_of_day` is the local time ([`Hours::now_minute`]).
    pub fn why_not(&self, probes: &mut Probes, minute_of_day: u16) -> Option<String> {
        if self.pause_on_battery && battery::on_battery(&probes.power_dir) == Some(true) {
            return Some("on battery".into());
        }
        if let Some(hours) = &self.hours
            && !hours.contains(minute_of_day)
        {
            return Some(format!("outside its working hours ({hours})"));
        }
        if self.when == When::Idle
            && let Some(idle) = probes.idle.idle_for()
            && idle < self.idle_after
        {
            return Some("the machine is in use".into());
        }
        None
    }

    /// The rules in a line for people, such as "works when the machine has been idle for
    /// 3 minutes, 22:00-07:00, at most 50% of the time; pauses on battery".
    pub fn describe(&self) -> String {
        let mut parts = vec![match self.when {
            When::Always => "works whenever allowed".to_owned(),
            When::Idle => format!(
                "works when the machine has been idle for {}",
                minutes(self.idle_after)
            ),
        }];
        if let Some(hours) = &self.hours {
            parts.push(format!("between {hours}"));
        }
        if let Some(share) = self.cpu_share {
            parts.push(format!("at most {share}% of the time"));
        }
        let mut line = parts.join(", ");
        line.push_str(if self.pause_on_battery {
            "; pauses on battery"
        } else {
            "; works on battery too"
        });
        line
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    struct Idle(Option<Duration>);
    impl IdleProbe for Idle {
        fn idle_for(&mut self) -> Option<Duration> {
            self.0
        }
    }

    #[test]
    fn rules_say_why_the_node_may_not_work() {
        let power = tempfile::tempdir().unwrap();
        let probes = |idle: Option<u64>| Probes {
            power_dir: power.path().to_path_buf(),
            idle: Box::new(Idle(idle.map(Duration::from_secs))),
        };
        let noon = 12 * 60;
        let always = Rules::default();
        assert_eq!(always.why_not(&mut probes(Some(0)), noon), None);
        assert_eq!(
            always.describe(),
            "works whenever allowed; pauses on battery"
        );

        let night = Rules {
            when: When::Idle,
            idle_after: Duration::from_secs(300),
            hours: Some("22:00-07:00".parse().unwrap()),
            cpu_share: Some(50),
            ..Rules::default()
        };
        assert_eq!(
            night.why_not(&mut probes(Some(3600)), noon).as_deref(),
            Some("outside its working hours (22:00-07:00)")
        );
        let late = 23 * 60;
        assert_eq!(
            night.why_not(&mut probes(Some(60)), late).as_deref(),
            Some("the machine is in use")
        );
        assert_eq!(night.why_not(&mut probes(Some(300)), late), None);
        assert_eq!(
            night.why_not(&mut probes(None), late),
            None,
            "a machine whose input cannot be seen is taken as idle"
        );
        assert_eq!(
            night.describe(),
            "works when the machine has been idle for 5 minutes, between 22:00-07:00, at most \
             50% of the time; pauses on battery"
        );

        // On battery comes first, unless the volunteer allows it.
        let bat = power.path().join("BAT0");
        std::fs::create_dir_all(&bat).unwrap();
        std::fs::write(bat.join("type"), "Battery\n").unwrap();
        std::fs::write(bat.join("status"), "Discharging\n").unwrap();
        assert_eq!(
            night.why_not(&mut probes(Some(600)), late).as_deref(),
            Some("on battery")
        );
        let on_battery_too = Rules {
            pause_on_battery: false,
            ..night
        };
        assert_eq!(on_battery_too.why_not(&mut probes(Some(600)), late), None);
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
