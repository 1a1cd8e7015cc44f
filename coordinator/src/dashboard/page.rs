//! The dashboard page: one self-contained HTML file (inline CSS, vanilla JavaScript, inline
//! SVG; no external assets) that polls the JSON API every two seconds.

/// The page, embedded at build time.
pub(crate) const DASHBOARD_HTML: &str = include_str!("dashboard.html");
