//! Direct links between nodes (`[cluster] link`): what one node sends
//! another (calls, answers and log notices) goes over a TCP connection of
//! its own instead of through Redis, which then only stores.
//!
//! Each node with a link address listens on it and writes it to
//! `casebroker:links`; a node that has something for another one connects
//! to that address and proves, as the other proves to it, that it knows
//! the cluster's link secret (`casebroker:link-secret`, made by the first
//! node: whoever can read Redis is trusted already). A link carries one
//! way, from the node that opened it: each node opens its own to the other.
//!
//! A link is an optimisation, never a requirement: while a node has none
//! to another (none configured there, not connected yet, broken) what it
//! sends goes through Redis as before; a batch whose writing failed goes
//! through Redis again, except its calls, which may have arrived and are
//! never sent twice (their waiters find the node dead or time out, as
//! with a call lost in Redis).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hmac::{KeyInit, Mac};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// Where each node's link listens: node number → address.
pub const LINKS: &str = "casebroker:links";
/// The secret both ends of a link prove they know.
pub const SECRET: &str = "casebroker:link-secret";

/// The largest message on a link (a batch of calls, answers and notices;
/// a forwarded HTTP body is at most a few MB).
const MAX_FRAME: usize = 64 << 20;
/// The largest message of a handshake: nothing larger is read (nor
/// buffered) from a connection not proven yet.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// How long connecting and proving may take.
const HANDSHAKE: Duration = Duration::from_secs(2);
/// How long writing one batch may take before the link counts as broken.
const WRITE_WAIT: Duration = Duration::from_secs(2);
/// Between two attempts to link to the same node.
pub(super) const RETRY: Duration = Duration::from_secs(2);
/// The first word on a link, so that a stray connection is told apart.
const VERSION: u32 = 1;
/// At most one warning about refused links in this long.
const REFUSALS_LOGGED_EVERY: Duration = Duration::from_secs(60);
/// Connections to the link address still in their handshake, at most;
/// past it a new one is closed at once.
const HANDSHAKES: usize = 64;

pub(super) type Link = Framed<TcpStream, LengthDelimitedCodec>;

/// What the opening node says first.
#[derive(Serialize, Deserialize)]
struct Hello {
    version: u32,
    from: u64,
    to: u64,
    nonce: [u8; 16],
}

/// The listening node's answer: its own nonce and its proof.
#[derive(Serialize, Deserialize)]
struct Welcome {
    nonce: [u8; 16],
    proof: Vec<u8>,
}

/// A link's framing, for its handshake (see [`proven`]).
fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_HANDSHAKE_FRAME)
        .new_codec()
}

/// Lets a link whose other end is proven carry messages up to
/// [`MAX_FRAME`].
fn proven(link: &mut Link) {
    link.codec_mut().set_max_frame_length(MAX_FRAME);
}

/// A node's proof that it knows `secret`, for one link's two nonces.
fn proof(secret: &[u8], side: &[u8], hello: &Hello, theirs: &[u8; 16]) -> hmac::Hmac<sha2::Sha256> {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(b"casebroker-link/1 ");
    mac.update(side);
    mac.update(&hello.from.to_be_bytes());
    mac.update(&hello.to.to_be_bytes());
    mac.update(&hello.nonce);
    mac.update(theirs);
    mac
}

/// Why a link was refused (never carries a secret).
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the other end closed the link during the handshake")]
    Closed,
    #[error("an unreadable handshake message")]
    Garbled,
    #[error("the other end is not the node asked for, or a node of another version")]
    Stranger,
    #[error("the other end does not know the cluster's link secret")]
    BadProof,
    #[error("the handshake took too long")]
    Slow,
}

async fn next(link: &mut Link) -> Result<bytes::BytesMut, Refused> {
    match link.next().await {
        Some(Ok(frame)) => Ok(frame),
        Some(Err(e)) => Err(e.into()),
        None => Err(Refused::Closed),
    }
}

impl Cluster {
    /// The link secret, taken from Redis (made there by the first node).
    pub(super) async fn link_secret(
        conn: &mut redis::aio::ConnectionManager,
    ) -> redis::RedisResult<Vec<u8>> {
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let _: bool = conn.set_nx(SECRET, &fresh).await?;
        let secret: String = conn.get(SECRET).await?;
        Ok(secret.into_bytes())
    }

