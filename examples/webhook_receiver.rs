//! A webhook receiver in a few lines: verifies each call's signature and
//! handles each `webhook-id` once (casebroker delivers at least once).
//!
//!   cargo run --example webhook_receiver -- whsec_... [127.0.0.1:9000]
//!
//! Then add `http://127.0.0.1:9000/` as an endpoint (with
//! `webhook_allow_private = true` for a receiver on this machine).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secret = args
        .next()
        .expect("usage: webhook_receiver whsec_... [address]");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9000".into());
    let verifier = Arc::new(standardwebhooks::Webhook::new(&secret).expect("a whsec_ secret"));
    // Ids already handled; a real receiver keeps them in its database for
    // as long as retries may come (a day or two).
    let done = Arc::new(Mutex::new(HashSet::<String>::new()));
    let app = axum::Router::new().route(
        "/",
        post(move |headers: HeaderMap, body: Bytes| async move {
            if verifier.verify(&body, &headers).is_err() {
                return StatusCode::UNAUTHORIZED;
            }
            let id = headers["webhook-id"]
                .to_str()
                .unwrap_or_default()
                .to_string();
            if !done.lock().unwrap().insert(id.clone()) {
                return StatusCode::OK; // a repeat: already handled
            }
            println!("{id}: {}", String::from_utf8_lossy(&body));
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("receiving on http://{addr}/");
    axum::serve(listener, app).await.expect("serve");
}
