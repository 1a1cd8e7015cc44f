//! `[dashboard]`: where the dashboard listens, its tokens, and HTTPS.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checks::is_host_port;
use super::{ConfigError, Validator, empty_string_is_none};

/// `[dashboard]`: the local web dashboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// `host:port` to serve on; `None` (written `""` in the file) disables it.
    #[serde(with = "empty_string_is_none")]
    pub listen: Option<String>,
    /// Bearer token for the changing actions (ban, allowlist, pause, resume); `None`
    /// (written `""`) turns those actions off. At least 16 characters, no spaces.
    #[serde(with = "empty_string_is_none")]
    pub token: Option<String>,
    /// Bearer token for the reads that show volunteers' names, organisations and countries
    /// (`/api/peers`, `/api/contributors`); `None` (written `""`): those reads are open.
    #[serde(with = "empty_string_is_none")]
    pub read_token: Option<String>,
    /// PEM certificate chain for HTTPS (with `tls_key`); `None` (`""`): plain HTTP.
    /// Relative to the project directory.
    #[serde(with = "empty_string_is_none")]
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    #[serde(with = "empty_string_is_none")]
    pub tls_key: Option<String>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            listen: Some("127.0.0.1:8080".to_owned()),
            token: None,
            read_token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl DashboardConfig {
    /// The certificate and key files, relative paths resolved against `project`, when both
    /// are set.
    pub fn tls_files(&self, project: &Path) -> Option<(PathBuf, PathBuf)> {
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        Some((project.join(cert), project.join(key)))
    }

    /// Where to serve given a `--http` flag: the flag wins (`""` turns the dashboard off, as
    /// `listen = ""` does), else `config`'s `listen`, else (no configuration: the demo) none.
    pub fn listen_with(flag: Option<&str>, config: Option<&Self>) -> Option<String> {
        match flag {
            Some("") => None,
            Some(flag) => Some(flag.to_owned()),
            None => config.and_then(|c| c.listen.clone()),
        }
    }

    /// Whether the file holds a secret (a token), so should be readable by its owner only.
    pub fn holds_secret(&self) -> bool {
        self.token.is_some() || self.read_token.is_some()
    }

    pub(super) fn check(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        if let Some(listen) = &self.listen {
            v.ensure(
                is_host_port(listen),
                "dashboard.listen",
                format_args!(
                    "must be \"host:port\" such as \"127.0.0.1:8080\", or \"\" to disable the dashboard (got {listen:?})"
                ),
            )?;
        }
        for (key, token, off) in [
            (
                "dashboard.token",
                &self.token,
                "turn the changing actions off",
            ),
            (
                "dashboard.read_token",
                &self.read_token,
                "leave the reads open",
            ),
        ] {
            if let Some(token) = token {
                v.ensure(
                    token_ok(token),
                    key,
                    format_args!(
                        "must be 16 to 256 printable ASCII characters without spaces, or \"\" to {off} (got {} characters)",
                        token.len()
                    ),
                )?;
            }
        }
        v.ensure(
            self.tls_cert.is_some() == self.tls_key.is_some(),
            "dashboard.tls_cert",
            "and dashboard.tls_key go together: set both for HTTPS, or neither",
        )
    }
}

/// Whether `token` is acceptable as the dashboard's bearer token.
pub fn token_ok(token: &str) -> bool {
    token.len() >= 16 && token.len() <= 256 && token.bytes().all(|b| b.is_ascii_graphic())
}
