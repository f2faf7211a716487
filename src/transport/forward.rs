//! Commands for a company that another cluster node decides: what this
//! node sends there (a WebSocket command with its connection, an HTTP
//! request as received, an agent's connection going online or offline)
//! and how the node deciding it runs them and answers. The transport
//! between nodes is the cluster's ([`crate::cluster::calls`]).
//!
//! The forwarded command runs on the holder exactly as it would here: the
//! same handlers, the same checks, the same error codes; its changes are
//! stored there and reach this node's connections through the log.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tower::ServiceExt;

use super::api_error::ApiError;
use super::dispatch::{self, Peer};
use crate::app::App;
use crate::cluster::calls::{Answered, Handler};
use crate::cluster::{Cluster, Hold, Placed};
use crate::core::{Conn, ConnId, stored, take_ack};
use crate::error::Error;
use crate::protocol::{ErrorCode, Role, decode_client};

/// How long a forwarded command may take, placing and answering
/// together, before it is answered `unavailable`.
const FORWARD_WAIT: Duration = Duration::from_secs(8);
/// The longest pause between placements of a command whose node turned
/// out not to decide its company (it just handed it over, or died).
const PLACE_PAUSE: Duration = Duration::from_millis(100);

/// A connection of the calling node, as the deciding node needs it.
#[derive(Serialize, Deserialize)]
struct ConnRef {
    id: ConnId,
    customer: bool,
    /// The agent's id in the company of the call.
    agent: Option<String>,
    shard: Option<usize>,
}

impl ConnRef {
    fn of(conn: &Conn) -> ConnRef {
        ConnRef {
            id: conn.id,
            customer: conn.role == Role::Customer,
            agent: conn.agent.as_ref().map(|a| a.id.clone()),
            shard: conn.shard(),
        }
    }
}

/// An error as it crosses between nodes.
#[derive(Serialize, Deserialize)]
struct WireError {
    code: ErrorCode,
    message: String,
    opens_at: Option<i64>,
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> WireError {
        WireError {
            code: e.code,
            message: e.message.clone(),
            opens_at: e.opens_at.map(|t| t.timestamp_millis()),
        }
    }
}

impl From<WireError> for Error {
    fn from(w: WireError) -> Error {
        let mut e = Error::new(w.code, w.message);
        e.opens_at = w.opens_at.and_then(chrono::DateTime::from_timestamp_millis);
        e
    }
}

