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

/// The address 127.0.0.`n`, one of the loopback addresses a test sends
/// from.
fn loopback(n: u8) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, n))
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
