//! The checks of configuration values, each failing with a [`ConfigError::Invalid`] that
//! names the key and what is allowed.

use std::fmt::Display;

use super::ConfigError;

/// Builds [`ConfigError::Invalid`] errors for one origin.
pub(super) struct Validator<'a> {
    /// Where the values came from.
    pub(super) origin: &'a str,
}

impl Validator<'_> {
    /// Fails with `reason` for `key` unless `ok`.
    pub(super) fn ensure(
        &self,
        ok: bool,
        key: &'static str,
        reason: impl Display,
    ) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                origin: self.origin.to_owned(),
                key,
                reason: reason.to_string(),
            })
        }
    }

    /// Bits per value of a low-bit codec: 2 to 8.
    pub(super) fn bits(&self, key: &'static str, bits: u8) -> Result<(), ConfigError> {
        let reason = format_args!("must be 2 to 8 (got {bits})");
        self.ensure((2..=8).contains(&bits), key, reason)
    }

    /// An integer at least `min`.
    pub(super) fn at_least<T: PartialOrd + Display>(
        &self,
        key: &'static str,
        value: T,
        min: T,
    ) -> Result<(), ConfigError> {
        let ok = value >= min;
        self.ensure(
            ok,
            key,
            format_args!("must be at least {min} (got {value})"),
        )
    }

    /// A finite number above 0.
    pub(super) fn positive<T: Into<f64> + Copy + Display>(
        &self,
        key: &'static str,
        value: T,
    ) -> Result<(), ConfigError> {
        let x: f64 = value.into();
        self.ensure(
            x.is_finite() && x > 0.0,
            key,
            format_args!("must be a finite number above 0 (got {value})"),
        )
    }

    /// A finite number at least 0.
    pub(super) fn non_negative<T: Into<f64> + Copy + Display>(
        &self,
        key: &'static str,
        value: T,
    ) -> Result<(), ConfigError> {
        let x: f64 = value.into();
        self.ensure(
            x.is_finite() && x >= 0.0,
            key,
            format_args!("must be a finite number of at least 0 (got {value})"),
        )
    }

    /// A number in (0, 1].
    pub(super) fn unit_interval<T: Into<f64> + Copy + Display>(
        &self,
        key: &'static str,
        value: T,
    ) -> Result<(), ConfigError> {
        let x: f64 = value.into();
        self.ensure(
            x > 0.0 && x <= 1.0,
            key,
            format_args!("must be above 0 and at most 1 (got {value})"),
        )
    }

    /// A number strictly between `low` and `high`.
    pub(super) fn open_range(
        &self,
        key: &'static str,
        value: f64,
        low: f64,
        high: f64,
    ) -> Result<(), ConfigError> {
        self.ensure(
            value > low && value < high,
            key,
            format_args!("must be above {low} and below {high} (got {value})"),
        )
    }
}