#[derive(Serialize, Deserialize)]
enum Call {
    /// A WebSocket command, as the client sent it.
    Ws {
        conn: ConnRef,
        ip: IpAddr,
        text: String,
    },
    /// An HTTP request that changes something, as received.
    Http {
        method: String,
        uri: String,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
        peer: SocketAddr,
    },
    /// An agent's new connection: the agent is online.
    Online { conn: ConnRef },
    /// A connection closed: it leaves its seats.
    Offline { conn: ConnRef },
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// The reply's text (with the command's `id`), if it has one.
    Ws(Result<Option<String>, WireError>),
    Http {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    Done(Result<(), WireError>),
    /// The command named a company this node does not decide.
    NotHere,
}

fn unavailable(message: &str) -> Error {
    Error::new(ErrorCode::Unavailable, message.to_string())
}

/// What runs on the deciding node: the calls of other nodes.
pub fn handler(app: App, router: axum::Router) -> Handler {
    Arc::new(move |hold: Hold, body: Vec<u8>| {
        let (app, router) = (app.clone(), router.clone());
        async move {
            let reply = match postcard::from_bytes::<Call>(&body) {
                Ok(call) => serve(&app, router, hold, call).await,
                Err(_) => Reply::NotHere,
            };
            postcard::to_allocvec(&reply).expect("replies encode")
        }
        .boxed()
    })
}

/// The agent of a forwarded connection, as this node knows it.
fn agent_of(app: &App, shard: usize, id: &str) -> Option<Arc<crate::directory::Agent>> {
    let dir = app.broker.directory();
    let company = dir.companies().get(shard)?;
    company.agent(id).cloned()
}

fn conn_of(app: &App, shard: usize, r: &ConnRef) -> Result<(Conn, Peer), Error> {
    let agent = match &r.agent {
        Some(id) => Some(
            agent_of(app, shard, id)
                .ok_or_else(|| Error::unauthorized("the agent is no longer known"))?,
        ),
        None => None,
    };
    let role = if r.customer {
        Role::Customer
    } else {
        Role::Agent
    };
    let peer = match &agent {
        Some(a) => Peer::Agent(a.clone()),
        None => Peer::Customer,
    };
    Ok((app.broker.conn_of(r.id, role, agent, r.shard), peer))
}

async fn serve(app: &App, router: axum::Router, hold: Hold, call: Call) -> Reply {
    let shard = hold.shard();
    match call {
        Call::Ws { conn, ip, text } => {
            let (conn, peer) = match conn_of(app, shard, &conn) {
                Ok(c) => c,
                Err(e) => return Reply::Ws(Err((&e).into())),
            };
            let decoded = decode_client(&text);
            // Whatever an earlier task left on this thread is not ours.
            let _ = take_ack();
            let (id, _, result) = dispatch::handle(app, &conn, ip, &peer, &text, decoded);
            let ack = take_ack();
            drop(hold);
            let result = match result {
                Ok(reply) => stored(ack).await.map(|_| reply),
                Err(e) => Err(e),
            };
            Reply::Ws(match result {
                Ok(Some(msg)) => {
                    let mut out = Vec::new();
                    msg.write_json(id.as_ref(), &mut out);
                    Ok(Some(String::from_utf8(out).expect("JSON is UTF-8")))
                }
                Ok(None) => Ok(None),
                Err(e) => Err((&e).into()),
            })
        }
        Call::Online { conn } => {
            let Some(agent) = conn
                .agent
                .as_deref()
                .and_then(|id| agent_of(app, shard, id))
            else {
                return Reply::Done(Err(
                    (&Error::unauthorized("the agent is no longer known")).into()
                ));
            };
            let _ = take_ack();
            app.broker.agent_online(conn.id, &agent);
            let ack = take_ack();
            drop(hold);
            Reply::Done(stored(ack).await.map_err(|e| (&e).into()))
        }
        Call::Offline { conn } => {
            let Ok((conn, _)) = conn_of(app, shard, &conn) else {
                // An agent removed meanwhile left its seats with it.
                return Reply::Done(Ok(()));
            };
            let _ = take_ack();
            app.broker.leave_seats(&conn);
            let ack = take_ack();
            drop(hold);
            Reply::Done(stored(ack).await.map_err(|e| (&e).into()))
        }
        Call::Http {
            method,
            uri,
            headers,
            body,
            peer,
        } => {
            let Ok(method) = Method::from_bytes(method.as_bytes()) else {
                return Reply::NotHere;
            };
            let mut req = axum::extract::Request::new(axum::body::Body::from(body));
            *req.method_mut() = method;
            *req.uri_mut() = uri.parse().unwrap_or_default();
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    req.headers_mut().append(n, v);
                }
            }
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(Forwarded);
            // Held while the request runs: its company stays here.
            let response = router.oneshot(req).await.into_response();
            drop(hold);
            if response.extensions().get::<NotHere>().is_some() {
                return Reply::NotHere;
            }
            let status = response.status().as_u16();
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .map(|b| b.to_vec())
                .unwrap_or_default();
            Reply::Http {
                status,
                headers,
                body,
            }
        }
    }
}

/// Sends `call` to the node deciding `shard`, placing it anew while the
/// node it goes to turns out not to decide it. `Ok(None)` when this node
/// decides it now (the caller runs the command here).
async fn on_holder(
    cluster: &Arc<Cluster>,
    shard: usize,
    mut node: u64,
    call: &Call,
) -> Result<Result<Reply, Hold>, Error> {
    let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
    let body = postcard::to_allocvec(call).expect("calls encode");
    let mut pause = Duration::from_millis(5);
    loop {
        match cluster.call(node, shard, body.clone(), deadline).await? {
            Answered::Ran(bytes) => match postcard::from_bytes::<Reply>(&bytes) {
                Ok(Reply::NotHere) => cluster.forget_holder(shard, node),
                Ok(reply) => return Ok(Ok(reply)),
                Err(_) => return Err(unavailable("the deciding node's answer was unreadable")),
            },
            Answered::NotThere => {}
        }
        // The node handed the company over or died: once its lease is
        // given up or runs out, the company is decided elsewhere (or
        // here).
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(unavailable("the company's node is changing; retry"));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PLACE_PAUSE);
        match cluster.place(shard).await? {
            Placed::Here(hold) => return Ok(Err(hold)),
            Placed::There(n) => node = n,
        }
    }
}

