//! The wire contract (proto/README.md) as serde types: client messages,
//! server messages, error codes and close codes. Strict on types and required
//! fields, tolerant of unknown fields, additive on output.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::case::{CaseView, Customer, CustomerCaseView, SessionCode, Status, SupporterView};

/// The `id` a client may put on a command: a string of at most 64
/// characters, or an integer. Replies echo it unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Num(i64),
    Str(String),
}

/// The longest string `id`, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// A message with the optional `id` beside its `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    #[serde(flatten)]
    pub msg: T,
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Customer,
}

impl Role {
    /// The wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Customer => "customer",
        }
    }
}

/// An agent's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    Available,
    Away,
}

/// How a customer's app asks for help.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    #[default]
    Quicksupport,
    Sos,
}

/// Where a dashboard left off: `subscribe`'s `resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPos {
    pub epoch: String,
    pub seq: u64,
}

/// `create_case` and `POST /v1/cases`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateCase {
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<Customer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
}

/// `request_help` and `POST /v1/help`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestHelp {
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `assign`'s body: `assignee` must be present; `null` unassigns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AssignBody {
    #[serde(deserialize_with = "present_or_null")]
    pub assignee: Option<String>,
}

/// `transfer`'s body (and `POST /v1/cases/{code}/transfer`): a group, an
/// assignee (`null`: back to the group's line), or both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TransferBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Absent: unchanged (kept when a member of the new group);
    /// `Some(None)`: back to the line; `Some(Some(id))`: that agent.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub assignee: Option<Option<String>>,
}

/// `POST /v1/cases/{code}/invite`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InviteBody {
    pub agent: String,
}

/// `POST /v1/cases/{code}/whisper`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WhisperBody {
    pub text: String,
}

/// A field that may be absent, `null` or a string, each meaning something
/// else: absent stays `None` (by `default`), the rest is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A field that must be present but may be `null`. serde treats a missing
/// `Option` as `None`; this one reports it as missing instead.
fn present_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Option::<String>::deserialize(d)
}

/// Every message a client may send. Which role may send which is checked by
/// the session; an agent command from a customer is `forbidden`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    Hello {
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    Subscribe {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<StreamPos>,
    },
    Unsubscribe {},
    CreateCase(CreateCase),
    Assign {
        code: String,
        #[serde(deserialize_with = "present_or_null")]
        assignee: Option<String>,
    },
    Join {
        code: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        takeover: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
    },
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    Close {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    Delete {
        code: String,
    },
    Presence {
        state: PresenceState,
    },
    Chat {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        text: String,
    },
    Signal {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        data: Value,
    },
    RequestHelp(RequestHelp),
    Ping {},
    Transfer {
        code: String,
        #[serde(flatten)]
        to: TransferBody,
    },
    Invite {
        code: String,
        agent: String,
    },
    Watch {
        code: String,
    },
    Unwatch {
        code: String,
    },
    Whisper {
        code: String,
        text: String,
    },
    Accept {
        code: String,
    },
    Decline {
        code: String,
    },
}

impl ClientMsg {
    /// Every client `type`, as on the wire.
    pub const TYPES: [&'static str; 21] = [
        "hello",
        "subscribe",
        "unsubscribe",
        "create_case",
        "assign",
        "join",
        "leave",
        "close",
        "delete",
        "presence",
        "chat",
        "signal",
        "request_help",
        "ping",
        "transfer",
        "invite",
        "watch",
        "unwatch",
        "whisper",
        "accept",
        "decline",
    ];

    /// This message's `type`, as on the wire (a metric label).
    pub fn wire_type(&self) -> &'static str {
        match self {
            ClientMsg::Hello { .. } => "hello",
            ClientMsg::Subscribe { .. } => "subscribe",
            ClientMsg::Unsubscribe {} => "unsubscribe",
            ClientMsg::CreateCase(_) => "create_case",
            ClientMsg::Assign { .. } => "assign",
            ClientMsg::Join { .. } => "join",
            ClientMsg::Leave { .. } => "leave",
            ClientMsg::Close { .. } => "close",
            ClientMsg::Delete { .. } => "delete",
            ClientMsg::Presence { .. } => "presence",
            ClientMsg::Chat { .. } => "chat",
            ClientMsg::Signal { .. } => "signal",
            ClientMsg::RequestHelp(_) => "request_help",
            ClientMsg::Ping {} => "ping",
            ClientMsg::Transfer { .. } => "transfer",
            ClientMsg::Invite { .. } => "invite",
            ClientMsg::Watch { .. } => "watch",
            ClientMsg::Unwatch { .. } => "unwatch",
            ClientMsg::Whisper { .. } => "whisper",
            ClientMsg::Accept { .. } => "accept",
            ClientMsg::Decline { .. } => "decline",
        }
    }
}

/// Why a client message could not be read. Carries the `id` when one could
/// be read, so the error can echo it.
#[derive(Debug)]
pub struct DecodeError {
    pub id: Option<Id>,
    pub message: String,
}

