//! Where the load goes: the `--url` (loopback only, refused otherwise), the
//! rotation of client sockets over loopback source addresses
//! (127.0.0.1, 127.0.0.2, ...), and opening one WebSocket from a chosen
//! source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::http::Uri;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// The default `--url`.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:8080/v1/ws";

/// The URL names a host outside the loopback range. The binary exits with
/// code 2 on it.
#[derive(Debug)]
pub struct NotLoopback(pub String);

impl std::fmt::Display for NotLoopback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "refusing {}: the load tester only targets loopback (127.0.0.0/8, localhost, ::1)",
            self.0
        )
    }
}

impl std::error::Error for NotLoopback {}

/// A checked target: a `ws://` URL on a loopback address, and the source
/// addresses client sockets rotate over.
#[derive(Clone, Debug)]
pub struct Target {
    url: String,
    addr: SocketAddr,
    source_addrs: u8,
    next: Arc<AtomicUsize>,
}

impl Target {
    /// Parses and checks `url`; `source_addrs` is how many of 127.0.0.1,
    /// 127.0.0.2, ... client sockets are bound to in turn (1 to 254).
    pub fn new(url: &str, source_addrs: u8) -> anyhow::Result<Target> {
        let addr = loopback_addr(url)?;
        if source_addrs == 0 || source_addrs == 255 {
            bail!("--source-addrs must be between 1 and 254");
        }
        Ok(Target {
            url: url.to_string(),
            addr,
            source_addrs,
            next: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The broker's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn source_addrs(&self) -> u8 {
        self.source_addrs
    }

    /// The same target with a fresh rotation starting at `offset`, so
    /// worker processes do not all start on 127.0.0.1.
    pub fn with_offset(&self, offset: usize) -> Target {
        Target {
            next: Arc::new(AtomicUsize::new(offset)),
            ..self.clone()
        }
    }

    /// The source address of the next socket: 127.0.0.K, K rotating over
    /// 1..=source_addrs. `None` for an IPv6 target (only ::1 exists there).
    fn next_source(&self) -> Option<IpAddr> {
        if !self.addr.is_ipv4() {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % usize::from(self.source_addrs);
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + k as u8)))
    }

    /// Opens one TCP connection from the next source address and does the
    /// WebSocket handshake, within `timeout`.
    pub async fn connect(&self, timeout: Duration) -> anyhow::Result<Ws> {
        let source = self.next_source();
        let open = async {
            let socket = match self.addr {
                SocketAddr::V4(_) => TcpSocket::new_v4()?,
                SocketAddr::V6(_) => TcpSocket::new_v6()?,
            };
            if let Some(ip) = source {
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .with_context(|| format!("bind {ip}:0"))?;
            }
            socket.set_nodelay(true)?;
            let stream = socket
                .connect(self.addr)
                .await
                .with_context(|| format!("connect to {}", self.addr))?;
            let (ws, _) = tokio_tungstenite::client_async(self.url.as_str(), stream)
                .await
                .context("WebSocket handshake")?;
            anyhow::Ok(ws)
        };
        tokio::time::timeout(timeout, open)
            .await
            .with_context(|| format!("no connection to {} within {timeout:?}", self.url))?
    }

    /// The `http://host:port` base of the same server, for `/metrics`.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Checks that `url` is `ws://` on a loopback host and resolves it.
/// Anything else is a [`NotLoopback`] (or a plain error for a bad URL).
pub fn loopback_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("--url {url} is not a URL"))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some(other) => bail!("--url {url}: scheme {other} is not supported, use ws://"),
        None => bail!("--url {url}: missing ws:// scheme"),
    }
    let host = uri
        .host()
        .with_context(|| format!("--url {url} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if bare.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        match bare.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => return Err(NotLoopback(url.to_string()).into()),
        }
    };
    if !ip.is_loopback() {
        return Err(NotLoopback(url.to_string()).into());
    }
    Ok(SocketAddr::new(ip, port))
}

/// Raises the soft limit on open files to the hard limit; returns it.
pub fn raise_nofile_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        for ok in [
            "ws://127.0.0.1:8080/v1/ws",
            "ws://127.3.2.1:9/x",
            "ws://localhost:8080/v1/ws",
            "ws://[::1]:8080/v1/ws",
        ] {
            assert!(loopback_addr(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ws://10.0.0.1:8080/v1/ws",
            "ws://192.168.1.2/",
            "ws://example.com/v1/ws",
            "ws://[2001:db8::1]:80/",
            "ws://0.0.0.0:8080/",
        ] {
            let e = loopback_addr(bad).unwrap_err();
            assert!(e.downcast_ref::<NotLoopback>().is_some(), "{bad}: {e}");
        }
        assert!(loopback_addr("http://127.0.0.1/").is_err());
    }

    #[test]
    fn sources_rotate() {
        let t = Target::new(DEFAULT_URL, 3).unwrap();
        let got: Vec<_> = (0..4).map(|_| t.next_source().unwrap()).collect();
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
}
