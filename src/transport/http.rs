//! The HTTP side of the one listener: the WebSocket upgrade at `/v1/ws`,
//! the JSON API of PROTOCOL.md, `/metrics`, `/healthz` and the browser
//! pages (`pages`). Errors use the same `{code, message}` body as WebSocket
//! errors, with a matching status.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tungstenite::protocol::WebSocketConfig;

use super::api_error::ApiError;
use super::forward;
use super::routes::{Route, register};
use super::server::TcpSlot;
use super::upgrade::Upgrade;
use crate::app::{App, Place};
use crate::case::Status;
use crate::core::{Broker, ListQuery, Who, limits, stored, take_ack};
use crate::directory::Agent;
use crate::error::Error;
use crate::protocol::{
    AssignBody, CreateCase, ErrorCode, InviteBody, RequestHelp, TransferBody, WhisperBody,
};

/// The whole router, testable without a server. `/metrics` is left out
/// when it has a listener of its own (`metrics_listen`), so that it need
/// not be reachable where clients are.
pub fn app(state: App, metrics_here: bool) -> Router {
    let max = state.broker.config().max_message_bytes;
    register(Router::new(), routes(metrics_here))
        .fallback(|| async { ApiError(Error::new(ErrorCode::NotFound, "no such endpoint")) })
        .method_not_allowed_fallback(|| async {
            ApiError(Error::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this path",
            ))
        })
        .layer(axum::extract::DefaultBodyLimit::max(max))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::forward_http,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body_in_time,
        ))
        .layer(axum::middleware::map_response(api_headers))
        .with_state(state)
}

/// Every route of the broker's listener: the API here, the admin API
/// (`admin`) and the pages (`pages`); `/metrics` only when `metrics_here`.
/// `proto/openapi.json` describes each of them (a test checks it).
pub fn routes(metrics_here: bool) -> Vec<Route> {
    let mut table = vec![
        Route::get("/v1/ws", ws_upgrade),
        Route::post("/v1/cases", create_case),
        Route::get("/v1/cases", list_cases),
        Route::get("/v1/cases/{code}", get_case),
        Route::delete("/v1/cases/{code}", delete_case),
        Route::post("/v1/cases/{code}/assign", assign),
        Route::post("/v1/cases/{code}/transfer", transfer),
        Route::post("/v1/cases/{code}/invite", invite),
        Route::post("/v1/cases/{code}/whisper", whisper),
        Route::post("/v1/cases/{code}/close", close),
        Route::post("/v1/cases/{code}/accept", accept),
        Route::post("/v1/cases/{code}/decline", decline),
        Route::get("/v1/cases/{code}/transcript", transcript),
        Route::get("/v1/cases/{code}/routing", routing),
        Route::post("/v1/help", help),
        Route::get("/v1/modules/{key}", module),
        Route::get("/v1/agents", agents),
        Route::get("/v1/groups", groups),
        Route::get("/v1/stats", stats),
        Route::get("/healthz", healthz),
    ];
    if metrics_here {
        table.push(Route::get("/metrics", metrics));
    }
    table.extend(super::admin::routes());
    table.extend(super::feed::routes());
    table.extend(super::webhooks::routes());
    table.extend(super::pages::routes());
    table
}

