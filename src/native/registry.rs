//! The registry the fleet follows: config versions published once to the
//! Redis the fleet shares, applied by every node that follows it within
//! a second (records: `kv-schema/registry.md`).
//!
//! - `publish` checks a file exactly as `portcullis check` does, then one
//!   script stores it as the next version, makes it current, drops the
//!   version [`KEEP`] back and announces it on a channel.
//! - A following node applies the current version at start (or, with the
//!   store unreachable, the last one it applied, kept on disk), then each
//!   new one as it is announced, checking the current version every
//!   `check_every` too, for an announcement it missed. A version it cannot
//!   compile is reported and not applied: the running config stays.
//! - Each following node says which version it runs, every `check_every`,
//!   for `portcullis versions`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use redis::Script;
use serde::{Deserialize, Serialize};

use super::consumers::ConsumerSync;
use super::redis_kv::RedisKv;
use super::{env_variables, now_rfc3339, server, unix_now, write_private};
use crate::config::published::{EDGE_CONFIG, EDGE_CURRENT, EdgeConfig};
use crate::config::{Config, ConfigErrors};
use crate::pipeline::authn::apikey::Registered;
use crate::ports::KvError;
use crate::ports::sealed;

/// Versions kept: the current one and those before it.
pub const KEEP: u64 = 20;
/// One hash tag: every key on one cluster slot, so one script sees them all.
const SEQ: &str = "pc1:{cfg}:seq";
const CURRENT: &str = "pc1:{cfg}:current";
const VERSION: &str = "pc1:{cfg}:v:";
const NODES: &str = "pc1:{cfg}:nodes";
pub(super) const CHANNEL: &str = "pc1:{cfg}:announce";
/// A node not heard from for this many checks is shown as gone, then dropped.
const GONE_AFTER_CHECKS: u32 = 3;

/// Stores the next version, makes it current (for the edge too), drops
/// the one `KEEP` back and announces it: `KEYS` seq, current, the version
/// prefix, the edge's current and config; `ARGV` the record, `KEEP`, the
/// channel, when it was published, an envelope's head, the edge record
/// after its version, the config's hash.
const PUBLISH: &str = r#"
local n = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3] .. n, ARGV[1])
redis.call('SET', KEYS[2], n .. ' ' .. ARGV[4])
redis.call('SET', KEYS[5], ARGV[5] .. 'pc1c ' .. n .. ' ' .. ARGV[6])
redis.call('SET', KEYS[4], ARGV[5] .. n .. ' ' .. ARGV[7])
local gone = n - tonumber(ARGV[2])
if gone > 0 then redis.call('DEL', KEYS[3] .. gone) end
redis.call('PUBLISH', ARGV[3], n)
return n
"#;

/// Makes a kept version current (`ARGV[3]`, its pointer; `ARGV[4]` and
/// `ARGV[5]` the edge's) and announces it; 0 if it is not kept.
const ROLLBACK: &str = r#"
if redis.call('EXISTS', KEYS[2] .. ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
redis.call('SET', KEYS[4], ARGV[5])
redis.call('PUBLISH', ARGV[2], ARGV[1])
return 1
"#;

/// A published version as stored (its number is in its key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    #[serde(skip)]
    pub version: u64,
    pub sha256: String,
    pub published_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The file it was published from, for errors and the admin API.
    pub file: String,
    /// The config's text, as in the file.
    pub config: String,
}

impl Published {
    /// Compiles the config with this node's environment, as a file is.
    pub(crate) fn compile(&self) -> Result<Config, ConfigErrors> {
        Config::parse(&self.config, &self.label(), &env_variables(&self.config))
    }

    /// How errors name it: the file it came from, and the version.
    pub(crate) fn label(&self) -> String {
        format!("{} (version {})", self.file, self.version)
    }

    /// The edge's record of it.
    fn for_edge(&self) -> Result<EdgeConfig, RegistryError> {
        EdgeConfig::new(self.version, &self.sha256, &self.published_at, &self.file, &self.config)
            .map_err(RegistryError::Store)
    }
}

/// What a node that follows the registry reports of itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    pub version: u64,
    pub sha256: String,
    pub applied_at: String,
    /// Unix seconds of this report.
    pub seen: u64,
    /// Seconds between reports.
    pub every: u64,
}

