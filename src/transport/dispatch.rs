//! A session's commands: decodes one client message and runs it on the
//! core for an agent or a customer connection, returning the reply.

use std::net::IpAddr;
use std::sync::Arc;

use tracing::field;

use crate::app::App;
use crate::core::{Conn, Who};
use crate::directory::Agent;
use crate::error::Error;
use crate::protocol::{CaseBody, ClientMsg, DecodeError, Envelope, ErrorCode, Id, ServerMsg};

/// Who said `hello`.
pub enum Peer {
    Agent(Arc<Agent>),
    Customer,
}

/// Decodes and runs one command for this connection. Returns the `id` to
/// echo, whether the message decoded, and the reply if the session must
/// send one itself.
pub fn handle(
    app: &App,
    conn: &Conn,
    ip: IpAddr,
    who: &Peer,
    text: &str,
    decoded: Result<Envelope<ClientMsg>, DecodeError>,
) -> (Option<Id>, bool, Result<Option<ServerMsg>, Error>) {
    let broker = &app.broker;
    let env = match decoded {
        Ok(env) => env,
        Err(e) => {
            broker.metrics().message_received("invalid", text.len());
            return (e.id, false, Err(Error::bad_request(e.message)));
        }
    };
    broker
        .metrics()
        .message_received(env.msg.wire_type(), text.len());
    let id = env.id;
    let result = match who {
        Peer::Agent(agent) => agent_command(app, conn, agent, env.msg, id.as_ref()),
        Peer::Customer => customer_command(app, conn, ip, env.msg, id.as_ref()),
    };
    (id, true, result)
}

/// What a command needs before it runs in a cluster.
#[derive(Default)]
pub struct Prepared {
    /// The company it changes.
    pub shard: Option<usize>,
    /// A customer's join by code: its outcome counts for the shared limit.
    pub join: bool,
}

/// In a cluster: checks the limits shared by every node and finds the
/// company the command would change (to be placed, see [`App::place`]).
/// Nothing to do on a single broker, and no company for a command that
/// changes nothing (it reads this node's copy) or cannot be decoded. A
/// customer's join by a code this node has not seen yet catches up with
/// the cluster first.
pub async fn prepare(
    app: &App,
    conn: &Conn,
    ip: IpAddr,
    who: &Peer,
    decoded: &Result<Envelope<ClientMsg>, DecodeError>,
) -> Result<Prepared, Error> {
    let Some(cluster) = &app.cluster else {
        return Ok(Prepared::default());
    };
    let Ok(env) = decoded else {
        return Ok(Prepared::default());
    };
    let broker = &app.broker;
    let (shard, join) = match (who, &env.msg) {
        (
            Peer::Agent(agent),
            ClientMsg::CreateCase(_)
            | ClientMsg::Assign { .. }
            | ClientMsg::Transfer { .. }
            | ClientMsg::Invite { .. }
            | ClientMsg::Watch { .. }
            | ClientMsg::Unwatch { .. }
            | ClientMsg::Whisper { .. }
            | ClientMsg::Accept { .. }
            | ClientMsg::Decline { .. }
            | ClientMsg::Join { .. }
            | ClientMsg::Leave { .. }
            | ClientMsg::Close { .. }
            | ClientMsg::Delete { .. }
            | ClientMsg::Presence { .. }
            | ClientMsg::Chat { .. },
        ) => (Some(agent.company_index), false),
        (Peer::Agent(_), _) => (None, false),
        (Peer::Customer, ClientMsg::Join { code, .. }) => {
            cluster.check_join(ip).await?;
            let shard = match crate::core::parse_code(code) {
                Ok(code) => cluster.find(&code).await,
                Err(_) => None,
            };
            (shard, true)
        }
        (Peer::Customer, ClientMsg::RequestHelp(req)) => {
            let shard = app.module_shard(&req.module).await;
            let known = shard.map(|_| req.module.as_str());
            cluster.check_help(ip, known, broker.config()).await?;
            (shard, false)
        }
        (
            Peer::Customer,
            ClientMsg::Chat { .. } | ClientMsg::Leave { .. } | ClientMsg::Close { .. },
        ) => (conn.shard(), false),
        (Peer::Customer, _) => (None, false),
    };
    Ok(Prepared { shard, join })
}