/// What became of a WebSocket command sent to the deciding node.
pub enum WsOutcome {
    /// It ran there: the reply's text, or the error.
    Ran(Result<Option<String>, Error>),
    /// This node decides the company now: run it here.
    Here(Hold),
}

/// Runs a WebSocket command of `conn` on `node`, which decides `shard`.
pub async fn ws(
    cluster: &Arc<Cluster>,
    shard: usize,
    node: u64,
    conn: &Conn,
    ip: IpAddr,
    text: &str,
) -> WsOutcome {
    let call = Call::Ws {
        conn: ConnRef::of(conn),
        ip,
        text: text.to_string(),
    };
    match on_holder(cluster, shard, node, &call).await {
        Ok(Ok(Reply::Ws(r))) => WsOutcome::Ran(r.map_err(Error::from)),
        Ok(Ok(_)) => WsOutcome::Ran(Err(unavailable("the deciding node answered oddly"))),
        Ok(Err(hold)) => WsOutcome::Here(hold),
        Err(e) => WsOutcome::Ran(Err(e)),
    }
}

/// Tells `node`, which decides `shard`, that an agent's connection opened
/// (`online`) or closed. `Ok(Some(hold))` when this node decides the
/// company now and must do it itself.
pub async fn presence(
    cluster: &Arc<Cluster>,
    shard: usize,
    node: u64,
    conn: &Conn,
    online: bool,
) -> Result<Option<Hold>, Error> {
    let conn = ConnRef::of(conn);
    let call = if online {
        Call::Online { conn }
    } else {
        Call::Offline { conn }
    };
    match on_holder(cluster, shard, node, &call).await? {
        Ok(Reply::Done(r)) => r.map(|_| None).map_err(Error::from),
        Ok(_) => Err(unavailable("the deciding node answered oddly")),
        Err(hold) => Ok(Some(hold)),
    }
}

tokio::task_local! {
    /// Set by a handler whose company another node decides: that node and
    /// the company.
    static ELSEWHERE: Cell<Option<(u64, usize)>>;
}

/// A request forwarded by another node: it runs here or nowhere, and
/// the limits per address were counted where it arrived.
#[derive(Clone, Copy)]
pub struct Forwarded;

/// Marks the answer of a forwarded request whose company this node does
/// not decide after all.
#[derive(Clone, Copy)]
struct NotHere;

/// The refusal of a handler whose company `node` decides: the request is
/// sent there by [`forward_http`] (nobody sees this answer).
pub(super) fn elsewhere(node: u64, shard: usize) -> ApiError {
    let _ = ELSEWHERE.try_with(|c| c.set(Some((node, shard))));
    ApiError(unavailable("the company is decided on another node; retry"))
}

/// Sends a request that changes a company another node decides to that
/// node, and answers what it answered. On a single broker, and for reads,
/// it only passes the request on.
pub(super) async fn forward_http(
    State(app): State<App>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(cluster) = app.cluster.clone() else {
        return next.run(req).await;
    };
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let forwarded = req.extensions().get::<Forwarded>().is_some();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (parts, body) = req.into_parts();
    // The body was read whole before (`body_in_time`).
    let bytes: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let call = Call::Http {
        method: parts.method.as_str().to_string(),
        uri: parts.uri.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: bytes.to_vec(),
        peer,
    };
    let req = axum::extract::Request::from_parts(parts, bytes.into());
    let (response, placed) = ELSEWHERE
        .scope(Cell::new(None), async {
            let response = next.run(req).await;
            (response, ELSEWHERE.with(|c| c.get()))
        })
        .await;
    let Some((node, shard)) = placed else {
        return response;
    };
    if forwarded {
        let mut response = response;
        response.extensions_mut().insert(NotHere);
        return response;
    }
    let reply = match on_holder(&cluster, shard, node, &call).await {
        Ok(Ok(reply)) => reply,
        // Decided here now: the request runs here, as it would have on the
        // holder.
        Ok(Err(hold)) => match app.router() {
            Some(router) => serve(&app, router, hold, call).await,
            None => Reply::NotHere,
        },
        Err(e) => return ApiError(e).into_response(),
    };
    match reply {
        Reply::Http {
            status,
            headers,
            body,
        } => {
            let mut response = Response::new(axum::body::Body::from(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for (name, value) in headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(&value),
                ) {
                    response.headers_mut().append(n, v);
                }
            }
            response
        }
        _ => ApiError(unavailable("the company's node is changing; retry")).into_response(),
    }
}
