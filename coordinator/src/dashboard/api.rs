//! The dashboard's routes.
//!
//! Reads are open: `GET /`, `/api/status`, `/api/rounds`, `/api/corpus`, `/metrics`, and
//! `/api/peers` and `/api/contributors` (which show volunteers' names, organisations and
//! countries) unless `dashboard.read_token` is set: then they need `Authorization: Bearer`
//! with it or with the changing actions' token. Changing actions need
//! `Authorization: Bearer <token>`:
//! `POST /api/peers/{peer}/ban`, `POST /api/peers/{peer}/unban`, `POST /api/allowlist`
//! (`{"peer": …, "tier": "datacenter" | "volunteer"}`), `POST /api/pause`, `POST /api/resume`.
//! Errors are JSON `{"error": "…"}` with 400 (bad input), 401 (token), 404 (unknown node),
//! 503 (no database yet) or 500.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::ProjectInfo;
use super::metrics::{Metrics, StateGauges};
use super::page::DASHBOARD_HTML;
use crate::project::now_ms;
use crate::state::{self, Contributors, CorpusBuildRecord, Reader, RoundRecord, State};

use crate::scheduler::ACTIVE_MS;
use canopy_protocol::messages::Tier;

/// An API error: its status and a message for people.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The bearer token is missing or wrong.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The node is unknown.
    #[error("{0}")]
    NotFound(String),
    /// The state database is not there yet.
    #[error("the project's state database does not exist yet")]
    Unavailable,
    /// The coordinator failed.
    #[error("{0}")]
    Internal(String),
}

impl From<state::StateError> for ApiError {
    fn from(e: state::StateError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if let ApiError::Internal(e) = &self {
            tracing::warn!("dashboard request failed: {e}");
        }
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED
            && let Ok(v) = header::HeaderValue::from_str("Bearer realm=\"canopy\"")
        {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        response
    }
}

/// The server's shared state.
#[derive(Debug, Clone)]
pub struct App {
    db: PathBuf,
    info: ProjectInfo,
    metrics: Arc<Metrics>,
    tokens: Tokens,
    reader: Arc<Mutex<Option<State>>>,
}

/// The dashboard's bearer tokens.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// For the changing actions (and every read); `None`: the actions are off.
    pub admin: Option<String>,
    /// For the reads that show volunteers' names and countries; `None`: those are open.
    pub read: Option<String>,
}

impl App {
    /// The state for serving database `db`.
    pub fn new(db: PathBuf, info: ProjectInfo, metrics: Arc<Metrics>, tokens: Tokens) -> Self {
        Self {
            db,
            info,
            metrics,
            tokens,
            reader: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `f` on the read-only connection, on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Reader<'_>) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let db = self.db.clone();
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = reader.lock().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                if !db.exists() {
                    return Err(ApiError::Unavailable);
                }
                *guard = Some(State::open_read_only(&db)?);
            }
            match guard.as_ref() {
                Some(state) => f(&state.read()),
                None => Err(ApiError::Unavailable),
            }
        })
        .await
        .map_err(|e| ApiError::Internal(format!("a dashboard read failed: {e}")))?
    }

    /// Runs `f` in a transaction on a connection of its own, on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&state::Tx<'_>) -> Result<T, state::StateError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            if !db.exists() {
                return Err(ApiError::Unavailable);
            }
            let mut state = State::open(&db)?;
            Ok(state.transaction(f)?)
        })
        .await
        .map_err(|e| ApiError::Internal(format!("a dashboard write failed: {e}")))?
    }

    /// Checks the bearer token of a changing request.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = self.tokens.admin.as_deref() else {
            return Err(ApiError::Unauthorized(
                "changing actions are off: set dashboard.token in canopy.toml (or --http-token)",
            ));
        };
        let given = bearer(headers).ok_or(ApiError::Unauthorized(
            "this action needs an Authorization: Bearer <token> header",
        ))?;
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return Err(ApiError::Unauthorized("wrong token"));
        }
        Ok(())
    }

    /// Checks the bearer token of a read that shows volunteers' names and countries.
    fn authorize_private_read(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(read) = self.tokens.read.as_deref() else {
            return Ok(());
        };
        let given = bearer(headers).ok_or(ApiError::Unauthorized(
            "names and countries are private here: send Authorization: Bearer <read token>",
        ))?;
        let admin = self.tokens.admin.as_deref();
        if constant_time_eq(given.as_bytes(), read.as_bytes())
            || admin.is_some_and(|a| constant_time_eq(given.as_bytes(), a.as_bytes()))
        {
            Ok(())
        } else {
            Err(ApiError::Unauthorized("wrong token"))
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The routes.
pub fn router(app: App) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/status", get(status))
        .route("/api/rounds", get(rounds))
        .route("/api/peers", get(peers))
        .route("/api/contributors", get(contributors))
        .route("/api/corpus", get(corpus))
        .route("/metrics", get(metrics))
        .route("/api/peers/{peer}/ban", post(ban))
        .route("/api/peers/{peer}/unban", post(unban))
        .route("/api/allowlist", post(allowlist))
        .route("/api/pause", post(pause))
        .route("/api/resume", post(resume))
        .fallback(not_found)
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such page; the API is under /api/ and /metrics".into())
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD_HTML,
    )
}