/// Reads a request's whole body (within `max_message_bytes`) before its
/// handler runs, within `request_timeout`: a client that sends headers and
/// then trickles its body, or never sends it, gets 408 and loses the
/// connection instead of holding it.
async fn body_in_time(
    State(app): State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = app.broker.config();
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, config.max_message_bytes);
    match tokio::time::timeout(config.request_timeout, read).await {
        Ok(Ok(bytes)) => {
            next.run(axum::extract::Request::from_parts(parts, bytes.into()))
                .await
        }
        Ok(Err(_)) => ApiError(Error::too_large("request body too large")).into_response(),
        Err(_) => {
            app.broker.metrics().refused("request_timeout");
            let mut response = ApiError(Error::new(
                ErrorCode::Timeout,
                "the request body did not arrive in time",
            ))
            .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

/// Every answer is kept by no cache and read as the type it says it is,
/// unless its route says otherwise (the pages' assets are revalidated).
async fn api_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.entry(header::CACHE_CONTROL)
        .or_insert(header::HeaderValue::from_static("no-store"));
    h.entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(header::HeaderValue::from_static("nosniff"));
    response
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

/// Runs a command and answers once what it changed is stored (at once
/// when nothing is journaled).
/// In a cluster, `shard` (the company the command changes) is held first;
/// when another node decides it, the request runs there instead
/// ([`forward::forward_http`]).
pub(super) async fn acknowledged<T>(
    app: &App,
    shard: Option<usize>,
    command: impl FnOnce() -> crate::error::Result<T>,
) -> ApiResult<T> {
    let hold = match app.place(shard).await? {
        Place::Here(hold) => hold,
        Place::There { node, shard } => return Err(forward::elsewhere(node, shard)),
    };
    // Whatever an earlier task left on this thread is not ours.
    let _ = take_ack();
    let out = command();
    let ack = take_ack();
    drop(hold);
    let out = out?;
    stored(ack).await?;
    Ok(out)
}

/// The agent behind `Authorization: Bearer <token>`.
pub struct AuthAgent(pub Arc<Agent>);

impl FromRequestParts<App> for AuthAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let agent = match token {
            Some(t) => app.authenticate(t).await,
            None => None,
        };
        match agent {
            Some(agent) => Ok(AuthAgent(agent)),
            None => Err(ApiError(Error::unauthorized(
                "a valid Authorization: Bearer token is required",
            ))),
        }
    }
}

/// A path parameter. A path that does not decode (a percent-escape that
/// is not UTF-8) is 400 `bad_request` with the JSON error body, as every
/// other refusal of the API, rather than axum's plain-text answer.
pub struct PathParam<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<App> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, app).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(e) => Err(ApiError(Error::bad_request(e.body_text()))),
        }
    }
}

/// Parses a JSON body with the contract's error codes (400 for bad JSON,
/// 413 past the size limit).
pub(super) fn body<T: DeserializeOwned>(raw: Result<Bytes, BytesRejection>) -> ApiResult<T> {
    let bytes = raw.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::too_large("request body too large")
        } else {
            Error::bad_request(e.body_text())
        }
    })?;
    // Through a `Value`, as WebSocket messages are read: a key given twice
    // means its last value, on both paths.
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(Error::bad_request(format!("malformed JSON: {e}"))))?;
    // The error names the field it is about (`groups: invalid type …`).
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ApiError(Error::bad_request(message))
    })
}

async fn ws_upgrade(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    slot: Option<Extension<TcpSlot>>,
    ws: Upgrade,
) -> Response {
    let config = app.broker.config();
    if let Err(e) = check_origin(&app, &headers) {
        return e.into_response();
    }
    let ip = app.guard.client_ip(peer, &headers);
    // A direct connection already counts for its address; a proxied one
    // counts here, by the address the proxy forwards.
    let counted = slot.as_ref().is_some_and(|s| s.counted());
    let permit = if counted {
        None
    } else {
        match app.guard.admit(ip) {
            Some(p) => Some(p),
            None => {
                app.broker.metrics().refused("per_ip");
                return ApiError(Error::new(
                    ErrorCode::RateLimited,
                    "too many connections from your address",
                ))
                .into_response();
            }
        }
    };
    let tracker = app.tracker.clone();
    // Small read buffers keep idle connections cheap. Data frames are
    // written by the session itself, already encoded; tungstenite's write
    // buffer only carries pings, pongs and close frames.
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
        .read_buffer_size(config.read_buffer_bytes)
        .write_buffer_size(config.write_buffer_bytes)
        .max_write_buffer_size(config.max_write_buffer_bytes);
    ws.on_upgrade(ws_config, move |socket| {
        tracker.track_future(async move {
            // The TCP slot is held until the socket is really gone.
            let _slot = slot;
            super::session::run(socket, app, ip, permit).await
        })
    })
}

