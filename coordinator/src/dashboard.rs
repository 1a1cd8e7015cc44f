//! The coordinator's HTTP server: the dashboard page a coordinator leaves open in a browser,
//! its JSON API, Prometheus `/metrics`, and a few token-guarded actions (ban a node, allowlist
//! a key, pause and resume the project).
//!
//! The server never touches the coordinator's own database connection: it reads through a
//! read-only connection of its own and writes through short-lived connections, always inside
//! `spawn_blocking`, so a slow request never stalls the event loop that answers nodes.
//!
//! - [`api`]: the routes and their JSON.
//! - [`metrics`]: the counters the service updates and the `/metrics` text.
//! - `page`: the embedded single-file page.
//! - [`tls`]: HTTPS, when `dashboard.tls_cert` and `dashboard.tls_key` are set.

pub mod api;
pub mod metrics;
mod page;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use metrics::Metrics;

/// What can go wrong starting the HTTP server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// The listen address could not be bound.
    #[error("the dashboard cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS certificate or key cannot be used.
    #[error("dashboard TLS: {path}: {reason}")]
    Tls {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Serving stopped with an I/O error.
    #[error("the dashboard stopped: {0}")]
    Serve(#[source] std::io::Error),
}

/// Facts about the project that the state database does not hold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectInfo {
    /// The project's name.
    pub name: String,
    /// Rounds the run trains for.
    pub rounds: u32,
    /// The coordinator's peer id.
    pub peer: String,
}

/// A bound, not yet serving, dashboard listener: bind first (to print the real address,
/// also for port 0), then [`Listener::serve`].
pub struct Listener {
    listener: tokio::net::TcpListener,
    tokens: api::Tokens,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds `addr` (`host:port`). `tokens.admin` guards the changing actions (without one
    /// they are refused); `tokens.read`, when set, the reads that show volunteers' names and
    /// countries.
    pub async fn bind(addr: &str, tokens: api::Tokens) -> Result<Self, DashboardError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DashboardError::Bind {
                addr: addr.to_owned(),
                source,
            })?;
        Ok(Self {
            listener,
            tokens,
            tls: None,
        })
    }

    /// Serves HTTPS with the PEM certificate chain `cert` and private key `key`.
    pub fn with_tls(
        mut self,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, DashboardError> {
        self.tls = Some(tls::acceptor(cert, key)?);
        Ok(self)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr, DashboardError> {
        self.listener.local_addr().map_err(DashboardError::Serve)
    }

    /// The page's URL.
    pub fn url(&self) -> Result<String, DashboardError> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Ok(format!("{scheme}://{}/", self.local_addr()?))
    }

    /// Serves the dashboard of the state database `db` until `shutdown` resolves. The
    /// database may not exist yet (the API answers 503 until it does).
    pub async fn serve(
        self,
        db: PathBuf,
        info: ProjectInfo,
        metrics: Arc<Metrics>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let app = api::router(api::App::new(db, info, metrics, self.tokens));
        match self.tls {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(self.listener, acceptor)
                    .map_err(DashboardError::Serve)?;
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            None => {
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .map_err(DashboardError::Serve)
    }

    /// [`Listener::serve`] as a background task that logs how it ended.
    pub fn spawn(
        self,
        db: PathBuf,
        info: ProjectInfo,
        metrics: Arc<Metrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let pending = std::future::pending::<()>();
            if let Err(e) = self.serve(db, info, metrics, pending).await {
                tracing::warn!("{e}");
            }
        })
    }
}
