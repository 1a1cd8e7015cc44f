//! Daily working hours: the node works only inside them, in the machine's local time, as
//! BOINC's "compute only between" setting.

use std::fmt;
use std::str::FromStr;

/// Minutes in a day.
const DAY: u16 = 24 * 60;
/// Most windows one setting may list.
const MAX_WINDOWS: usize = 24;

/// One or more daily windows such as `22:00-07:00` or `09:00-12:00,13:00-17:00`, local time.
/// A window that ends before it starts runs past midnight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hours(Vec<(u16, u16)>);

/// Why a working-hours setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HoursError {
    /// A window is not `HH:MM-HH:MM`.
    #[error("{0:?} is not a window such as 22:00-07:00 (HH:MM-HH:MM, 24-hour clock)")]
    Form(String),
    /// A window starts and ends at the same minute.
    #[error(
        "{0:?} is empty: it starts and ends at the same time (leave the setting out to work all day)"
    )]
    Empty(String),
    /// Too many windows.
    #[error("at most {MAX_WINDOWS} windows")]
    TooMany,
}

/// `HH:MM` as minutes since midnight; `24:00` is the end of the day.
fn minute(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(DAY),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

impl FromStr for Hours {
    type Err = HoursError;

    fn from_str(text: &str) -> Result<Self, HoursError> {
        let mut windows = Vec::new();
        for part in text.split(',') {
            let (start, end) = part
                .split_once('-')
                .and_then(|(s, e)| Some((minute(s)?, minute(e)?)))
                .ok_or_else(|| HoursError::Form(part.trim().to_owned()))?;
            if start % DAY == end {
                return Err(HoursError::Empty(part.trim().to_owned()));
            }
            windows.push((start % DAY, end));
        }
        if windows.len() > MAX_WINDOWS {
            return Err(HoursError::TooMany);
        }
        Ok(Self(windows))
    }
}

impl Hours {
    /// Whether `minute_of_day` (0..1440, local time) falls inside one of the windows.
    pub fn contains(&self, minute_of_day: u16) -> bool {
        self.0.iter().any(|&(start, end)| {
            if start < end {
                (start..end).contains(&minute_of_day)
            } else {
                minute_of_day >= start || minute_of_day < end
            }
        })
    }

    /// The local time now as minutes since midnight.
    pub fn now_minute() -> u16 {
        use chrono::Timelike;
        let now = chrono::Local::now();
        (now.hour() * 60 + now.minute()) as u16
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (start, end)) in self.0.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(
                f,
                "{sep}{:02}:{:02}-{:02}:{:02}",
                start / 60,
                start % 60,
                end / 60,
                end % 60
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> u16 {
        minute(text).unwrap()
    }

    #[test]
    fn windows_are_parsed_and_cover_what_they_say() {
        let day: Hours = "09:00-12:00, 13:30-17:00".parse().unwrap();
        assert_eq!(day.to_string(), "09:00-12:00,13:30-17:00");
        assert!(!day.contains(at("08:59")));
        assert!(day.contains(at("09:00")));
        assert!(day.contains(at("11:59")));
        assert!(!day.contains(at("12:00")), "the end is not included");
        assert!(!day.contains(at("13:00")));
        assert!(day.contains(at("16:30")));

        let night: Hours = "22:00-07:00".parse().unwrap();
        assert!(night.contains(at("23:30")));
        assert!(night.contains(at("00:00")));
        assert!(night.contains(at("06:59")));
        assert!(!night.contains(at("07:00")));
        assert!(!night.contains(at("12:00")));

        let evening: Hours = "18:00-24:00".parse().unwrap();
        assert!(evening.contains(at("23:59")));
        assert!(!evening.contains(at("00:00")));
        let all: Hours = "0:00-24:00".parse().unwrap();
        assert!(all.contains(0) && all.contains(DAY - 1));
    }

    #[test]
    fn bad_windows_are_refused_with_the_reason() {
        for bad in [
            "9-17",
            "25:00-26:00",
            "09:60-10:00",
            "nine-five",
            "",
            "09:00",
        ] {
            assert!(
                matches!(bad.parse::<Hours>(), Err(HoursError::Form(_))),
                "{bad}"
            );
        }
        assert_eq!(
            "08:00-08:00".parse::<Hours>(),
            Err(HoursError::Empty("08:00-08:00".into()))
        );
        assert_eq!(
            "00:00-24:00,".parse::<Hours>(),
            Err(HoursError::Form(String::new()))
        );
        let many = vec!["01:00-02:00"; MAX_WINDOWS + 1].join(",");
        assert_eq!(many.parse::<Hours>(), Err(HoursError::TooMany));
    }
}