/// How a node follows the registry (`serve --config-from`).
#[derive(Debug, Clone)]
pub struct Follow {
    pub url: String,
    /// Where the last applied version is kept, for a start without the store.
    pub cache: PathBuf,
    pub check_every: Duration,
    /// How the node is named in `portcullis versions`.
    pub node_id: String,
}

/// Why a registry command failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("{0}")]
    Store(String),
    #[error("no version {0} is kept (the last {KEEP} are)")]
    NoSuchVersion(u64),
    #[error("nothing has been published yet")]
    Empty,
    #[error("{0}")]
    Consumer(String),
}

impl From<KvError> for RegistryError {
    fn from(e: KvError) -> Self {
        RegistryError::Store(e.to_string())
    }
}

pub(super) fn store(url: &str) -> Result<RedisKv, RegistryError> {
    Ok(RedisKv::new(url, 1, Duration::from_secs(5))?)
}

/// Checks `path` as `portcullis check` does, then publishes it: the new
/// version's number.
pub async fn publish(
    path: &Path,
    url: &str,
    message: Option<String>,
    author: Option<String>,
) -> Result<u64, RegistryError> {
    let (config, sha256) = super::load_config_hashed(path).map_err(RegistryError::Invalid)?;
    super::check_files(&config, path.parent().unwrap_or(Path::new(""))).map_err(RegistryError::Invalid)?;
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Store(e.to_string()))?;
    let record = Published {
        version: 0,
        sha256,
        published_at: now_rfc3339(),
        message,
        author,
        file: path.display().to_string(),
        config: text,
    };
    let json = serde_json::to_string(&record).map_err(|e| RegistryError::Store(e.to_string()))?;
    let keep = KEEP.to_string();
    let edge = record.for_edge()?.after_version();
    let args: [&[u8]; 7] = [
        json.as_bytes(),
        keep.as_bytes(),
        CHANNEL.as_bytes(),
        record.published_at.as_bytes(),
        &sealed(b""),
        &edge,
        record.sha256.as_bytes(),
    ];
    let keys = [SEQ, CURRENT, VERSION, EDGE_CURRENT, EDGE_CONFIG];
    Ok(store(url)?.script(&Script::new(PUBLISH), &keys, &args).await?)
}

/// Makes kept version `version` current again, once it compiles here.
pub async fn rollback(url: &str, version: u64) -> Result<Published, RegistryError> {
    let kv = store(url)?;
    let record = read(&kv, version).await?.ok_or(RegistryError::NoSuchVersion(version))?;
    record.compile().map_err(RegistryError::Invalid)?;
    let (n, pointer) = (version.to_string(), format!("{version} {}", record.published_at));
    let edge = record.for_edge()?;
    let args: [&[u8]; 5] = [
        n.as_bytes(),
        CHANNEL.as_bytes(),
        pointer.as_bytes(),
        &sealed(edge.pointer().as_bytes()),
        &sealed(&edge.encode()),
    ];
    let keys = [CURRENT, VERSION, EDGE_CURRENT, EDGE_CONFIG];
    let done: i64 = kv.script(&Script::new(ROLLBACK), &keys, &args).await?;
    if done == 1 { Ok(record) } else { Err(RegistryError::NoSuchVersion(version)) }
}