/// A browser's request (it carries `Origin`; other clients need not) is
/// served only from the broker's own origin or an allowed one.
fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let allowed_origins = &app.broker.config().allowed_origins;
    let allowed = origin.to_str().is_ok_and(|o| {
        same_origin(o, headers, allowed_origins)
            || allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o))
    });
    if allowed {
        Ok(())
    } else {
        app.broker.metrics().refused("origin");
        Err(ApiError(Error::forbidden("origin not allowed")))
    }
}

/// Whether `host` (a `Host` header, port included) names this broker for
/// certain: an IP address, `localhost`, or the host of an allowed origin.
/// Any other name may be a DNS-rebinding page's own, pointed at us.
fn known_host(host: &str, allowed_origins: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.parse::<std::net::IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || allowed_origins.iter().any(|o| {
            o.split_once("://")
                .map(|(_, rest)| rest)
                .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
        })
}

/// Whether `origin` is the broker's own, as the browser reached it: the
/// `Host` of this request behind `http://` (or `https://`, through a proxy
/// that terminates TLS), when that host surely names the broker. The pages
/// the broker serves connect from there. A page elsewhere cannot forge
/// it: browsers set both headers themselves, and a client that can set
/// them could as well send no `Origin` at all.
fn same_origin(origin: &str, headers: &HeaderMap, allowed_origins: &[String]) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    !host.is_empty()
        && known_host(host, allowed_origins)
        && ["http://", "https://"].iter().any(|scheme| {
            origin.len() == scheme.len() + host.len()
                && origin
                    .get(..scheme.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                && origin
                    .get(scheme.len()..)
                    .is_some_and(|h| h.eq_ignore_ascii_case(host))
        })
}

async fn create_case(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: CreateCase = body(raw)?;
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.create_case(&agent, req)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

async fn list_cases(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let status = match q.get("status").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| Error::bad_request(format!("unknown status \"{s}\"")))?,
        ),
    };
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=limits::PAGE_MAX).contains(n))
            .ok_or_else(|| Error::bad_request("limit must be 1 to 1000"))?,
    };
    let nonempty = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
    let query = ListQuery {
        status,
        group: nonempty("group"),
        assignee: nonempty("assignee"),
        limit,
        cursor: nonempty("cursor"),
    };
    app.fresh(agent.company_index).await?;
    let page = app.broker.list_cases(&agent, &query)?;
    Ok(Json(json!({ "cases": page.cases, "next_cursor": page.next_cursor })).into_response())
}

async fn get_case(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    Ok(Json(app.broker.get_case(&agent, &code)?).into_response())
}

async fn transcript(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let (code, messages) = app.broker.transcript(&agent, &code)?;
    Ok(Json(json!({ "code": code, "messages": messages })).into_response())
}

async fn assign(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: AssignBody = body(raw)?;
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.assign(&agent, &code, req.assignee)
    })
    .await?;
    Ok(Json(view).into_response())
}

async fn transfer(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let to: TransferBody = body(raw)?;
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.transfer(&agent, &code, to)
    })
    .await?;
    Ok(Json(view).into_response())
}

async fn invite(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: InviteBody = body(raw)?;
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.invite(&agent, &code, &req.agent)
    })
    .await?;
    Ok(Json(view).into_response())
}

/// A whisper over HTTP: every agent in the session gets it.
async fn whisper(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: WhisperBody = body(raw)?;
    let code = acknowledged(&app, Some(agent.company_index), || {
        app.broker.whisper(None, &agent, &code, req.text)
    })
    .await?;
    Ok(Json(json!({ "code": code })).into_response())
}

async fn close(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    let (view, _) = acknowledged(&app, Some(agent.company_index), || {
        app.broker.close(Who::Agent(&agent), Some(&code))
    })
    .await?;
    Ok(Json(view).into_response())
}

/// `accept` over HTTP: takes the case offered to the caller.
async fn accept(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.accept(&agent, &code)
    })
    .await?;
    Ok(Json(view).into_response())
}