/// `/api/status`: the run at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The project.
    pub project: ProjectInfo,
    /// The round in progress (the last one once training has finished).
    pub round: u64,
    /// Rounds closed.
    pub rounds_completed: u64,
    /// Whether every round has closed.
    pub finished: bool,
    /// Whether the project is paused (no new leases).
    pub paused: bool,
    /// Tasks of the current round (training and verification), cancelled ones left out.
    pub tasks_total: u64,
    /// Of those, done.
    pub tasks_done: u64,
    /// Leases held now.
    pub leases_active: u64,
    /// Held-out loss of the initial model.
    pub initial_eval_loss: Option<f64>,
    /// Training loss of the last closed round.
    pub train_loss: Option<f64>,
    /// Held-out loss of the last closed round.
    pub eval_loss: Option<f64>,
    /// The same in bits per byte of held-out text (comparable across tokenizers).
    pub eval_bits_per_byte: Option<f64>,
    /// What the final model writes after fixed prompts (once the run has finished).
    pub samples: Vec<crate::samples::Sample>,
    /// Measured throughput of the active nodes together.
    pub tokens_per_sec: f64,
    /// Training tokens in accepted results, in all.
    pub tokens_total: u64,
    /// Known nodes.
    pub peers: u64,
    /// Nodes heard from in the last minute.
    pub peers_active: u64,
    /// Update bytes received, over closed rounds.
    pub bytes_in: u64,
    /// Model and data bytes served, over closed rounds.
    pub bytes_out: u64,
    /// When this was read (ms since the epoch).
    pub now_ms: u64,
}

fn read_status(r: &Reader<'_>, info: &ProjectInfo) -> Result<Status, ApiError> {
    let now = now_ms();
    let rounds = r.rounds()?;
    let closed: Vec<&RoundRecord> = rounds.iter().filter(|x| x.closed_ms.is_some()).collect();
    let last = closed.last();
    let round = rounds.last().map_or(0, |x| x.round);
    let mut tasks_total = 0;
    let mut tasks_done = 0;
    for (status, n) in r.task_counts(round)? {
        match status.as_str() {
            "cancelled" => {}
            "done" => {
                tasks_total += n;
                tasks_done += n;
            }
            _ => tasks_total += n,
        }
    }
    let peers = r.peers()?;
    let active: Vec<_> = peers
        .iter()
        .filter(|p| !p.banned && now.saturating_sub(p.last_seen_ms) < ACTIVE_MS)
        .collect();
    let contributors = r.contributions(state::ContributorGroup::Country)?;
    Ok(Status {
        project: info.clone(),
        round,
        rounds_completed: closed.len() as u64,
        finished: closed.len() as u64 >= u64::from(info.rounds),
        paused: r.paused()?,
        tasks_total,
        tasks_done,
        leases_active: r.active_leases(None)?.len() as u64,
        initial_eval_loss: r.meta("initial_eval_loss")?.and_then(|v| v.parse().ok()),
        train_loss: last.and_then(|x| x.train_loss),
        eval_loss: last.and_then(|x| x.eval_loss),
        eval_bits_per_byte: last.and_then(|x| x.eval_loss).and_then(|loss| {
            let per_token = r.meta(crate::samples::BYTES_PER_TOKEN_META).ok()??;
            Some(crate::samples::bits_per_byte(loss, per_token.parse().ok()?))
        }),
        samples: r
            .meta(crate::samples::SAMPLES_META)?
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default(),
        tokens_per_sec: active.iter().filter_map(|p| p.tokens_per_sec).sum(),
        tokens_total: contributors
            .iter()
            .fold(0u64, |n, c| n.saturating_add(c.tokens)),
        peers: peers.len() as u64,
        peers_active: active.len() as u64,
        bytes_in: rounds.iter().map(|x| x.bytes_in).sum(),
        bytes_out: rounds.iter().map(|x| x.bytes_out).sum(),
        now_ms: now,
    })
}

