//! Images: a company's log does not grow for ever. The node that holds a
//! company writes, every `snapshot_interval`, an image of it as of one
//! commit: the records changed since the last image (a hash of records,
//! updated in place), the stream's epoch, seq and history, and the live
//! state (seats, agent connections, presence) as the changes that rebuild
//! it. The log before the image, less a margin for nodes a little behind,
//! is trimmed. A node starts from the image and the log after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::core::change::Change;
use crate::core::effect::Event;
use crate::core::record::CaseRecord;
use crate::core::restore::Image;
use crate::store::format::HeldEvent;

use super::Cluster;

/// Commits kept in the log before the image, so that a node a little
/// behind catches up from the log rather than from the image.
pub const KEEP: u64 = 1000;

/// What an image holds beside the records.
#[derive(Serialize, Deserialize)]
struct Meta {
    /// The commit the image stands at.
    at: u64,
    epoch: String,
    seq: u64,
    next_line_seq: u64,
    history: Vec<HeldEvent>,
    /// Seats, agent connections and presence, as changes.
    live: Vec<Change>,
}

/// Stores an image unless a newer one is there. KEYS: image, image-at,
/// cases, log. ARGV: at, trim below (0: none), meta, whole (1: the records
/// replace all there were), number of records, then code and record for
/// each, then the codes removed. Returns 1 when stored, 0 when a newer
/// image was there.
pub(super) const STORE: &str = r"
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if cur >= tonumber(ARGV[1]) then return 0 end
if ARGV[4] == '1' then redis.call('DEL', KEYS[3]) end
local n = tonumber(ARGV[5])
for i = 0, n - 1 do
  redis.call('HSET', KEYS[3], ARGV[6 + 2 * i], ARGV[7 + 2 * i])
end
for i = 6 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[3], ARGV[i])
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('XTRIM', KEYS[4], 'MINID', ARGV[2] .. '-0')
end
return 1
";

/// A company as an image holds it, ready for the core.
pub(super) struct Loaded {
    pub at: u64,
    pub image: Image,
    /// The directory's changes (agents added through the admin API), to
    /// apply before the records.
    pub directory: Vec<Change>,
    pub live: Vec<Change>,
}

impl Cluster {
    /// Every `interval`, writes an image of each company this node holds
    /// that changed since its last one.
    pub(super) async fn images(self: Arc<Self>, interval: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for shard in 0..self.links.len() {
                if let Err(e) = self.image(shard).await {
                    tracing::debug!(company = %self.links[shard].company, error = %e, "no image this time");
                }
            }
        }
    }

    /// Writes one company's image, when this node holds it and it changed.
    pub(super) async fn image(self: &Arc<Self>, shard: usize) -> Result<(), String> {
        let link = &self.links[shard];
        if !self.holds(shard) {
            return Ok(());
        }
        let imaged = link.imaged.load(Ordering::Acquire);
        if link.committed.load(Ordering::Acquire) <= imaged {
            return Ok(());
        }
        let _hold = self.hold(shard).await.map_err(|e| e.message.to_string())?;
        // A whole image replaces every record stored; otherwise the records
        // changed since this node's last image are enough.
        let whole = link.whole_image.swap(false, Ordering::AcqRel);
        if whole {
            self.broker().mark_all_dirty(shard);
        }
        let (capture, live) = self
            .broker()
            .capture_live(shard, || link.committed.load(Ordering::Acquire));
        let at = capture.position;
        // The image is of the copy as of commit `at`: stored only once the
        // log holds every commit up to it.
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        while link.applied.load(Ordering::Acquire) < at {
            if tokio::time::Instant::now() >= until || self.astray(shard) {
                link.whole_image.store(true, Ordering::Release);
                return Err("the commits before the image were not stored".into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let meta = Meta {
            at,
            epoch: capture.epoch.clone(),
            seq: capture.seq,
            next_line_seq: capture.next_line_seq,
            history: capture.history.iter().map(|ev| HeldEvent::of(ev)).collect(),
            live,
        };
        let meta = postcard::to_allocvec(&meta).map_err(|e| e.to_string())?;
        let trim = at.saturating_sub(KEEP);
        let mut inv = self.scripts.store_image.prepare_invoke();
        inv.key(&link.keys.image)
            .key(&link.keys.image_at)
            .key(&link.keys.cases)
            .key(&link.keys.log)
            .arg(at)
            .arg(trim)
            .arg(meta)
            .arg(if whole { "1" } else { "0" })
            .arg(capture.upserts.len());
        for rec in &capture.upserts {
            let bytes = postcard::to_allocvec(rec).map_err(|e| e.to_string())?;
            inv.arg(rec.code.key()).arg(bytes);
        }
        for code in &capture.removed {
            inv.arg(code.key());
        }
        let mut conn = self.conn.clone();
        let r: redis::RedisResult<i64> = inv.invoke_async(&mut conn).await;
        self.saw(&r);
        match r {
            Ok(1) => {
                link.imaged.store(at, Ordering::Release);
                tracing::debug!(company = %link.company, at, records = capture.upserts.len(), "image stored");
                Ok(())
            }
            other => {
                // Whatever the image did not store must be in the next one.
                link.whole_image.store(true, Ordering::Release);
                Err(match other {
                    Ok(_) => "a newer image is there".into(),
                    Err(e) => e.to_string(),
                })
            }
        }
    }

    /// Reads a company's image, if it has one: meta, records and the
    /// commit it stands at, in one transaction.
    pub(super) async fn load_image(&self, shard: usize) -> redis::RedisResult<Option<Loaded>> {
        let link = &self.links[shard];
        let mut conn = self.conn.clone();
        let (meta, cases): (Option<Vec<u8>>, HashMap<u64, Vec<u8>>) = redis::pipe()
            .atomic()
            .get(&link.keys.image)
            .hgetall(&link.keys.cases)
            .query_async(&mut conn)
            .await?;
        let Some(meta) = meta else {
            return Ok(None);
        };
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            redis::RedisError::from((
                redis::ErrorKind::Parse,
                "the company's image cannot be read",
                format!("{}: {what}: {e}", link.company),
            ))
        };
        let meta: Meta = postcard::from_bytes(&meta).map_err(|e| bad("meta", &e))?;
        let epoch: Arc<str> = Arc::from(meta.epoch.as_str());
        let mut history = Vec::with_capacity(meta.history.len());
        for h in meta.history {
            let case = serde_json::from_str(&h.case_json).map_err(|e| bad("an event", &e))?;
            history.push(Arc::new(Event {
                epoch: epoch.clone(),
                seq: h.seq,
                action: h.action,
                group: h.group,
                left: None,
                case,
            }));
        }
        let mut records: Vec<CaseRecord> = Vec::with_capacity(cases.len());
        for bytes in cases.values() {
            records.push(postcard::from_bytes(bytes).map_err(|e| bad("a case", &e))?);
        }
        let (directory, live): (Vec<Change>, Vec<Change>) =
            meta.live.into_iter().partition(Change::directory);
        Ok(Some(Loaded {
            at: meta.at,
            directory,
            image: Image {
                epoch: meta.epoch,
                seq: meta.seq,
                next_line_seq: meta.next_line_seq,
                history,
                cases: records,
            },
            live,
        }))
    }
}