/// `decline` over HTTP: passes on the case offered to the caller.
async fn decline(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    let view = acknowledged(&app, Some(agent.company_index), || {
        app.broker.decline(&agent, &code)
    })
    .await?;
    Ok(Json(view).into_response())
}

async fn delete_case(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    acknowledged(&app, Some(agent.company_index), || {
        app.broker.delete(&agent, &code)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn agents(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    Ok(Json(json!({ "agents": app.broker.agents(&agent) })).into_response())
}

async fn groups(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    Ok(Json(json!({ "groups": app.broker.groups(&agent) })).into_response())
}

async fn routing(
    State(app): State<App>,
    AuthAgent(agent): AuthAgent,
    PathParam(code): PathParam<String>,
) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    let decisions = app.broker.routing(&agent, &code)?;
    Ok(Json(json!({ "decisions": decisions })).into_response())
}

async fn stats(State(app): State<App>, AuthAgent(agent): AuthAgent) -> ApiResult<Response> {
    app.fresh(agent.company_index).await?;
    Ok(Json(json!({ "groups": app.broker.stats(&agent) })).into_response())
}

async fn help(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    forwarded: Option<Extension<forward::Forwarded>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    // Anyone may ask for help, but not any web page for its visitors: a
    // browser's POST from another origin is refused, and only JSON is
    // taken (a page can send text/plain anywhere without asking first).
    check_origin(&app, &headers)?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError(Error::bad_request(
            "the body must be JSON, sent with Content-Type: application/json",
        )));
    }
    let req: RequestHelp = body(raw)?;
    let ip = app.guard.client_ip(peer, &headers);
    let shard = app.module_shard(&req.module).await;
    let known = shard.map(|_| req.module.as_str());
    // A request another node forwarded here was counted there.
    if forwarded.is_none() {
        app.guard.check_help(ip, known)?;
        if let Some(c) = &app.cluster {
            c.check_help(ip, known, app.broker.config()).await?;
        }
    }
    let (view, _) = acknowledged(&app, shard, || app.broker.request_help(None, req)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "code": view.code, "case": view })),
    )
        .into_response())
}

/// A module key's public face, for the customer's help page: the
/// company's name and the group. Module keys ship inside client apps, so
/// nothing here is secret; an unknown key is `not_found`.
async fn module(State(app): State<App>, PathParam(key): PathParam<String>) -> ApiResult<Response> {
    // On a cluster node the key may be one another node has just added.
    app.module_shard(&key).await.ok_or_else(Error::not_found)?;
    let dir = app.broker.directory();
    let m = dir.module(&key).ok_or_else(Error::not_found)?;
    let company = &dir.companies()[m.company_index];
    let mut body = json!({
        "module": key,
        "company": { "name": company.name },
        "group": m.group,
    });
    // Outside the group's hours, the help page says so before anyone types.
    let group = &company.group_info[m.group_index];
    if let Some((message, opens_at)) = group.closed_at(chrono::Utc::now()) {
        body["closed"] = json!({
            "message": message,
            "opens_at": opens_at.as_ref().map(crate::case::format_time),
        });
    }
    Ok(Json(body).into_response())
}

async fn metrics(State(app): State<App>) -> Response {
    render_metrics(&app.broker)
}

/// `/metrics` alone, for `metrics_listen`.
pub fn metrics_app(broker: Broker) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let broker = broker.clone();
            async move { render_metrics(&broker) }
        }),
    )
}

fn render_metrics(broker: &Broker) -> Response {
    let text = broker.metrics().render(&broker.count_by_status());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    if app.shutdown.is_cancelled() {
        ApiError(Error::new(ErrorCode::Unavailable, "shutting down")).into_response()
    } else if !app.broker.available() {
        ApiError(Error::new(
            ErrorCode::Unavailable,
            "changes cannot be stored right now",
        ))
        .into_response()
    } else {
        (StatusCode::OK, "ok").into_response()
    }
}