/// Decodes one client text frame: JSON object, valid `id`, known `type`,
/// required fields present and well typed; unknown fields ignored.
pub fn decode_client(text: &str) -> Result<Envelope<ClientMsg>, DecodeError> {
    let fail = |id: Option<Id>, message: String| DecodeError { id, message };
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| fail(None, format!("malformed JSON: {e}")))?;
    let Some(obj) = value.as_object_mut() else {
        return Err(fail(None, "a message must be a JSON object".into()));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(Id::Str(s)),
        Some(Value::Number(n)) if n.is_i64() => Some(Id::Num(n.as_i64().unwrap_or_default())),
        Some(_) => {
            return Err(fail(
                None,
                format!("id must be a string of at most {MAX_ID_CHARS} characters or an integer"),
            ));
        }
    };
    match obj.get("type") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(fail(id, "type must be a string".into())),
        None => return Err(fail(id, "missing field `type`".into())),
    }
    match ClientMsg::deserialize(value) {
        Ok(msg) => Ok(Envelope { id, msg }),
        Err(e) => Err(fail(id, e.to_string())),
    }
}

/// An agent's presence and load, for dashboards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentStatus {
    pub id: String,
    pub name: String,
    pub groups: Vec<String>,
    pub online: bool,
    pub presence: PresenceState,
    pub open_cases: u32,
    pub max_cases: u32,
    /// The agent was deleted: dashboards drop it (absent otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// A group's live numbers, as `GET /v1/stats` and the `stats` push show
/// them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    pub group: String,
    /// Open cases waiting in the group's line (unassigned).
    pub waiting: usize,
    /// How long the oldest of them has waited, as of this answer.
    pub longest_wait_s: Option<u64>,
    pub agents_online: u32,
    pub agents_available: u32,
    /// The waits of the cases answered in the last hour (created → a
    /// supporter in the session), median and 90th percentile.
    pub wait_p50_s: Option<u64>,
    pub wait_p90_s: Option<u64>,
    /// The share of service levels met among those decided in the last
    /// hour.
    pub sla_met_ratio: Option<f64>,
}

impl GroupStats {
    /// Equal but for the longest wait (which grows by itself) when the
    /// same case is the oldest.
    pub fn same_but_longest_wait(&self, other: &GroupStats) -> bool {
        GroupStats {
            longest_wait_s: other.longest_wait_s.map(|_| 0),
            ..self.clone()
        } == GroupStats {
            longest_wait_s: self.longest_wait_s.map(|_| 0),
            ..other.clone()
        }
    }
}

/// A group as `GET /v1/groups` and the `groups` push show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub id: String,
    pub name: String,
}

/// An agent as `welcome` describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub company: String,
    pub groups: Vec<String>,
    pub admin: bool,
}

/// A case in either view: agents get the full object, customers the reduced.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CaseBody {
    Agent(Box<CaseView>),
    Customer(CustomerCaseView),
}

/// What changed in a queue event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Updated,
    Deleted,
}

/// Why a session ended for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Closed,
    Expired,
    Deleted,
    Reassigned,
}

/// The sender of a relayed `chat`: its role and name (`null` when a
/// customer gave none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct From {
    pub role: Role,
    pub name: Option<String>,
}

/// The sender of a relayed `signal`: its role alone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SignalFrom {
    pub role: Role,
}

/// One chat line, as pushed and as kept in the transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatLine {
    pub from: From,
    pub text: String,
    /// RFC 3339, milliseconds, `Z`.
    pub at: String,
}

/// Every message the server sends: replies (with the command's `id`) and
/// pushes (without).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    Welcome {
        role: Role,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<AgentInfo>,
    },
    Snapshot {
        epoch: String,
        seq: u64,
        cases: Vec<CaseView>,
    },
    Resumed {
        epoch: String,
        seq: u64,
    },
    Event {
        epoch: String,
        seq: u64,
        action: Action,
        case: Box<CaseView>,
    },
    Unsubscribed {},
    Case {
        case: CaseBody,
    },
    Joined {
        code: SessionCode,
        case: CaseBody,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// STUN/TURN servers for screen sharing (`ice_servers` in the
        /// config); absent when none are configured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice_servers: Option<Vec<crate::ice::IceServer>>,
    },
    Left {
        code: SessionCode,
    },
    Deleted {
        code: SessionCode,
    },
    Presence {
        state: PresenceState,
    },
    Sent {
        code: SessionCode,
    },
    Pong {},
    Status {
        code: SessionCode,
        status: Status,
        customer_connected: bool,
        supporter_connected: bool,
        /// The assignee as the customer sees it (`{name}`), or null.
        supporter: Option<SupporterView>,
    },
    Chat {
        code: SessionCode,
        #[serde(flatten)]
        line: ChatLine,
        /// A whisper: only agents get it (absent otherwise).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        internal: bool,
    },
    Signal {
        code: SessionCode,
        from: SignalFrom,
        data: Value,
    },
    Ended {
        code: SessionCode,
        reason: EndReason,
    },
    Queue {
        code: SessionCode,
        position: usize,
        /// Seconds the customer may still wait (see `proto/README.md`);
        /// null while unknown.
        estimated_wait_s: Option<u64>,
    },
    Agent {
        agent: AgentStatus,
    },
    Groups {
        groups: Vec<GroupInfo>,
    },
    /// A group's numbers changed: to the subscribers that see the group.
    Stats {
        groups: Vec<GroupStats>,
    },
    /// To the agent invited to help with a case (`invite`).
    Invited {
        code: SessionCode,
        case: CaseBody,
        /// The inviting agent's id.
        by: String,
    },
    /// To the agent automation offers a case (`offer_timeout`): `accept`
    /// before `expires_at` takes it.
    Offer {
        code: SessionCode,
        case: CaseBody,
        #[serde(with = "crate::case::wire_time")]
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    Error {
        code: ErrorCode,
        message: String,
        /// For `closed`: when the group opens next (null when it opens on
        /// no day of the next 400); absent for every other code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opens_at: Option<Option<String>>,
    },
}

