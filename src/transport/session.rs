//! One task per WebSocket: `hello` within a deadline, then one `select!`
//! loop over the socket, the connection's outbox, its kill switch, the ping
//! timer and the broker's shutdown. A drop guard always releases the
//! connection's seats.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use governor::clock::MonotonicClock;
use governor::{Quota, RateLimiter};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::{Instrument, debug, field, info_span};

use super::dispatch::{self, Peer, handle};
use super::forward::{self, WsOutcome};
use super::guard::ConnPermit;
use super::upgrade::Socket;
use super::writer::{End, Writer, error_frame, killed, uncounted_error_frame};
use crate::app::{App, Place};
use crate::core::{Ack, Conn, STORE_WAIT, take_ack};
use crate::delivery::{Frame, Outbox, OutboxRx};
use crate::error::Error;
use crate::metrics::Disconnect;
use crate::protocol::{ClientMsg, ErrorCode, Id, Role, ServerMsg, close, decode_client};
use tungstenite::{Message, Utf8Bytes};

/// Consecutive undecodable messages after which a connection is closed
/// (4002).
const MAX_BAD_IN_A_ROW: u32 = 20;
/// Consecutive messages over the rate limit after which a connection is
/// closed (4002).
const MAX_LIMITED_IN_A_ROW: u32 = 20;

/// Releases the connection's seats and subscription however the task ends
/// (in a cluster, on a task of its own: it may wait for the company).
struct Registered {
    app: App,
    conn: Option<Conn>,
}

impl Registered {
    fn conn(&self) -> &Conn {
        self.conn.as_ref().expect("registered until dropped")
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let app = self.app.clone();
        if app.cluster.is_some() {
            self.app
                .tracker
                .spawn(async move { app.disconnect(conn).await });
        } else {
            app.disconnect_now(conn);
        }
    }
}

/// Serves one upgraded WebSocket until it closes. `permit` holds the
/// client address's connection slot for the life of the socket.
pub async fn run(socket: Socket, app: App, ip: IpAddr, permit: Option<ConnPermit>) {
    let span = info_span!(
        "conn",
        ip = %ip,
        conn = field::Empty,
        role = field::Empty,
        agent = field::Empty,
        company = field::Empty,
        code = field::Empty
    );
    serve(socket, app, ip).instrument(span).await;
    drop(permit);
}

async fn serve(socket: Socket, app: App, ip: IpAddr) {
    let config = app.broker.config();
    let mut w = Writer::new(socket, app.broker.metrics().clone(), config.write_timeout);
    let Some((id, who)) = hello(&app, &mut w).await else {
        return;
    };
    let (role, agent) = match &who {
        Peer::Agent(a) => (Role::Agent, Some(a.clone())),
        Peer::Customer => (Role::Customer, None),
    };
    let (conn, outbox, mut rx) = match app.connect(role, agent.clone()).await {
        Ok(registered) => registered,
        Err(e) => {
            let _ = w.error(id.as_ref(), &e).await;
            w.close(close::GOING_AWAY, "unavailable").await;
            linger(&mut w).await;
            return;
        }
    };
    let span = tracing::Span::current();
    span.record("conn", conn.id);
    span.record("role", role.as_str());
    if let Some(a) = &agent {
        span.record("agent", a.id.as_str());
        span.record("company", a.company.as_str());
    }
    debug!("hello");
    let welcome = ServerMsg::Welcome {
        role,
        agent: agent.as_ref().map(|a| a.info()),
    };
    let registered = Registered {
        app: app.clone(),
        conn: Some(conn),
    };
    if !outbox.push(&welcome, id.as_ref()) {
        return;
    }
    let end = session(&app, &mut w, &mut rx, registered.conn(), ip, &who).await;
    // Leave the seats at once; the close frame may take a while to reach a
    // slow reader.
    drop(registered);
    if let Err(End { reason, close }) = end {
        if let Some(reason) = reason {
            w.metrics.disconnected(reason);
        }
        if let Some((code, text)) = close {
            w.close(code, text).await;
            linger(&mut w).await;
        }
    }
}

/// How long a closing connection's remaining input is read and dropped.
const LINGER: Duration = Duration::from_secs(2);

