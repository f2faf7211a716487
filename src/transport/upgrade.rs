//! The WebSocket handshake on the broker's own listener: the request is
//! checked, answered with 101, and the upgraded connection handed to the
//! session as one tokio-tungstenite stream (never split: its reading and
//! writing happen in the session's one task, so no lock sits between
//! them).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::{Role, WebSocketConfig};

use super::api_error::ApiError;
use crate::error::Error;

/// An upgraded WebSocket connection.
pub type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// The one subprotocol the broker speaks; echoed when a client asks for it.
pub const SUBPROTOCOL: &str = "casebroker.v1";

/// A checked WebSocket handshake request, ready to be answered.
pub struct Upgrade {
    on: OnUpgrade,
    accept: String,
    protocol: bool,
}

/// Whether a comma-separated header holds `token` (ASCII case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn refused(message: &str) -> Response {
    ApiError(Error::bad_request(message)).into_response()
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let h = &parts.headers;
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(refused("a WebSocket handshake needs `Connection: upgrade`"));
        }
        if !has_token(h, header::UPGRADE, "websocket") {
            return Err(refused("a WebSocket handshake needs `Upgrade: websocket`"));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return Err(refused(
                "a WebSocket handshake needs `Sec-WebSocket-Version: 13`",
            ));
        }
        let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
            return Err(refused("a WebSocket handshake needs `Sec-WebSocket-Key`"));
        };
        let accept = derive_accept_key(key.as_bytes());
        let protocol = has_token(h, header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL);
        let Some(on) = parts.extensions.remove::<OnUpgrade>() else {
            return Err((
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            )
                .into_response());
        };
        Ok(Upgrade {
            on,
            accept,
            protocol,
        })
    }
}

impl Upgrade {
    /// Answers 101 and, once the connection is upgraded, runs `serve` on
    /// it in a task of its own.
    pub fn on_upgrade<F, Fut>(self, config: WebSocketConfig, serve: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on = self.on;
        tokio::spawn(async move {
            // A client that goes away before the upgrade completes is
            // nothing to serve.
            let Ok(upgraded) = on.await else { return };
            let socket = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config),
            )
            .await;
            serve(socket).await;
        });
        let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(
            header::SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&self.accept).expect("base64 is a header value"),
        );
        if self.protocol {
            h.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        resp
    }
}
