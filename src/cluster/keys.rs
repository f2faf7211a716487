//! What the nodes of a cluster keep in Redis, and the scripts that change
//! it atomically.
//!
//! Per company `{c}` (the braces keep a company's keys in one slot):
//! - `casebroker:{c}:log`: a stream of stored commits, entry `<n>-1` the
//!   n-th, field `c` the postcard-encoded batches of changes;
//! - `casebroker:{c}:head`: the number of the last commit;
//! - `casebroker:{c}:lease`: the node allowed to append (`<node>`), with a
//!   time to live;
//! - `casebroker:{c}:epoch`, `casebroker:{c}:shape`: the stream's epoch and
//!   the company's agents and groups, set by the first node;
//! - `casebroker:{c}:image`, `casebroker:{c}:image-at`, `casebroker:{c}:cases`:
//!   the latest image (see [`super::image`]): its meta, the commit it
//!   stands at, and the records by code;
//! - `casebroker:{c}:followers`: the nodes holding the company in memory
//!   (node number → when it last said so, Unix ms), which its log notices
//!   go to.
//!
//! Shared by all: `casebroker:nodes` (node number → last heartbeat, ms),
//! `casebroker:node-names`, `casebroker:node-seq`, `casebroker:where:<n>`
//! (the company of each session code, token and module key, over 64
//! hashes), and
//! `casebroker:limit:*` counters. Channels: `casebroker:log:<n>` (the log
//! notices of the companies node `n` follows, see [`append`];
//! `casebroker:log`, where nodes of earlier versions published them, is
//! still listened to), `casebroker:free` (a lease given up), `casebroker:relay`
//! (signals to another node's connections), and `casebroker:node:<n>`
//! (commands forwarded to node `n` and its answers, see `super::calls`);
//! `casebroker:node-left:<n>` marks a node that stopped cleanly (an hour).
//! `casebroker:links` (node number → link address) and
//! `casebroker:link-secret` are the direct links' (see `super::peers`).

use redis::Script;

pub const NODES: &str = "casebroker:nodes";
pub const NODE_NAMES: &str = "casebroker:node-names";
pub const NODE_SEQ: &str = "casebroker:node-seq";
/// How many hashes `casebroker:where:<n>` the names are spread over, so
/// that on Redis Cluster they spread over the shards.
pub const WHERE_PARTS: u8 = 64;

/// The hash that tells which company the name `field` (a session code,
/// token hash or module key, see `super::resident`) belongs to.
pub fn where_key(field: &str) -> String {
    use sha2::Digest;
    let part = sha2::Sha256::digest(field.as_bytes())[0] % WHERE_PARTS;
    format!("casebroker:where:{part}")
}

pub const LOG_CHANNEL: &str = "casebroker:log";

/// The channel of the log notices node `node` follows.
pub fn log_channel(node: u64) -> String {
    format!("casebroker:log:{node}")
}

/// How long a node's word that it follows a company counts (it renews it
/// every heartbeat): notices go to the nodes that said so within this.
/// Past it (a node gone, or clocks further apart than this) a follower
/// still reads the log every second.
pub const FOLLOW_MS: i64 = 10_000;
pub const FREE_CHANNEL: &str = "casebroker:free";
pub const RELAY_CHANNEL: &str = "casebroker:relay";

/// The channel of node `node`: calls forwarded to it and its answers.
pub fn node_channel(node: u64) -> String {
    format!("casebroker:node:{node}")
}

/// Set by a node that stopped cleanly, once every call it read is
/// answered: a call to it left without an answer was never read, so it
/// did not run.
pub fn node_left(node: u64) -> String {
    format!("casebroker:node-left:{node}")
}

/// A lease lives this long unless renewed (or used to append).
pub const LEASE_MS: u64 = 3000;

/// The keys of one company.
#[derive(Clone, Debug)]
pub struct CompanyKeys {
    pub log: String,
    pub head: String,
    pub lease: String,
    pub epoch: String,
    pub shape: String,
    pub image: String,
    pub image_at: String,
    pub cases: String,
    pub followers: String,
}

impl CompanyKeys {
    pub fn new(company: &str) -> CompanyKeys {
        let k = |what: &str| format!("casebroker:{{{company}}}:{what}");
        CompanyKeys {
            log: k("log"),
            head: k("head"),
            lease: k("lease"),
            epoch: k("epoch"),
            shape: k("shape"),
            image: k("image"),
            image_at: k("image-at"),
            cases: k("cases"),
            followers: k("followers"),
        }
    }
}

