//! The writing side of a WebSocket session: replies, batches of outbox
//! items written with one vectored write, close frames, every write under
//! a deadline and counted; and how a session's end maps to a close code.
//!
//! Data frames arrive already encoded ([`Frame`]): the writer puts their
//! bytes on the socket as they are, the same bytes for every subscriber.
//! Control frames (ping, pong, close) go through tungstenite, which is
//! flushed before any data frame so that the two never interleave.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::SinkExt;
use tokio::io::AsyncWriteExt;
use tokio::time::error::Elapsed;
use tokio::time::{Instant, timeout};
use tracing::debug;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, Utf8Bytes};

use super::upgrade::Socket;
use crate::delivery::{Frame, OutboxRx, Outgoing};
use crate::error::Error;
use crate::metrics::{Disconnect, Metrics};
use crate::protocol::{Id, ServerMsg, close};

/// Outbox items written per write, so one busy connection cannot starve
/// its own reads.
const WRITE_BATCH: usize = 256;
/// Buffers per vectored write (the system's limit is 1024).
const MAX_SLICES: usize = 256;
/// A drained queue of unsent frames keeps at most this many slots.
const KEEP_SLOTS: usize = 16;
/// A batch of queue events that comes closer than this after the
/// previous one waits until this long after it, gathering what arrives
/// meanwhile into the same write: under a high event rate a dashboard
/// gets a few events per syscall (on both ends) instead of one, and a
/// lone event (or one after a pause) is written at once.
const COALESCE: Duration = Duration::from_millis(1);

/// A connection's socket with its deadline and counters.
pub struct Writer {
    pub socket: Socket,
    pub metrics: Metrics,
    pub write_timeout: Duration,
    /// Frames taken from the outbox and not yet on the socket.
    unsent: VecDeque<Bytes>,
    /// The budget shares of big frames still in `unsent`, given back once
    /// it is written out.
    pins: Vec<crate::delivery::outbox::Pin>,
    /// The first unsent frame is partly written.
    partial: bool,
    /// When a batch that held a queue event was last written.
    last_event_write: Option<Instant>,
}

/// Why the session ends, and the close frame to send once the connection
/// has left its seats.
pub struct End {
    pub reason: Option<Disconnect>,
    pub close: Option<(u16, &'static str)>,
}

impl End {
    /// The peer is gone or the socket failed: nothing more to send.
    pub fn gone(reason: Option<Disconnect>) -> End {
        End {
            reason,
            close: None,
        }
    }

    /// The broker ends the connection with a close code.
    pub fn close(reason: Disconnect, code: u16, text: &'static str) -> End {
        End {
            reason: Some(reason),
            close: Some((code, text)),
        }
    }
}

impl Writer {
    pub fn new(socket: Socket, metrics: Metrics, write_timeout: Duration) -> Writer {
        Writer {
            socket,
            metrics,
            write_timeout,
            unsent: VecDeque::new(),
            pins: Vec::new(),
            partial: false,
            last_event_write: None,
        }
    }

    /// Puts every unsent frame on the socket, with as few vectored writes
    /// as it allows. Tungstenite (a pong it owes) is flushed only between
    /// whole frames. Cancel-safe: what was not written stays unsent.
    async fn drain(&mut self) -> io::Result<()> {
        while !self.unsent.is_empty() {
            if !self.partial {
                self.socket.flush().await.map_err(io::Error::other)?;
            }
            let slices: Vec<IoSlice<'_>> = self
                .unsent
                .iter()
                .take(MAX_SLICES)
                .map(|f| IoSlice::new(f))
                .collect();
            let mut n = self.socket.get_mut().write_vectored(&slices).await?;
            drop(slices);
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            while n > 0 {
                let front = &mut self.unsent[0];
                if n >= front.len() {
                    n -= front.len();
                    self.unsent.pop_front();
                    self.partial = false;
                } else {
                    front.advance(n);
                    n = 0;
                    self.partial = true;
                }
            }
        }
        if self.unsent.capacity() > KEEP_SLOTS {
            self.unsent = VecDeque::new();
        }
        self.pins.clear();
        Ok(())
    }

    /// Before a control frame: the rest of a frame cut short is written
    /// (so the peer can still parse what follows), what is queued behind it
    /// is dropped.
    async fn finish_frame(&mut self) -> io::Result<()> {
        self.unsent.truncate(usize::from(self.partial));
        self.drain().await
    }

    /// Sends one frame now (a reply or an error).
    pub async fn send(&mut self, frame: Frame) -> Result<(), End> {
        let len = frame.len() as u64;
        self.unsent.push_back(frame.wire().clone());
        written(deadline(self.write_timeout, self.drain()).await)?;
        self.metrics.messages_sent(1, len);
        Ok(())
    }

    pub async fn error(&mut self, id: Option<&Id>, err: &Error) -> Result<(), End> {
        let frame = error_frame(&self.metrics, id, err);
        self.send(frame).await
    }