async fn status(AxumState(app): AxumState<App>) -> Result<Json<Status>, ApiError> {
    let info = app.info.clone();
    Ok(Json(app.read(move |r| read_status(r, &info)).await?))
}

/// `/api/rounds`: the loss curve and per-round counts.
#[derive(Debug, Clone, Serialize)]
pub struct Rounds {
    /// Held-out loss of the initial model (the curve's starting point).
    pub initial_eval_loss: Option<f64>,
    /// Every round, oldest first.
    pub rounds: Vec<RoundRecord>,
}

async fn rounds(AxumState(app): AxumState<App>) -> Result<Json<Rounds>, ApiError> {
    Ok(Json(
        app.read(|r| {
            Ok(Rounds {
                initial_eval_loss: r.meta("initial_eval_loss")?.and_then(|v| v.parse().ok()),
                rounds: r.rounds()?,
            })
        })
        .await?,
    ))
}

/// One node as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerView {
    /// Its peer id.
    pub peer: String,
    /// Its tier.
    pub tier: Tier,
    /// Self-declared display name.
    pub name: Option<String>,
    /// Self-declared organisation.
    pub org: Option<String>,
    /// Self-declared country.
    pub country: Option<String>,
    /// The compute it said it runs on.
    pub adapter: Option<String>,
    /// Reputation points.
    pub reputation: i64,
    /// Whether it is banned.
    pub banned: bool,
    /// Measured training throughput.
    pub tokens_per_sec: Option<f64>,
    /// Leases it holds now.
    pub leases: u64,
    /// When it was last heard from (ms since the epoch).
    pub last_seen_ms: u64,
    /// Whether it was heard from in the last minute.
    pub active: bool,
}

async fn peers(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
) -> Result<Json<Vec<PeerView>>, ApiError> {
    app.authorize_private_read(&headers)?;
    Ok(Json(
        app.read(|r| {
            let now = now_ms();
            let adapters = r.peer_adapters()?;
            let leases = r.active_leases(None)?;
            Ok(r.peers()?
                .into_iter()
                .map(|p| PeerView {
                    adapter: adapters.get(&p.peer).cloned(),
                    leases: leases.iter().filter(|l| l.peer == p.peer).count() as u64,
                    active: !p.banned && now.saturating_sub(p.last_seen_ms) < ACTIVE_MS,
                    peer: p.peer,
                    tier: p.tier,
                    name: p.name,
                    org: p.org,
                    country: p.country,
                    reputation: p.reputation,
                    banned: p.banned,
                    tokens_per_sec: p.tokens_per_sec,
                    last_seen_ms: p.last_seen_ms,
                })
                .collect())
        })
        .await?,
    ))
}

async fn contributors(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
) -> Result<Json<Contributors>, ApiError> {
    app.authorize_private_read(&headers)?;
    Ok(Json(app.read(|r| Ok(r.contributors()?)).await?))
}

/// `/api/corpus`: corpus builds, newest first (empty when none ran).
#[derive(Debug, Clone, Serialize)]
pub struct Corpus {
    /// The builds.
    pub builds: Vec<CorpusBuildRecord>,
}

async fn corpus(AxumState(app): AxumState<App>) -> Result<Json<Corpus>, ApiError> {
    Ok(Json(
        app.read(|r| {
            Ok(Corpus {
                builds: r.corpus_builds()?,
            })
        })
        .await?,
    ))
}

