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
//!   stands at, and the records by code.
//!
//! Shared by all: `casebroker:nodes` (node number → last heartbeat, ms),
//! `casebroker:node-names`, `casebroker:node-seq`, `casebroker:where:<n>`
//! (the company of each session code, token and module key, over 64
//! hashes), and
//! `casebroker:limit:*` counters. Channels: `casebroker:log` (`<company> <head>` after each
//! append), `casebroker:free` (a lease given up), `casebroker:relay`
//! (signals to another node's connections), and `casebroker:node:<n>`
//! (commands forwarded to node `n` and its answers, see `super::calls`);
//! `casebroker:node-left:<n>` marks a node that stopped cleanly (an hour).

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

/// Appends commits when the lease is ours and the log is where we left
/// it, bumps the head and tells every node, all at once. KEYS: lease,
/// head, log. ARGV: node, expected head, company, ttl ms, then one
/// encoded commit each. Returns the new head, -1 when the lease is not
/// ours, -2 when the head moved.
pub fn append() -> Script {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
if head ~= tonumber(ARGV[2]) then return -2 end
for i = 5, #ARGV do
  head = head + 1
  redis.call('XADD', KEYS[3], head .. '-1', 'c', ARGV[i])
end
redis.call('SET', KEYS[2], head)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', 'casebroker:log', ARGV[3] .. ' ' .. head)
return head
",
    )
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
    fn a_name_has_one_hash_on_every_node() {
        // The first byte of the field's SHA-256, modulo 64: every node and
        // every version must pick the same hash for a name.
        assert_eq!(where_key("c:s12-345-678"), "casebroker:where:50");
        assert_eq!(where_key("m:acme-qs"), "casebroker:where:61");
    }
}