/// The stream id of the n-th commit.
pub fn entry_id(n: u64) -> String {
    format!("{n}-1")
}

/// Takes the lease when it is free or ours. KEYS: lease, head. ARGV:
/// node, ttl ms. Returns `{1, head}` when taken, `{0, holder}` otherwise.
pub fn acquire() -> Script {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
return {0, tonumber(holder)}
",
    )
}

/// The most bytes of commits a log notice carries; past it, the notice
/// says only the new head and followers read the log.
pub const NOTICE_BYTES: usize = 16 * 1024;

/// Appends commits when the lease is ours and the log is where we left
/// it, bumps the head and tells the company's followers, all at once.
/// KEYS: lease, head, log, followers. ARGV: node, expected head, company,
/// ttl ms, now (Unix ms), the nodes this one has a link to (`,2,5,`: they
/// are named back rather than published to, see `super::peers`), then one
/// encoded commit each. Returns `{head, node...}`: the new head and the
/// linked followers, to which this node sends the notice itself (see
/// [`Notice::write`]); `{-1}` when the lease is not ours, `{-2}` when the
/// head moved.
///
/// The notice is `<company> <head>`, followed, when the commits come to at
/// most [`NOTICE_BYTES`], by ` <first>` (the number of the first commit)
/// and ` <length>:<bytes>` for each commit: a follower that stands just
/// before them applies them without reading the log (see `super::log`).
/// It goes to `casebroker:log:<n>` of each node `n` but this one that said
/// within [`FOLLOW_MS`] that it follows the company; older words are
/// dropped.
pub fn append() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
if head ~= tonumber(ARGV[2]) then return {-2} end
local first = head + 1
local size = 0
for i = 7, #ARGV do
  head = head + 1
  redis.call('XADD', KEYS[3], head .. '-1', 'c', ARGV[i])
  size = size + #ARGV[i]
end
redis.call('SET', KEYS[2], head)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local since = tonumber(ARGV[5]) - FOLLOW_MS
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. since)
local followers = redis.call('ZRANGE', KEYS[4], 0, -1)
local out = {head}
local msg
for _, n in ipairs(followers) do
  if n ~= ARGV[1] then
    if string.find(ARGV[6], ',' .. n .. ',', 1, true) then
      out[#out + 1] = n
    else
      if not msg then
        local notice = {ARGV[3], ' ', head}
        if size <= NOTICE_BYTES then
          notice[#notice + 1] = ' ' .. first
          for i = 7, #ARGV do
            notice[#notice + 1] = ' ' .. #ARGV[i] .. ':'
            notice[#notice + 1] = ARGV[i]
          end
        end
        msg = table.concat(notice)
      end
      redis.call('PUBLISH', 'casebroker:log:' .. n, msg)
    end
  end
end
return out
"
        .replace("NOTICE_BYTES", &NOTICE_BYTES.to_string())
        .replace("FOLLOW_MS", &FOLLOW_MS.to_string())
        .as_str(),
    )
}

/// A log notice read: the company, the head, and the commits it carries
/// (the first one's number and each one's bytes), if any.
#[derive(Debug, PartialEq)]
pub struct Notice<'a> {
    pub company: &'a str,
    pub head: u64,
    pub commits: Option<(u64, Vec<&'a [u8]>)>,
}

impl<'a> Notice<'a> {
    /// Writes the notice [`append`] publishes for `commits`, the commits
    /// `head - commits.len() + 1` to `head` of `company`: what a holder
    /// sends its linked followers itself.
    pub fn write(company: &str, head: u64, commits: &[Vec<u8>]) -> Vec<u8> {
        use std::io::Write;
        let size: usize = commits.iter().map(Vec::len).sum();
        let mut out = Vec::with_capacity(company.len() + 24 + size + 8 * commits.len());
        let _ = write!(out, "{company} {head}");
        if size <= NOTICE_BYTES {
            let _ = write!(out, " {}", head + 1 - commits.len() as u64);
            for c in commits {
                let _ = write!(out, " {}:", c.len());
                out.extend_from_slice(c);
            }
        }
        out
    }

    /// Reads a notice of [`append`]; `None` when it is not one.
    pub fn parse(bytes: &'a [u8]) -> Option<Notice<'a>> {
        fn word(bytes: &[u8]) -> (&[u8], &[u8]) {
            match bytes.iter().position(|&b| b == b' ') {
                Some(i) => (&bytes[..i], &bytes[i + 1..]),
                None => (bytes, &[]),
            }
        }
        fn number(bytes: &[u8]) -> Option<u64> {
            std::str::from_utf8(bytes).ok()?.parse().ok()
        }
        let (company, rest) = word(bytes);
        let company = std::str::from_utf8(company).ok()?;
        let (head, mut rest) = word(rest);
        let head = number(head)?;
        if rest.is_empty() {
            return Some(Notice {
                company,
                head,
                commits: None,
            });
        }
        let first;
        (first, rest) = word(rest);
        let first = number(first)?;
        let mut commits = Vec::new();
        while !rest.is_empty() {
            let colon = rest.iter().position(|&b| b == b':')?;
            let len = number(&rest[..colon])? as usize;
            let body = rest.get(colon + 1..colon + 1 + len)?;
            commits.push(body);
            rest = &rest[colon + 1 + len..];
            if !rest.is_empty() {
                rest = rest.strip_prefix(b" ")?;
            }
        }
        (first + commits.len() as u64 == head + 1).then_some(Notice {
            company,
            head,
            commits: Some((first, commits)),
        })
    }
}

/// Keeps the lease while ours. KEYS: lease. ARGV: node, ttl ms. Returns 1
/// when renewed, 0 when it is not ours any more.
pub fn renew() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
}

/// Starts a company's stream anew after Redis lost commits: replaces the
/// epoch when it is still the one the caller had (or gone), so every node
/// ends up with the same new one. KEYS: epoch. ARGV: old epoch, fresh
/// epoch. Returns the epoch now in force.
pub fn new_epoch() -> Script {
    Script::new(
        r"
local e = redis.call('GET', KEYS[1])
if e == false or e == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
return e
",
    )
}

/// Gives the lease up when ours and says so. KEYS: lease. ARGV: node,
/// company.
pub fn release() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
redis.call('PUBLISH', 'casebroker:free', ARGV[2])
return 1
",
    )
}

