//! `proto/` pinned by tests: every golden file in `proto/examples` parses
//! into the protocol types and re-serialises to exactly the same JSON, the
//! files cover every message type of both directions, and the status table
//! of `proto/README.md` is the one `casebroker::case::status` implements.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use casebroker::case::{Seats, Status, Terminal, status};
use casebroker::protocol::{CaseBody, ClientMsg, Envelope, ServerMsg, decode_client};
use serde_json::Value;

/// Every server message type on the wire (see `server_type`).
const SERVER_TYPES: [&str; 23] = [
    "welcome",
    "snapshot",
    "resumed",
    "event",
    "unsubscribed",
    "case",
    "joined",
    "left",
    "deleted",
    "presence",
    "sent",
    "pong",
    "status",
    "chat",
    "signal",
    "ended",
    "queue",
    "agent",
    "groups",
    "invited",
    "stats",
    "offer",
    "error",
];

/// Server messages that are pushes: they never carry an `id`.
const PUSHES: [&str; 11] = [
    "event", "status", "chat", "signal", "ended", "queue", "agent", "groups", "invited", "stats",
    "offer",
];

fn server_type(msg: &ServerMsg) -> &'static str {
    match msg {
        ServerMsg::Welcome { .. } => "welcome",
        ServerMsg::Snapshot { .. } => "snapshot",
        ServerMsg::Resumed { .. } => "resumed",
        ServerMsg::Event { .. } => "event",
        ServerMsg::Unsubscribed {} => "unsubscribed",
        ServerMsg::Case { .. } => "case",
        ServerMsg::Joined { .. } => "joined",
        ServerMsg::Left { .. } => "left",
        ServerMsg::Deleted { .. } => "deleted",
        ServerMsg::Presence { .. } => "presence",
        ServerMsg::Sent { .. } => "sent",
        ServerMsg::Pong {} => "pong",
        ServerMsg::Status { .. } => "status",
        ServerMsg::Chat { .. } => "chat",
        ServerMsg::Signal { .. } => "signal",
        ServerMsg::Ended { .. } => "ended",
        ServerMsg::Queue { .. } => "queue",
        ServerMsg::Agent { .. } => "agent",
        ServerMsg::Groups { .. } => "groups",
        ServerMsg::Invited { .. } => "invited",
        ServerMsg::Stats { .. } => "stats",
        ServerMsg::Offer { .. } => "offer",
        ServerMsg::Error { .. } => "error",
    }
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

/// One file of `proto/examples`.
struct Golden {
    /// The file name, e.g. `server.joined.customer.json`.
    name: String,
    /// `client` or `server`.
    side: String,
    /// The second part of the name, which must be the message's `type`.
    kind: String,
    text: String,
    json: Value,
}