/// After our close frame, reads and drops what the peer still sends until
/// its close frame, briefly: closing a socket with unread input resets it,
/// and the reset would destroy our close frame before the peer reads it.
async fn linger(w: &mut Writer) {
    let _ = timeout(LINGER, async {
        while let Some(Ok(msg)) = w.socket.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Waits for `hello` and checks it. On failure the error and the close
/// frame are sent here.
async fn hello(app: &App, w: &mut Writer) -> Option<(Option<Id>, Peer)> {
    let first = tokio::select! {
        r = timeout(app.broker.config().hello_timeout, next_data(&mut w.socket)) => r,
        _ = app.shutdown.cancelled() => {
            w.close_for(Disconnect::Shutdown, close::SHUTDOWN, "shutting down").await;
            linger(w).await;
            return None;
        }
    };
    let no_hello = |message: String| Error::bad_request(message);
    let text = match first {
        Err(_) => {
            debug!("no hello in time");
            w.close_for(
                Disconnect::HelloTimeout,
                close::HELLO_TIMEOUT,
                "hello timeout",
            )
            .await;
            linger(w).await;
            return None;
        }
        Ok(FirstFrame::Gone) => return None,
        Ok(FirstFrame::Broken(code, reason)) => {
            w.close_for(Disconnect::BadFrame, code, reason).await;
            linger(w).await;
            return None;
        }
        Ok(FirstFrame::TooLarge) => {
            w.close_for(Disconnect::TooLarge, close::TOO_LARGE, "message too large")
                .await;
            linger(w).await;
            return None;
        }
        Ok(FirstFrame::Binary) => {
            let _ = w
                .error(
                    None,
                    &no_hello("the first message must be a hello text frame".into()),
                )
                .await;
            w.close_for(Disconnect::NoHello, close::NO_HELLO, "expected hello")
                .await;
            linger(w).await;
            return None;
        }
        Ok(FirstFrame::Text(t)) => t,
    };
    w.metrics.message_received("hello", text.len());
    let (id, err) = match decode_client(&text) {
        Ok(env) => match env.msg {
            ClientMsg::Hello {
                role: Role::Customer,
                ..
            } => return Some((env.id, Peer::Customer)),
            ClientMsg::Hello {
                role: Role::Agent,
                token,
            } => match authenticate(app, token.as_deref()).await {
                Some(agent) => return Some((env.id, Peer::Agent(agent))),
                None => {
                    let err = Error::unauthorized("bad or missing agent token");
                    let _ = w.error(env.id.as_ref(), &err).await;
                    w.close_for(
                        Disconnect::Unauthorized,
                        close::UNAUTHORIZED,
                        "unauthorized",
                    )
                    .await;
                    linger(w).await;
                    return None;
                }
            },
            _ => (env.id, no_hello("the first message must be a hello".into())),
        },
        Err(e) => (e.id, no_hello(e.message)),
    };
    let _ = w.error(id.as_ref(), &err).await;
    w.close_for(Disconnect::NoHello, close::NO_HELLO, "expected hello")
        .await;
    linger(w).await;
    None
}

/// The session loop after `welcome`.
async fn session(
    app: &App,
    w: &mut Writer,
    rx: &mut OutboxRx,
    conn: &Conn,
    ip: IpAddr,
    who: &Peer,
) -> Result<(), End> {
    let config = app.broker.config();
    // The std clock: governor's default clock calibrates itself (cpuid)
    // each time one is made, which is too dear once per connection.
    let limiter = RateLimiter::direct_with_clock(
        Quota::per_second(nonzero(config.messages_per_second))
            .allow_burst(nonzero(config.message_burst)),
        MonotonicClock,
    );
    let mut ping =
        tokio::time::interval_at(Instant::now() + config.ping_interval, config.ping_interval);
    // Set while a ping waits for any sign of life.
    let mut pong_deadline: Option<Instant> = None;
    let mut bad_in_a_row = 0u32;
    let journaled = app.broker.journaled();
    // The last reply still waiting for its changes to be stored.
    let mut pending: Option<Arc<Ack>> = None;
    let unavailable = w.metrics.error_counter(ErrorCode::Unavailable);
    let mut limited_in_a_row = 0u32;
    // Created once, not per turn of the loop: each registers with its token.
    let kill = rx.kill.clone();
    let killed_now = kill.wait();
    tokio::pin!(killed_now);
    // A child token: polling the shared one from every connection on each
    // wake-up would contend on its lock.
    let shutdown_token = app.shutdown.child_token();
    let shutdown = shutdown_token.cancelled();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            code = &mut killed_now => return Err(killed(code)),
            _ = &mut shutdown => {
                // Every command read gets its reply before the close: the
                // last one waits for its changes to be stored (within the
                // grace), then whatever is queued is written.
                if let Some(ack) = pending.take() {
                    ack.wait(STORE_WAIT.min(config.shutdown_grace)).await;
                }
                while let Some(item) = rx.try_recv() {
                    w.batch(item, rx).await?;
                }
                return Err(End::close(Disconnect::Shutdown, close::SHUTDOWN, "shutting down"));
            }
            _ = sleep_until(pong_deadline.unwrap_or_else(Instant::now)), if pong_deadline.is_some() => {
                debug!("no pong in time");
                return Err(End::close(Disconnect::PongTimeout, close::GOING_AWAY, "pong timeout"));
            }
            _ = ping.tick() => {
                if pong_deadline.is_none() {
                    w.ping().await?;
                    pong_deadline = Some(Instant::now() + config.pong_timeout);
                }
            }
            item = rx.recv() => {
                let Some(item) = item else { return Ok(()) };
                // A write blocked on a reader that stopped reading must not
                // hide that its queue overflowed meanwhile.
                let overflowed = tokio::select! {
                    r = w.batch(item, rx) => { r?; None }
                    code = &mut killed_now => Some(code),
                };
                if let Some(code) = overflowed {
                    return Err(killed(code));
                }
            }
            msg = w.socket.next() => {
                // Any frame from the peer shows the connection is alive.
                pong_deadline = None;
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Binary(b))) => {
                        w.metrics.message_received("invalid", b.len());
                        let frame = error_frame(&w.metrics, None, &Error::bad_request("messages are JSON text frames"));
                        answer(w, rx, journaled, &mut pending, frame).await?;
                        bad_in_a_row += 1;
                        if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                            return Err(End::close(Disconnect::RateLimited, close::RATE_LIMITED, "too many bad messages"));
                        }
                        continue;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => return Ok(()),
                    Some(Err(e)) => {
                        if is_too_large(&e) {
                            return Err(End::close(Disconnect::TooLarge, close::TOO_LARGE, "message too large"));
                        }
                        return match broken(&e) {
                            Some((code, reason)) => Err(End::close(Disconnect::BadFrame, code, reason)),
                            None => Ok(()),
                        };
                    }
                };
                if limiter.check().is_err() {
                    w.metrics.message_received("rate_limited", text.len());
                    limited_in_a_row += 1;
                    if limited_in_a_row >= MAX_LIMITED_IN_A_ROW {
                        return Err(End::close(Disconnect::RateLimited, close::RATE_LIMITED, "rate limited"));
                    }
                    let id = decode_client(&text).ok().and_then(|e| e.id);
                    let err = Error::new(ErrorCode::RateLimited, "too many messages; slow down");
                    let frame = error_frame(&w.metrics, id.as_ref(), &err);
                    answer(w, rx, journaled, &mut pending, frame).await?;
                    continue;
                }
                limited_in_a_row = 0;
                // In a cluster, a command that changes a company waits for
                // it to be held here.
                let msg = decode_client(&text);
                let msg_id = msg.as_ref().ok().and_then(|e| e.id.clone());
                let placed = match dispatch::prepare(app, conn, ip, who, &msg).await {
                    Ok(p) => app.place(p.shard).await.map(|place| (p, place)),
                    Err(e) => Err(e),
                };
                let (prepared, hold) = match placed {
                    Ok((p, Place::Here(hold))) => (p, hold),
                    Ok((p, Place::There { node, shard })) => {
                        let cluster = app.cluster.as_ref().expect("placed elsewhere in a cluster");
                        // What was replied before leaves first.
                        if let Some(earlier) = pending.take() {
                            earlier.wait(STORE_WAIT).await;
                        }
                        // Its changes reach this node through the
                        // cluster's log; the reply leaves ahead of their
                        // pushes, as it would here.
                        let outbox = rx.sender();
                        outbox.hold();
                        match forward::ws(cluster, shard, node, conn, ip, &text).await {
                            WsOutcome::Ran(result) => {
                                if p.join {
                                    dispatch::joined(app, ip, result.as_ref().err().map(|e| e.code)).await;
                                }
                                if result.is_ok() && conn.role == Role::Customer {
                                    conn.set_shard(shard);
                                }
                                let frame = match result {
                                    Ok(Some(reply)) => Some(Frame::text(&reply)),
                                    Ok(None) => None,
                                    Err(e) => Some(error_frame(&w.metrics, msg_id.as_ref(), &e)),
                                };
                                if let Some(f) = frame {
                                    outbox.push_reply(f);
                                }
                                outbox.release();
                                continue;
                            }
                            // This node decides the company now.
                            WsOutcome::Here(hold) => {
                                outbox.release();
                                (p, Some(hold))
                            }
                        }
                    }
                    Err(e) => {
                        let frame = error_frame(&w.metrics, msg_id.as_ref(), &e);
                        answer(w, rx, journaled, &mut pending, frame).await?;
                        continue;
                    }
                };
                // Whatever an earlier task left on this thread is not ours.
                let _ = take_ack();
                // On a journaled broker the reply leaves once what the
                // command changed is stored, and before whatever reaches
                // this connection meanwhile (its own pushes, a close).
                let outbox = journaled.then(|| rx.sender());
                if let Some(o) = &outbox {
                    o.hold();
                }
                let (id, decoded, result) = handle(app, conn, ip, who, &text, msg);
                let ack = take_ack();
                drop(hold);
                // A join's outcome is counted (failed-join back-off) before
                // its reply can leave.
                if prepared.join {
                    dispatch::joined(app, ip, result.as_ref().err().map(|e| e.code)).await;
                }
                let frame = match &result {
                    Ok(Some(reply)) => Some(Frame::message(reply, id.as_ref())),
                    Ok(None) => None,
                    Err(err) => Some(error_frame(&w.metrics, id.as_ref(), err)),
                };
                if let Some(outbox) = outbox {
                    // Meanwhile the session reads on, so pipelined commands
                    // share a commit.
                    match (ack, frame) {
                        // Its own changes: the reply leaves once they are
                        // stored, ahead of their pushes.
                        (Some(ack), frame) => {
                            let sender = outbox.clone();
                            let unstored = result.is_ok().then(|| (unavailable.clone(), id.clone()));
                            ack.then(move |ok| {
                                let frame = match unstored {
                                    Some((counter, id)) if !ok => {
                                        counter.inc();
                                        let err = Error::new(ErrorCode::Unavailable, "the change could not be stored; retry");
                                        Some(uncounted_error_frame(id.as_ref(), &err))
                                    }
                                    _ => frame,
                                };
                                if let Some(f) = frame {
                                    sender.push_reply(f);
                                }
                            });
                            pending = Some(ack);
                        }
                        // Nothing of its own: after the pushes of the
                        // previous command still on its way.
                        (None, Some(f)) => queue_after(&mut pending, &outbox, f),
                        (None, None) => {}
                    }
                    outbox.release();
                } else if let Some(f) = frame {
                    w.reply(f, rx).await?;
                }
                // Only undecodable messages count: a stream of garbage closes
                // the connection, refused commands do not.
                bad_in_a_row = if decoded { 0 } else { bad_in_a_row + 1 };
                if bad_in_a_row >= MAX_BAD_IN_A_ROW {
                    return Err(End::close(Disconnect::RateLimited, close::RATE_LIMITED, "too many bad messages"));
                }
            }
        }
    }
}