    /// Writes a command's reply together with whatever the command queued
    /// for this connection (its pushes), in one write: a command costs one
    /// syscall, not one per message.
    pub async fn reply(&mut self, frame: Frame, rx: &mut OutboxRx) -> Result<(), End> {
        self.batch(Outgoing::Text(frame), rx).await
    }

    /// Writes `first` and whatever else is queued (up to a batch) in one
    /// vectored write, then records how late each queue event reached the
    /// socket. A batch that starts with a queue event is paced
    /// ([`COALESCE`]). Cancel-safe: what was taken from the outbox is
    /// kept unsent.
    pub async fn batch(&mut self, first: Outgoing, rx: &mut OutboxRx) -> Result<(), End> {
        let mut count = 0u64;
        let mut emitted = Vec::new();
        let mut bytes = 0u64;
        let mut closing = None;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let frame = match item {
                Outgoing::Text(frame) => frame,
                Outgoing::Large(frame, pin) => {
                    self.pins.push(pin);
                    frame
                }
                Outgoing::Event(frame, at) => {
                    emitted.push(at);
                    frame
                }
                Outgoing::Close(code, reason) => {
                    closing = Some((code, reason));
                    break;
                }
            };
            bytes += frame.len() as u64;
            count += 1;
            self.unsent.push_back(frame.wire().clone());
            if count == 1
                && !emitted.is_empty()
                && let Some(at) = self.last_event_write
                && at.elapsed() < COALESCE
            {
                tokio::time::sleep_until(at + COALESCE).await;
            }
            // Take the next item only if this batch will write it: what is
            // taken out of the outbox must never be dropped.
            if count < WRITE_BATCH as u64 {
                next = rx.try_recv();
            }
        }
        if count > 0 {
            written(deadline(self.write_timeout, self.drain()).await)?;
            self.metrics.messages_sent(count, bytes);
        }
        if !emitted.is_empty() {
            let now = Instant::now();
            self.last_event_write = Some(now);
            self.metrics
                .push_latencies(emitted.iter().map(|at| now.saturating_duration_since(*at)));
        }
        if let Some((code, reason)) = closing {
            return Err(End::close(Disconnect::CaseEnded, code, reason));
        }
        Ok(())
    }

    /// Sends a ping.
    pub async fn ping(&mut self) -> Result<(), End> {
        let sent = timeout(self.write_timeout, async {
            self.drain().await?;
            self.socket
                .send(Message::Ping(Bytes::new()))
                .await
                .map_err(io::Error::other)
        })
        .await;
        written(sent)
    }

    /// Sends a close frame after whatever is still buffered, within the
    /// write deadline, so a slow reader still learns why it was closed.
    pub async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code: code.into(),
            reason: Utf8Bytes::from_static(reason),
        }));
        let _ = timeout(self.write_timeout, async {
            if self.finish_frame().await.is_err() {
                return;
            }
            let _ = self.socket.send(frame).await;
            let _ = SinkExt::close(&mut self.socket).await;
        })
        .await;
    }

    /// Closes with `code`, counting the reason.
    pub async fn close_for(&mut self, reason: Disconnect, code: u16, text: &'static str) {
        self.metrics.disconnected(reason);
        self.close(code, text).await;
    }
}

/// How a deadline-bound write ended: a failed socket ends the connection
/// quietly, an expired deadline counts as `write_timeout`.
pub fn written<E>(r: Result<Result<(), E>, Elapsed>) -> Result<(), End> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::gone(None)),
        Err(_) => Err(End::gone(Some(Disconnect::WriteTimeout))),
    }
}

/// `timeout`, without arming a timer when the future is ready at once (a
/// write into a socket with room): timers are shared by every connection,
/// and most writes never need one.
pub async fn deadline<F: Future>(limit: Duration, f: F) -> Result<F::Output, Elapsed> {
    let mut f = std::pin::pin!(f);
    match futures::poll!(f.as_mut()) {
        std::task::Poll::Ready(out) => Ok(out),
        std::task::Poll::Pending => timeout(limit, f).await,
    }
}

/// An `error` message, counted.
pub fn error_frame(metrics: &Metrics, id: Option<&Id>, err: &Error) -> Frame {
    metrics.error_sent(err.code);
    uncounted_error_frame(id, err)
}

/// An error reply built ahead of the outcome that may send it: counted in
/// the metrics by whoever sends it.
pub fn uncounted_error_frame(id: Option<&Id>, err: &Error) -> Frame {
    debug!(code = ?err.code, "error reply");
    let msg = ServerMsg::Error {
        code: err.code,
        message: err.message.clone(),
        opens_at: err.opens_field(),
    };
    Frame::message(&msg, id)
}

/// The end of a connection told to close by the broker (its outbox
/// overflowed, or it is rate limited).
pub fn killed(code: u16) -> End {
    debug!(code, "closing connection");
    let reason = match code {
        close::SLOW => Disconnect::Slow,
        _ => Disconnect::RateLimited,
    };
    End::close(reason, code, reason_for(code))
}

pub fn reason_for(code: u16) -> &'static str {
    match code {
        close::SLOW => "slow consumer",
        close::RATE_LIMITED => "rate limited",
        close::SHUTDOWN => "shutting down",
        _ => "",
    }
}