async fn metrics(AxumState(app): AxumState<App>) -> Result<Response, ApiError> {
    let gauges = app
        .read(|r| {
            let rounds = r.rounds()?;
            let closed: Vec<&RoundRecord> =
                rounds.iter().filter(|x| x.closed_ms.is_some()).collect();
            let peers = r.peers()?;
            let mut by_tier: Vec<(String, u64)> = Vec::new();
            for p in peers.iter().filter(|p| !p.banned) {
                match by_tier.iter_mut().find(|(t, _)| t == p.tier.as_str()) {
                    Some((_, n)) => *n += 1,
                    None => by_tier.push((p.tier.to_string(), 1)),
                }
            }
            Ok(StateGauges {
                rounds_completed: closed.len() as u64,
                current_round: rounds.last().map_or(0, |x| x.round),
                train_loss: closed.last().and_then(|x| x.train_loss),
                eval_loss: closed.last().and_then(|x| x.eval_loss),
                peers_by_tier: by_tier,
                banned_peers: peers.iter().filter(|p| p.banned).count() as u64,
                active_leases: r.active_leases(None)?.len() as u64,
                paused: r.paused()?,
                round_durations: rounds
                    .iter()
                    .filter_map(|x| {
                        let closed = x.closed_ms?;
                        Some((x.round, closed.saturating_sub(x.opened_ms) as f64 / 1000.0))
                    })
                    .collect(),
                last_closed_ms: closed.last().and_then(|x| x.closed_ms),
            })
        })
        .await?;
    let text = app
        .metrics
        .render(&gauges)
        .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// The answer to a changing action.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    /// Always true.
    pub ok: bool,
    /// What changed.
    pub message: String,
}

fn done(message: String) -> Json<Done> {
    tracing::info!("dashboard: {message}");
    Json(Done { ok: true, message })
}

fn parse_peer(peer: &str) -> Result<String, ApiError> {
    peer.parse::<libp2p::PeerId>()
        .map(|p| p.to_string())
        .map_err(|_| ApiError::BadRequest(format!("{peer:?} is not a peer id")))
}

async fn set_ban(
    app: &App,
    headers: &HeaderMap,
    peer: &str,
    ban: bool,
) -> Result<Json<Done>, ApiError> {
    app.authorize(headers)?;
    let peer = parse_peer(peer)?;
    let p = peer.clone();
    if !app.write(move |tx| tx.set_banned(&p, ban)).await? {
        return Err(ApiError::NotFound(format!("no node {peer} has joined")));
    }
    Ok(done(format!(
        "{peer} {}",
        if ban { "banned" } else { "unbanned" }
    )))
}

async fn ban(
    AxumState(app): AxumState<App>,
    Path(peer): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Done>, ApiError> {
    set_ban(&app, &headers, &peer, true).await
}

async fn unban(
    AxumState(app): AxumState<App>,
    Path(peer): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Done>, ApiError> {
    set_ban(&app, &headers, &peer, false).await
}

/// The body of `POST /api/allowlist`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRequest {
    /// The node's peer id.
    pub peer: String,
    /// `datacenter` or `volunteer`.
    pub tier: String,
}

async fn allowlist(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Done>, ApiError> {
    app.authorize(&headers)?;
    let req: AllowRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be JSON {{\"peer\": \"<peer id>\", \"tier\": \"datacenter\"|\"volunteer\"}}: {e}"
        ))
    })?;
    let peer = parse_peer(&req.peer)?;
    let tier: Tier = req
        .tier
        .parse()
        .map_err(|e: canopy_protocol::messages::UnknownTier| ApiError::BadRequest(e.to_string()))?;
    let p = peer.clone();
    app.write(move |tx| tx.allow(&p, tier, now_ms())).await?;
    Ok(done(format!("{peer} admitted to the {tier} tier")))
}

async fn pause(AxumState(app): AxumState<App>, headers: HeaderMap) -> Result<Json<Done>, ApiError> {
    app.authorize(&headers)?;
    app.write(|tx| tx.set_paused(true)).await?;
    Ok(done("project paused: no new leases until resumed".into()))
}

async fn resume(
    AxumState(app): AxumState<App>,
    headers: HeaderMap,
) -> Result<Json<Done>, ApiError> {
    app.authorize(&headers)?;
    app.write(|tx| tx.set_paused(false)).await?;
    Ok(done("project resumed".into()))
}