/// After a customer's join in a cluster: a failure counts towards the
/// address's shared back-off (a success changes nothing); counted before
/// the reply leaves, so the client's next try already sees it.
pub async fn joined(app: &App, ip: IpAddr, failed: Option<ErrorCode>) {
    let Some(cluster) = &app.cluster else {
        return;
    };
    if matches!(failed, Some(ErrorCode::NotFound | ErrorCode::Conflict)) {
        cluster.join_failed(ip, app.broker.config()).await
    }
}

/// The STUN/TURN servers a seat of `code` gets in `joined`; none when the
/// config lists none.
fn ice_servers(
    broker: &crate::core::Broker,
    code: crate::case::SessionCode,
) -> Option<Vec<crate::ice::IceServer>> {
    let c = broker.config();
    if c.ice_servers.is_empty() {
        return None;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Some(crate::ice::for_session(
        &c.ice_servers,
        c.turn_secret.as_ref().map(|s| s.0.as_str()),
        c.turn_ttl.as_secs(),
        code,
        now,
    ))
}

fn agent_command(
    app: &App,
    conn: &Conn,
    agent: &Agent,
    msg: ClientMsg,
    id: Option<&Id>,
) -> Result<Option<ServerMsg>, Error> {
    let broker = &app.broker;
    let case = |view| ServerMsg::Case {
        case: CaseBody::Agent(Box::new(view)),
    };
    Ok(Some(match msg {
        ClientMsg::Hello { .. } => return Err(Error::bad_request("hello was already said")),
        ClientMsg::Subscribe { group, resume } => {
            // The snapshot or `resumed` is queued in the stream's order and
            // echoes this id.
            app.hub.push_reply_id(conn.id, id.cloned());
            if let Err(e) = broker.subscribe(conn, agent, group, resume) {
                app.hub.pop_reply_id(conn.id);
                return Err(e);
            }
            return Ok(None);
        }
        ClientMsg::Unsubscribe {} => {
            broker.unsubscribe(conn);
            ServerMsg::Unsubscribed {}
        }
        ClientMsg::CreateCase(req) => case(broker.create_case(agent, req)?),
        ClientMsg::Assign { code, assignee } => case(broker.assign(agent, &code, assignee)?),
        ClientMsg::Transfer { code, to } => case(broker.transfer(agent, &code, to)?),
        ClientMsg::Invite {
            code,
            agent: invitee,
        } => case(broker.invite(agent, &code, &invitee)?),
        ClientMsg::Watch { code } => case(broker.watch(conn, agent, &code)?),
        ClientMsg::Unwatch { code } => ServerMsg::Left {
            code: broker.unwatch(conn, agent, &code)?,
        },
        ClientMsg::Whisper { code, text } => ServerMsg::Sent {
            code: broker.whisper(Some(conn), agent, &code, text)?,
        },
        ClientMsg::Accept { code } => case(broker.accept(agent, &code)?),
        ClientMsg::Decline { code } => case(broker.decline(agent, &code)?),
        ClientMsg::Join { code, takeover, .. } => {
            let view = broker.agent_join(conn, agent, &code, takeover)?;
            tracing::Span::current().record("code", field::display(&view.code));
            ServerMsg::Joined {
                code: view.code,
                ice_servers: ice_servers(broker, view.code),
                case: CaseBody::Agent(Box::new(view)),
                resume_token: None,
            }
        }
        ClientMsg::Leave { code } => ServerMsg::Left {
            code: broker.leave(conn, code.as_deref())?,
        },
        ClientMsg::Close { code } => case(broker.close(Who::Agent(agent), code.as_deref())?.0),
        ClientMsg::Delete { code } => ServerMsg::Deleted {
            code: broker.delete(agent, &code)?,
        },
        ClientMsg::Presence { state } => {
            broker.set_presence(agent, state);
            ServerMsg::Presence { state }
        }
        ClientMsg::Chat { code, text } => ServerMsg::Sent {
            code: broker.chat(conn, code.as_deref(), text)?,
        },
        ClientMsg::Signal { code, data } => {
            let code = broker.signal(conn, code.as_deref(), data)?;
            return Ok(id.map(|_| ServerMsg::Sent { code }));
        }
        ClientMsg::RequestHelp(_) => {
            return Err(Error::forbidden("request_help is a customer command"));
        }
        ClientMsg::Ping {} => ServerMsg::Pong {},
    }))
}

fn customer_command(
    app: &App,
    conn: &Conn,
    ip: IpAddr,
    msg: ClientMsg,
    id: Option<&Id>,
) -> Result<Option<ServerMsg>, Error> {
    let broker = &app.broker;
    Ok(Some(match msg {
        ClientMsg::Hello { .. } => return Err(Error::bad_request("hello was already said")),
        ClientMsg::Join {
            code,
            name,
            resume_token,
            ..
        } => {
            // Checked before the code is looked up: a guesser learns nothing.
            app.guard.check_join(ip)?;
            let (view, token) = match broker.customer_join(conn, &code, name, resume_token) {
                Ok(joined) => joined,
                Err(e) => {
                    match e.code {
                        ErrorCode::NotFound => app.guard.join_failed(ip, "not_found"),
                        ErrorCode::Conflict => app.guard.join_failed(ip, "conflict"),
                        _ => {}
                    }
                    return Err(e);
                }
            };
            tracing::Span::current().record("code", field::display(&view.code));
            ServerMsg::Joined {
                code: view.code,
                ice_servers: ice_servers(broker, view.code),
                case: CaseBody::Customer(view),
                resume_token: Some(token),
            }
        }
        ClientMsg::RequestHelp(req) => {
            let known = broker
                .directory()
                .module(&req.module)
                .map(|_| req.module.as_str());
            app.guard.check_help(ip, known)?;
            let (view, token) = broker.request_help(Some(conn), req)?;
            tracing::Span::current().record("code", field::display(&view.code));
            ServerMsg::Joined {
                code: view.code,
                ice_servers: ice_servers(broker, view.code),
                case: CaseBody::Customer(view),
                resume_token: token,
            }
        }
        ClientMsg::Chat { text, .. } => ServerMsg::Sent {
            code: broker.chat(conn, None, text)?,
        },
        ClientMsg::Signal { data, .. } => {
            let code = broker.signal(conn, None, data)?;
            return Ok(id.map(|_| ServerMsg::Sent { code }));
        }
        ClientMsg::Leave { .. } => ServerMsg::Left {
            code: broker.leave(conn, None)?,
        },
        ClientMsg::Close { .. } => ServerMsg::Case {
            case: CaseBody::Customer(broker.close(Who::Customer(conn), None)?.1),
        },
        ClientMsg::Ping {} => ServerMsg::Pong {},
        ClientMsg::Subscribe { .. }
        | ClientMsg::Unsubscribe {}
        | ClientMsg::CreateCase(_)
        | ClientMsg::Assign { .. }
        | ClientMsg::Transfer { .. }
        | ClientMsg::Invite { .. }
        | ClientMsg::Watch { .. }
        | ClientMsg::Unwatch { .. }
        | ClientMsg::Whisper { .. }
        | ClientMsg::Accept { .. }
        | ClientMsg::Decline { .. }
        | ClientMsg::Delete { .. }
        | ClientMsg::Presence { .. } => {
            return Err(Error::forbidden("agents only"));
        }
    }))
}
