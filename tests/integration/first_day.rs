//! What a team meets on its first day: signals, start-up messages and
//! refusals of the binary, a person removed from the config, the limits
//! and headers a probe of the broker found wanting.

#[path = "first_day/binary.rs"]
mod binary;
#[path = "first_day/checks.rs"]
mod checks;
#[path = "first_day/limits.rs"]
mod limits;
#[path = "first_day/removed.rs"]
mod removed;

use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::util::*;

/// GET `path` on a process's listener; the status.
async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(WAIT)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Creates a case as alice over a process's HTTP API.
async fn create_over_http(addr: std::net::SocketAddr, group: &str, name: &str) {
    let created = reqwest::Client::new()
        .post(format!("http://{addr}/v1/cases"))
        .bearer_auth(ALICE)
        .json(&json!({"group": group, "name": name}))
        .timeout(WAIT)
        .send()
        .await
        .expect("create a case");
    assert_eq!(created.status().as_u16(), 201);
}

/// A client bound to its own loopback address (any of 127.0.0.0/8).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<std::net::IpAddr>().unwrap())
        .timeout(WAIT)
        .build()
        .unwrap()
}

/// Reads what the server sends on `stream` until it closes (or `limit`).
async fn read_bytes(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    out
}

/// The same, as text.
async fn read_all(stream: &mut TcpStream, limit: Duration) -> String {
    String::from_utf8_lossy(&read_bytes(stream, limit).await).into_owned()
}