/// Every golden file, sorted by name. Each must be named
/// `client.<type>[.<variant>].json` or `server.<type>[.<variant>].json` and
/// hold one JSON object whose `type` is `<type>`.
fn goldens() -> Vec<Golden> {
    let dir = proto_dir().join("examples");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        assert!(
            parts.len() >= 3
                && parts.last() == Some(&"json")
                && matches!(parts[0], "client" | "server"),
            "{name}: golden files are named client.<type>[.<variant>].json or server.<type>[.<variant>].json"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let json: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert!(json.is_object(), "{name}: not a JSON object");
        assert_eq!(
            json["type"], parts[1],
            "{name}: the name's second part must be the message's type"
        );
        out.push(Golden {
            side: parts[0].to_string(),
            kind: parts[1].to_string(),
            name,
            text,
            json,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no golden files in {}", dir.display());
    out
}

#[test]
fn client_examples_round_trip() {
    for g in goldens().iter().filter(|g| g.side == "client") {
        let env: Envelope<ClientMsg> = serde_json::from_value(g.json.clone())
            .unwrap_or_else(|e| panic!("{}: does not parse as a client message: {e}", g.name));
        assert_eq!(env.msg.wire_type(), g.kind, "{}", g.name);
        let back = serde_json::to_value(&env).unwrap();
        assert_eq!(back, g.json, "{}: re-serialised differently", g.name);

        // The path the server really takes.
        let decoded = decode_client(&g.text)
            .unwrap_or_else(|e| panic!("{}: decode_client refused it: {}", g.name, e.message));
        assert_eq!(
            decoded, env,
            "{}: decode_client read it differently",
            g.name
        );
    }
}

#[test]
fn server_examples_round_trip() {
    for g in goldens().iter().filter(|g| g.side == "server") {
        let env: Envelope<ServerMsg> = serde_json::from_value(g.json.clone())
            .unwrap_or_else(|e| panic!("{}: does not parse as a server message: {e}", g.name));
        assert_eq!(server_type(&env.msg), g.kind, "{}", g.name);
        let back = serde_json::to_value(&env).unwrap();
        assert_eq!(back, g.json, "{}: re-serialised differently", g.name);

        // The path the server really takes to write a frame.
        let frame: Value = serde_json::from_str(&env.msg.to_text(env.id.as_ref())).unwrap();
        assert_eq!(frame, g.json, "{}: to_text wrote it differently", g.name);

        if PUSHES.contains(&g.kind.as_str()) {
            assert!(env.id.is_none(), "{}: pushes carry no id", g.name);
        }

        // `case` and `joined` carry either view; the file says which.
        let customer_file = g.name.contains(".customer.");
        let body = match &env.msg {
            ServerMsg::Case { case } | ServerMsg::Joined { case, .. } => case,
            _ => continue,
        };
        match body {
            CaseBody::Agent(_) => assert!(!customer_file, "{}: read as the agent view", g.name),
            CaseBody::Customer(_) => {
                assert!(customer_file, "{}: read as the customer view", g.name)
            }
        }
    }
}

#[test]
fn examples_cover_every_message_type() {
    let all = goldens();
    let covered = |side: &str| -> BTreeSet<String> {
        all.iter()
            .filter(|g| g.side == side)
            .map(|g| g.kind.clone())
            .collect()
    };
    let want =
        |types: &[&str]| -> BTreeSet<String> { types.iter().map(|t| t.to_string()).collect() };
    assert_eq!(
        covered("client"),
        want(&ClientMsg::TYPES),
        "client message types"
    );
    assert_eq!(
        covered("server"),
        want(&SERVER_TYPES),
        "server message types"
    );
    // Both views of `case` and `joined`.
    for name in ["server.joined.customer.json", "server.case.customer.json"] {
        assert!(all.iter().any(|g| g.name == name), "missing {name}");
    }
}

#[test]
fn readme_names_every_example() {
    let readme = std::fs::read_to_string(proto_dir().join("README.md")).unwrap();
    for g in goldens() {
        assert!(
            readme.contains(&format!("examples/{}", g.name)),
            "proto/README.md does not mention examples/{}",
            g.name
        );
    }
}

/// The rows of the status table in `proto/README.md`: condition and status.
fn readme_status_table() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(proto_dir().join("README.md")).unwrap();
    let mut lines = readme
        .lines()
        .skip_while(|l| l.replace(' ', "") != "|condition(checkedtop-down)|status|");
    assert!(
        lines.next().is_some(),
        "proto/README.md has no `| condition (checked top-down) | status |` table"
    );
    let separator = lines.next().unwrap_or_default();
    assert!(separator.starts_with("|-"), "table separator: {separator}");
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 2, "status table row: {l}");
            (cells[0].to_string(), cells[1].trim_matches('`').to_string())
        })
        .collect()
}

/// Each documented row: its condition, its status, and the condition as a
/// predicate over the inputs of `case::status`.
type Row = (&'static str, Status, fn(Option<Terminal>, Seats) -> bool);

const ROWS: [Row; 5] = [
    (
        "closed by the assignee, the creator, or an admin",
        Status::Closed,
        |t, _| t == Some(Terminal::Closed),
    ),
    (
        "not closed within the TTL after creation",
        Status::Expired,
        |t, _| t == Some(Terminal::Expired),
    ),
    (
        "customer seat and supporter seat both occupied",
        Status::InProgress,
        |_, s| s.customer && s.supporter,
    ),
    (
        "at least one seat occupied, or was occupied before",
        Status::Pending,
        |_, s| s.customer || s.supporter || s.ever_occupied,
    ),
    ("nobody has ever connected", Status::New, |_, _| true),
];

#[test]
fn readme_status_table_matches_case_status() {
    let table = readme_status_table();
    assert_eq!(table.len(), ROWS.len(), "status table rows: {table:?}");
    for (i, ((condition, name), (want_condition, want_status, _))) in
        table.iter().zip(ROWS.iter()).enumerate()
    {
        assert_eq!(condition, want_condition, "row {}", i + 1);
        assert_eq!(
            Status::parse(name),
            Some(*want_status),
            "row {}: status `{name}`",
            i + 1
        );
    }
    let listed: BTreeSet<&str> = table.iter().map(|(_, s)| s.as_str()).collect();
    let all: BTreeSet<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(listed, all, "every status appears once");

    // Checked top-down, the table gives what `case::status` gives, for
    // every input; and each row is the first to hold for some input.
    let mut rows_used = BTreeSet::new();
    for terminal in [None, Some(Terminal::Closed), Some(Terminal::Expired)] {
        for bits in 0..8u8 {
            let seats = Seats {
                customer: bits & 1 != 0,
                supporter: bits & 2 != 0,
                ever_occupied: bits & 4 != 0,
            };
            let (row, (_, by_table, _)) = ROWS
                .iter()
                .enumerate()
                .find(|(_, (_, _, holds))| holds(terminal, seats))
                .expect("the last row always holds");
            rows_used.insert(row);
            assert_eq!(
                status(terminal, seats),
                *by_table,
                "terminal {terminal:?}, seats {seats:?}: row {}",
                row + 1
            );
        }
    }
    assert_eq!(rows_used.len(), ROWS.len(), "every row decides some case");
}