/// The kept versions, newest first, which one is current, and the nodes
/// that follow the registry with the version each runs (those not heard
/// from for a while are marked gone, and dropped after).
pub async fn versions(url: &str) -> Result<serde_json::Value, RegistryError> {
    let kv = store(url)?;
    let current = current(&kv).await?.map(|(n, _)| n);
    let last: Option<u64> = kv.command(cmd("GET", &[SEQ])).await?;
    let mut kept = Vec::new();
    for n in (last.unwrap_or(0).saturating_sub(KEEP - 1).max(1)..=last.unwrap_or(0)).rev() {
        if let Some(p) = read(&kv, n).await? {
            kept.push(serde_json::json!({
                "version": n,
                "current": Some(n) == current,
                "sha256": p.sha256,
                "published_at": p.published_at,
                "message": p.message,
                "author": p.author,
                "file": p.file,
            }));
        }
    }
    let nodes: Vec<(String, String)> = kv.command(cmd("HGETALL", &[NODES])).await?;
    let now = unix_now();
    let mut listed = Vec::new();
    for (node, beat) in nodes {
        let Ok(beat) = serde_json::from_str::<Heartbeat>(&beat) else { continue };
        let silent = now.saturating_sub(beat.seen);
        let limit = beat.every.max(1) * u64::from(GONE_AFTER_CHECKS);
        if silent > limit * 10 {
            let _: Result<i64, _> = kv.command(cmd("HDEL", &[NODES, &node])).await;
            continue;
        }
        listed.push(serde_json::json!({
            "node": node,
            "version": beat.version,
            "sha256": beat.sha256,
            "applied_at": beat.applied_at,
            "last_seen_s": silent,
            "gone": silent > limit,
        }));
    }
    Ok(serde_json::json!({ "current": current, "versions": kept, "nodes": listed }))
}

pub(super) fn cmd(name: &str, args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(name);
    for a in args {
        c.arg(*a);
    }
    c
}

/// Which version is current: `<n> <published_at>` (its number, and when it
/// was published: a Redis restarted empty numbers from 1 again), or a bare
/// number written by hand.
async fn current(kv: &RedisKv) -> Result<Option<(u64, String)>, RegistryError> {
    let pointer: Option<String> = kv.command(cmd("GET", &[CURRENT])).await?;
    let Some(pointer) = pointer else { return Ok(None) };
    let (n, at) = pointer.split_once(' ').unwrap_or((&pointer, ""));
    let n = n.parse().map_err(|_| RegistryError::Store(format!("{CURRENT} is not a version: `{pointer}`")))?;
    Ok(Some((n, at.to_string())))
}

async fn read(kv: &RedisKv, version: u64) -> Result<Option<Published>, RegistryError> {
    let key = format!("{VERSION}{version}");
    let json: Option<String> = kv.command(cmd("GET", &[&key])).await?;
    json.map(|j| {
        serde_json::from_str::<Published>(&j)
            .map(|p| Published { version, ..p })
            .map_err(|e| RegistryError::Store(format!("version {version} is not a record: {e}")))
    })
    .transpose()
}

/// The current version, from the store.
pub(super) async fn fetch_current(kv: &RedisKv) -> Result<Published, RegistryError> {
    let (n, _) = current(kv).await?.ok_or(RegistryError::Empty)?;
    read(kv, n).await?.ok_or(RegistryError::NoSuchVersion(n))
}

/// The version a node starts on: the store's current one (kept on disk
/// once applied), or, with the store unreachable, the one on disk.
pub(crate) async fn first(follow: &Follow) -> anyhow::Result<(Published, Config, bool)> {
    let fetched = match store(&follow.url) {
        Ok(kv) => fetch_current(&kv).await,
        Err(e) => Err(e),
    };
    let (published, from_disk) = match fetched {
        Ok(p) => (p, false),
        // Unreachable, or a Redis that came back without its data.
        Err(e @ (RegistryError::Store(_) | RegistryError::Empty)) => match load_cache(&follow.cache) {
            Some(p) => {
                tracing::warn!(
                    error = %e,
                    cache = %follow.cache.display(),
                    version = p.version,
                    "the registry is unreachable or empty: starting on the last version this node applied"
                );
                (p, true)
            }
            None => anyhow::bail!(
                "the registry at {} has no version to give ({e}) and {} holds none to start on",
                follow.url,
                follow.cache.display()
            ),
        },
        Err(e) => anyhow::bail!("the registry at {}: {e}", follow.url),
    };
    let config =
        published.compile().map_err(|e| anyhow::anyhow!("version {} does not compile:\n{e}", published.version))?;
    if !from_disk {
        save_cache(&follow.cache, &published);
    }
    Ok((published, config, from_disk))
}