/// Counts one more event of a limit in its current window. KEYS: the
/// counter. ARGV: window ms. Returns the count in the window.
pub fn count() -> Script {
    Script::new(
        r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reads_as_the_script_writes_it() {
        assert_eq!(
            Notice::parse(b"acme 12"),
            Some(Notice {
                company: "acme",
                head: 12,
                commits: None
            })
        );
        // Commit bodies may hold spaces, colons, anything.
        let n = Notice::parse(b"acme 12 11 3:a b 4:\x00: \xff").expect("a notice");
        assert_eq!(n.head, 12);
        assert_eq!(n.commits, Some((11, vec![&b"a b"[..], &b"\x00: \xff"[..]])));
        for bad in [
            &b""[..],
            b"acme",
            b"acme x",
            b"acme 12 11 3:a b",   // says 11..12, carries one
            b"acme 12 12 9:short", // shorter than said
            b"acme 12 12 3:abcX",  // no space between commits
            b"acme 12 12 x:abc",   // no length
        ] {
            assert_eq!(
                Notice::parse(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_holder_writes_the_notice_the_script_publishes() {
        let commits = vec![b"a b".to_vec(), b"\x00: \xff".to_vec()];
        let msg = Notice::write("acme", 12, &commits);
        assert_eq!(msg, b"acme 12 11 3:a b 4:\x00: \xff");
        let n = Notice::parse(&msg).expect("a notice");
        assert_eq!(n.commits, Some((11, vec![&b"a b"[..], &b"\x00: \xff"[..]])));
        // Past NOTICE_BYTES, the head alone: followers read the log.
        let big = vec![vec![b'x'; NOTICE_BYTES], vec![b'y']];
        assert_eq!(Notice::write("acme", 7, &big), b"acme 7");
        let exactly = vec![vec![b'x'; NOTICE_BYTES]];
        let n = Notice::write("acme", 7, &exactly);
        assert_eq!(
            Notice::parse(&n).and_then(|n| n.commits).map(|c| c.0),
            Some(7)
        );
    }

    #[test]
    fn a_name_has_one_hash_on_every_node() {
        // The first byte of the field's SHA-256, modulo 64: every node and
        // every version must pick the same hash for a name.
        assert_eq!(where_key("c:s12-345-678"), "casebroker:where:50");
        assert_eq!(where_key("m:acme-qs"), "casebroker:where:61");
    }
}