impl ServerMsg {
    /// Serialises the message with an optional `id`, once, to the text of a
    /// frame.
    pub fn to_text(&self, id: Option<&Id>) -> String {
        let mut out = Vec::with_capacity(128);
        self.write_json(id, &mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Appends the message, with an optional `id`, as JSON to `out`.
    pub fn write_json(&self, id: Option<&Id>, out: &mut Vec<u8>) {
        #[derive(Serialize)]
        struct WithId<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a Id>,
            #[serde(flatten)]
            msg: &'a ServerMsg,
        }
        serde_json::to_writer(out, &WithId { id, msg: self }).expect("server messages serialise")
    }
}

/// The error codes of the contract, each with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    TooLarge,
    Unavailable,
    Internal,
    /// HTTP only: the path exists, not with this method (405).
    MethodNotAllowed,
    /// HTTP only: the request's body did not arrive in time (408).
    Timeout,
    /// Outside the group's opening hours (`request_help`, `POST
    /// /v1/help`); the error carries `opens_at`.
    Closed,
}

impl ErrorCode {
    /// The matching HTTP status.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Timeout => 408,
            ErrorCode::Closed => 503,
        }
    }
}

/// WebSocket close codes of the contract.
pub mod close {
    /// Normal closure: a customer's case ended.
    pub const NORMAL: u16 = 1000;
    /// Going away: the peer stopped answering pings.
    pub const GOING_AWAY: u16 = 1001;
    /// Policy violation, e.g. a binary frame.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_LARGE: u16 = 1009;
    /// A frame that breaks the WebSocket protocol (an unmasked client
    /// frame, reserved bits set, a bad opcode).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The server is shutting down; reconnect.
    pub const SHUTDOWN: u16 = 4000;
    /// The connection's outbound queue overflowed; reconnect and resume.
    pub const SLOW: u16 = 4001;
    /// Too many bad messages or too many messages; reconnect later.
    pub const RATE_LIMITED: u16 = 4002;
    /// Bad agent token; do not reconnect.
    pub const UNAUTHORIZED: u16 = 4500;
    /// No `hello` in time; do not reconnect.
    pub const HELLO_TIMEOUT: u16 = 4501;
    /// The first message was not a `hello`; do not reconnect.
    pub const NO_HELLO: u16 = 4502;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_tolerates_unknown_fields_and_echoes_id() {
        let m = decode_client(r#"{"type":"ping","id":7,"future":true}"#).unwrap();
        assert_eq!(m.id, Some(Id::Num(7)));
        assert_eq!(m.msg, ClientMsg::Ping {});
    }

    #[test]
    fn decode_errors_keep_the_id_when_they_can() {
        let e = decode_client(r#"{"type":"nope","id":"a"}"#).unwrap_err();
        assert_eq!(e.id, Some(Id::Str("a".into())));
        let e = decode_client(r#"{"type":"join","id":"b"}"#).unwrap_err();
        assert_eq!(e.id, Some(Id::Str("b".into())));
        assert!(e.message.contains("code"), "{}", e.message);
        assert!(decode_client("{").unwrap_err().id.is_none());
        assert!(
            decode_client(r#"{"type":"ping","id":[1]}"#)
                .unwrap_err()
                .id
                .is_none()
        );
    }

    #[test]
    fn every_wire_type_is_listed() {
        // One object that carries every command's required fields.
        let all = serde_json::json!({"role": "customer", "code": "s12345678", "assignee": null,
            "state": "away", "text": "", "data": null, "module": "m", "group": "g", "agent": "a"});
        for ty in ClientMsg::TYPES {
            let mut v = all.clone();
            v["type"] = ty.into();
            let msg =
                decode_client(&v.to_string()).unwrap_or_else(|e| panic!("{ty}: {}", e.message));
            assert_eq!(msg.msg.wire_type(), ty);
        }
    }

    #[test]
    fn assign_requires_assignee_but_accepts_null() {
        assert!(decode_client(r#"{"type":"assign","code":"s12345678"}"#).is_err());
        let m = decode_client(r#"{"type":"assign","code":"s12345678","assignee":null}"#).unwrap();
        assert!(matches!(m.msg, ClientMsg::Assign { assignee: None, .. }));
    }
}