    /// Listens on this node's link address and says where in Redis; every
    /// link opened to it runs until `shutdown`.
    pub(super) async fn listen_links(
        self: &Arc<Self>,
        addr: SocketAddr,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<()> = conn.hset(LINKS, self.node, bound.to_string()).await;
        r.map_err(std::io::Error::other)?;
        let me = self.clone();
        let tasks = tracker.clone();
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES));
        tracker.spawn(async move {
            loop {
                let stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::debug!(error = %e, "a link was not accepted");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = shutdown.cancelled() => return,
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    me.refused_link(&"too many handshakes at once");
                    continue;
                };
                tasks.spawn(me.clone().read_link(stream, permit, shutdown.clone()));
            }
        });
        Ok(bound)
    }

    /// Counts a refused link; says so in the log at most once a minute
    /// (with how many were refused so far), so that a flood of strangers
    /// does not flood the log.
    fn refused_link(&self, reason: &dyn std::fmt::Display) {
        use std::sync::atomic::Ordering;
        self.link_refusals.inc();
        // Never 0, which stands for "never logged".
        let now = (self.born.elapsed().as_millis() as u64).max(1);
        let last = self.refusal_logged.load(Ordering::Acquire);
        let due = last == 0 || now.saturating_sub(last) >= REFUSALS_LOGGED_EVERY.as_millis() as u64;
        if due
            && self
                .refusal_logged
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                %reason,
                refused_so_far = self.link_refusals.get(),
                "a link to this node was refused (logged at most once a minute; casebroker_cluster_link_refusals_total counts them all)"
            );
        } else {
            tracing::debug!(%reason, "a link to this node was refused");
        }
    }

    /// Proves itself to the node that opened `stream`, then runs what it
    /// sends until it closes or the node stops.
    async fn read_link(
        self: Arc<Self>,
        stream: TcpStream,
        handshake: tokio::sync::OwnedSemaphorePermit,
        shutdown: CancellationToken,
    ) {
        let _ = stream.set_nodelay(true);
        let mut link = Framed::new(stream, codec());
        let proving = tokio::time::timeout(HANDSHAKE, self.accept_link(&mut link));
        let from = tokio::select! {
            r = proving => match r {
                Ok(Ok(from)) => from,
                Ok(Err(e)) => return self.refused_link(&e),
                Err(_) => return self.refused_link(&Refused::Slow),
            },
            _ = shutdown.cancelled() => return,
        };
        drop(handshake);
        proven(&mut link);
        tracing::debug!(node = from, "linked from a node");
        loop {
            tokio::select! {
                frame = link.next() => match frame {
                    Some(Ok(frame)) => self.on_call_channel(&frame),
                    _ => break,
                },
                _ = shutdown.cancelled() => return,
            }
        }
        tracing::debug!(node = from, "a link from a node closed");
    }

    /// The listening side of the handshake; the node that opened it.
    async fn accept_link(&self, link: &mut Link) -> Result<u64, Refused> {
        let secret = self.link_secret.as_slice();
        let hello: Hello =
            postcard::from_bytes(&next(link).await?).map_err(|_| Refused::Garbled)?;
        if hello.version != VERSION || hello.to != self.node {
            return Err(Refused::Stranger);
        }
        let nonce: [u8; 16] = rand::random();
        let mine = proof(secret, b"listener", &hello, &nonce)
            .finalize()
            .into_bytes();
        let welcome = Welcome {
            nonce,
            proof: mine.to_vec(),
        };
        link.send(bytes::Bytes::from(
            postcard::to_allocvec(&welcome).expect("encodes"),
        ))
        .await?;
        let theirs = next(link).await?;
        proof(secret, b"opener", &hello, &nonce)
            .verify_slice(&theirs)
            .map_err(|_| Refused::BadProof)?;
        Ok(hello.from)
    }

    /// Opens a link to `node` (this node having a link address), if it
    /// has one; `None` when it has none or cannot be linked to now.
    pub(super) async fn open_link(&self, node: u64) -> Option<Link> {
        let mut conn = self.conn.clone();
        let addr: Option<String> = conn.hget(LINKS, node).await.ok()?;
        let addr: SocketAddr = addr?.parse().ok()?;
        match tokio::time::timeout(HANDSHAKE, self.handshake(node, addr)).await {
            Ok(Ok(link)) => {
                tracing::debug!(node, "linked to a node");
                Some(link)
            }
            Ok(Err(e)) => {
                tracing::warn!(node, %addr, reason = %e, "cannot link to a node; using Redis");
                None
            }
            Err(_) => {
                tracing::warn!(node, %addr, reason = %Refused::Slow, "cannot link to a node; using Redis");
                None
            }
        }
    }

    async fn handshake(&self, node: u64, addr: SocketAddr) -> Result<Link, Refused> {
        let secret = self.link_secret.as_slice();
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let mut link = Framed::new(stream, codec());
        let hello = Hello {
            version: VERSION,
            from: self.node,
            to: node,
            nonce: rand::random(),
        };
        link.send(bytes::Bytes::from(
            postcard::to_allocvec(&hello).expect("encodes"),
        ))
        .await?;
        let welcome: Welcome =
            postcard::from_bytes(&next(&mut link).await?).map_err(|_| Refused::Garbled)?;
        proof(secret, b"listener", &hello, &welcome.nonce)
            .verify_slice(&welcome.proof)
            .map_err(|_| Refused::BadProof)?;
        let mine = proof(secret, b"opener", &hello, &welcome.nonce)
            .finalize()
            .into_bytes();
        link.send(bytes::Bytes::copy_from_slice(&mine)).await?;
        proven(&mut link);
        Ok(link)
    }
}

impl Cluster {
    /// Notes that this node has (or no longer has) a link to `node`: its
    /// notices go on it, and `casebroker_cluster_links` counts it.
    pub(super) fn set_linked(&self, node: u64, up: bool) {
        let changed = if up {
            self.linked.insert(node)
        } else {
            self.linked.remove(&node).is_some()
        };
        if changed {
            self.links_up.set(self.linked.len() as i64);
        }
    }

    /// The nodes this one has a link to, as the append script reads them:
    /// `,2,5,` (`,` for none).
    pub(super) fn linked_list(&self) -> String {
        let mut s = String::from(",");
        for n in self.linked.iter() {
            s.push_str(&n.to_string());
            s.push(',');
        }
        s
    }
}

/// Writes one batch on `link`; false when the link is to be dropped.
pub(super) async fn write(link: &mut Link, bytes: Vec<u8>) -> bool {
    matches!(
        tokio::time::timeout(WRITE_WAIT, link.send(bytes::Bytes::from(bytes))).await,
        Ok(Ok(()))
    )
}