/// The registry's consumers for a node about to start: read whole, or,
/// with the registry unreachable, those it kept on disk.
pub(crate) async fn first_consumers(follow: &Follow, held: &Registered) -> ConsumerSync {
    let mut sync = ConsumerSync::new(&follow.cache);
    let read = match store(&follow.url) {
        Ok(kv) => sync.sync(&kv, held).await,
        Err(e) => Err(e),
    };
    match read {
        Ok(()) => sync.save(held),
        Err(e) => {
            let kept = sync.load_disk(held);
            tracing::warn!(error = %e, consumers = kept, "the registry's consumers could not be read: starting on those kept on disk");
        }
    }
    sync
}

/// What is kept on disk: the record, its number with it.
#[derive(Serialize, Deserialize)]
struct Cached {
    version: u64,
    #[serde(flatten)]
    published: Published,
}

fn load_cache(path: &Path) -> Option<Published> {
    let text = std::fs::read_to_string(path).ok()?;
    let cached: Cached = serde_json::from_str(&text).ok()?;
    Some(Published { version: cached.version, ..cached.published })
}

/// Keeps the applied version on disk.
fn save_cache(path: &Path, published: &Published) {
    let cached = Cached { version: published.version, published: published.clone() };
    let written = write_private(path, |out| serde_json::to_writer(out, &cached).map_err(std::io::Error::other));
    if let Err(e) = written {
        tracing::warn!(cache = %path.display(), error = %e, "could not keep the applied version on disk");
    }
}

/// What a [`Watch`] saw.
#[derive(Debug)]
pub enum Seen {
    /// A version became current (or is current when the watch began).
    Version(Box<Published>),
    /// An announcement, a wake-up or (`tick`) a periodic check found no
    /// new version (consumers may have changed; a node reports itself at
    /// a tick).
    Unchanged { tick: bool },
}

/// Watches the registry's current version: announcements as they come,
/// and the pointer every `check_every` (or when woken) for one missed.
/// A node follows with one; the propagation bench runs a thousand.
pub struct Watch {
    kv: RedisKv,
    announced: tokio::sync::mpsc::Receiver<()>,
    every: tokio::time::Interval,
    wake: Arc<tokio::sync::Notify>,
    /// The pointer last seen (see [`current`]).
    last: Option<(u64, String)>,
    /// After a read failed: when to read again (sooner than the next
    /// check: Redis is likely back within moments).
    retry: Option<Duration>,
}

/// The first wait before reading again after a failed read; it doubles up
/// to the check interval.
const RETRY_FIRST: Duration = Duration::from_millis(50);

impl Watch {
    /// Subscribes (in a task of its own, again after any break) and
    /// checks at once.
    pub fn new(url: &str, check_every: Duration, wake: Arc<tokio::sync::Notify>) -> Result<Watch, RegistryError> {
        let kv = store(url)?;
        let (tx, announced) = tokio::sync::mpsc::channel::<()>(1);
        tokio::spawn(listen(url.to_string(), tx));
        let mut every = tokio::time::interval(check_every);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Watch { kv, announced, every, wake, last: None, retry: None })
    }

    /// Waits for the next version made current; a store that cannot be
    /// read is logged and tried again at the next occasion.
    pub async fn next(&mut self) -> Seen {
        loop {
            let retry = self.retry;
            let tick = tokio::select! {
                _ = self.every.tick() => true,
                Some(()) = self.announced.recv() => false,
                () = self.wake.notified() => false,
                () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => false,
            };
            // The pointer alone, and the record only when it points elsewhere.
            let found = match current(&self.kv).await {
                Ok(Some(seen)) if self.last.as_ref() == Some(&seen) => Ok(None),
                Ok(Some(seen)) => read(&self.kv, seen.0).await.map(|p| p.map(|p| (seen, p))),
                Ok(None) => Err(RegistryError::Empty),
                Err(e) => Err(e),
            };
            match found {
                Ok(None) => {
                    self.retry = None;
                    return Seen::Unchanged { tick };
                }
                Ok(Some((seen, p))) => {
                    self.retry = None;
                    self.last = Some(seen);
                    return Seen::Version(Box::new(p));
                }
                Err(e) => {
                    if self.retry.is_none() {
                        tracing::warn!(error = %e, "the registry could not be read; the running config stays");
                    }
                    let every = self.every.period();
                    self.retry = Some(retry.map_or(RETRY_FIRST, |r| (r * 2).min(every)));
                }
            }
        }
    }
}

