//! The outside of the broker: the accept loop, the HTTP routes, the
//! browser pages, the WebSocket sessions and the per-address guard.

pub mod admin;
pub mod api_error;
pub mod dispatch;
pub mod feed;
pub mod forward;
pub mod guard;
pub mod http;
pub mod pages;
pub mod routes;
pub mod server;
pub mod session;
pub mod upgrade;
pub mod webhooks;
pub mod writer;