/// Sends a reply that changed nothing: at once on a broker without a
/// journal; on one with a journal, in order behind the previous command's
/// reply and pushes.
async fn answer(
    w: &mut Writer,
    rx: &mut OutboxRx,
    journaled: bool,
    pending: &mut Option<Arc<Ack>>,
    frame: Frame,
) -> Result<(), End> {
    if journaled {
        queue_after(pending, &rx.sender(), frame);
        Ok(())
    } else {
        w.send(frame).await
    }
}

/// Queues `frame` behind the pushes of `pending` (the last command whose
/// changes may still be on their way to storage), or at once.
fn queue_after(pending: &mut Option<Arc<Ack>>, outbox: &Outbox, frame: Frame) {
    match pending.take().filter(|a| !a.delivered()) {
        Some(earlier) => {
            let sender = outbox.clone();
            earlier.after(move |_| {
                sender.push_shared(frame);
            });
            *pending = Some(earlier);
        }
        None => {
            outbox.push_shared(frame);
        }
    }
}

/// The agent a `hello`'s token belongs to, if any.
async fn authenticate(app: &App, token: Option<&str>) -> Option<Arc<crate::directory::Agent>> {
    match token {
        Some(t) => app.authenticate(t).await,
        None => None,
    }
}

fn nonzero(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n.max(1)).expect("at least one")
}

fn is_too_large(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

/// The close a peer that broke the protocol gets, so it learns why: 1007
/// for text that is not UTF-8, 1002 for a bad frame (unmasked, reserved
/// bits, unknown opcode). `None` when the socket simply failed.
fn broken(e: &tungstenite::Error) -> Option<(u16, &'static str)> {
    match e {
        tungstenite::Error::Utf8(_) => Some((close::INVALID_DATA, "text is not UTF-8")),
        tungstenite::Error::Protocol(_) => Some((close::PROTOCOL_ERROR, "protocol error")),
        _ => None,
    }
}

enum FirstFrame {
    Text(Utf8Bytes),
    Binary,
    TooLarge,
    Broken(u16, &'static str),
    Gone,
}

/// The first data frame of a connection.
async fn next_data(socket: &mut Socket) -> FirstFrame {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(t))) => return FirstFrame::Text(t),
            Some(Ok(Message::Binary(_))) => return FirstFrame::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Err(e)) if is_too_large(&e) => return FirstFrame::TooLarge,
            Some(Err(e)) if broken(&e).is_some() => {
                let (code, reason) = broken(&e).expect("checked");
                return FirstFrame::Broken(code, reason);
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => return FirstFrame::Gone,
        }
    }
}