/// Follows the registry for the node's life: each version made current
/// applied (once: one that does not compile is reported, not tried
/// again), a heartbeat with each check.
pub(crate) async fn follow(
    node: Arc<server::Node>,
    follow: Follow,
    wake: Arc<tokio::sync::Notify>,
    mut consumers: ConsumerSync,
) {
    let mut watch = match Watch::new(&follow.url, follow.check_every, wake) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot follow the registry");
            return;
        }
    };
    loop {
        let seen = watch.next().await;
        let held = node.gateway.load().caches.consumers.clone();
        if let Err(e) = consumers.sync(&watch.kv, &held).await {
            tracing::warn!(error = %e, "the registry's consumers could not be read; the ones held stay");
        }
        let tick = match seen {
            Seen::Version(published) => {
                let running = server::running_version(&node);
                if running.is_some_and(|(v, sha256, _)| v == published.version && sha256 == published.sha256) {
                    continue;
                }
                match published.compile() {
                    Ok(config) => {
                        if server::apply(&node, config, &published).is_ok() {
                            save_cache(&follow.cache, &published);
                        }
                    }
                    Err(errors) => server::rejected(&node, &published.label(), &errors),
                }
                false
            }
            Seen::Unchanged { tick } => tick,
        };
        if !tick {
            continue;
        }
        consumers.save(&held);
        if let Some((version, sha256, applied_at)) = server::running_version(&node) {
            let every = follow.check_every.as_secs().max(1);
            let beat = Heartbeat { version, sha256, applied_at, seen: unix_now(), every };
            if let Ok(json) = serde_json::to_string(&beat) {
                let _: Result<i64, _> = watch.kv.command(cmd("HSET", &[NODES, &follow.node_id, &json])).await;
            }
        }
    }
}

/// Listens for announcements, subscribing again whenever the
/// subscription breaks (after a pause that doubles from 50 ms to 2 s while
/// Redis stays away); each one wakes the follower.
async fn listen(url: String, announced: tokio::sync::mpsc::Sender<()>) {
    let client = match RedisKv::subscriber(&url) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot subscribe to the registry's announcements");
            return;
        }
    };
    let mut pause = RETRY_FIRST;
    loop {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => {
                if pubsub.subscribe(CHANNEL).await.is_ok() {
                    pause = RETRY_FIRST;
                    // A version published while unsubscribed: the follower checks on (re)subscribing.
                    let _ = announced.try_send(());
                    let mut messages = pubsub.on_message();
                    while messages.next().await.is_some() {
                        let _ = announced.try_send(());
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "the registry's announcements: not subscribed"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON block after `<!-- tag -->` in the kv-schema document.
    fn example(tag: &str) -> String {
        let doc = include_str!("../../kv-schema/registry.md");
        let after = doc.split(&format!("<!-- {tag} -->")).nth(1).expect("tagged example");
        crate::ports::testing::doc_block(after, "json")
    }

    #[test]
    fn kv_schema_records_match_the_code() {
        let record: Published = serde_json::from_str(&example("record")).unwrap();
        assert!(crate::ports::testing::is_sha256_hex(&record.sha256));
        assert_eq!((record.message.as_deref(), record.author.as_deref()), (Some("route /two"), Some("ops")));
        let config = Published { version: 7, ..record.clone() }.compile().unwrap();
        assert_eq!(config.size(), (1, 1));
        let back: Published = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(back, record, "written as read");
        let beat: Heartbeat = serde_json::from_str(&example("heartbeat")).unwrap();
        assert_eq!((beat.version, beat.every), (7, 5));
    }

    /// What a node keeps on disk brings the version back with its number;
    /// anything else there is no version to start on.
    #[test]
    fn the_applied_version_is_kept_on_disk_whole() {
        let dir = std::env::temp_dir().join(format!("portcullis-registry-{}", std::process::id()));
        let path = dir.join("state").join("published.json");
        let record: Published = serde_json::from_str(&example("record")).unwrap();
        let published = Published { version: 12, ..record };
        save_cache(&path, &published);
        assert_eq!(load_cache(&path), Some(published));
        std::fs::write(&path, b"{ half").unwrap();
        assert_eq!(load_cache(&path), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}
