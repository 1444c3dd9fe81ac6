//! API-key consumers in the registry (`kv-schema/registry.md`): added,
//! revoked, listed and imported by `portcullis consumers`, held whole in
//! memory by every node that follows the registry and changed there from
//! the registry's change log within a second.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use redis::Script;
use serde::Deserialize;

use super::redis_kv::RedisKv;
use super::registry::{CHANNEL, RegistryError, cmd, fetch_current, store};
use super::{now_rfc3339, write_private};
use crate::config::auth::parse_sha256;
pub use crate::config::published::Consumer;
use crate::config::published::{EDGE_CONSUMER, api_key_providers};
use crate::pipeline::authn::Registered;
use crate::pipeline::authn::apikey::Consumers;
use crate::ports::sealed;
use crate::shared::identity::Identity;

/// Every consumer: field `<provider>/<key_sha256>`, value its record.
const CONSUMERS: &str = "pc1:{cfg}:consumers";
/// The changes, in order (a stream): `f` the field, `r` the record (empty:
/// revoked); `f` = `*`: many changed at once (an import), read them all.
const LOG: &str = "pc1:{cfg}:consumers:log";
/// Changes kept in the log; a node further behind reads them all.
const LOG_KEPT: u64 = 100_000;
/// What announces a change of consumers on the channel.
const ANNOUNCED: &str = "consumers";

/// Sets (`ARGV[2]` a record) or deletes (empty) field `ARGV[1]`, and its
/// edge key (`ARGV[6]` + field: `ARGV[7]`, the record sealed), logs it,
/// announces it; a delete of a field that is not there changes nothing (0).
const CHANGE: &str = r#"
if ARGV[2] == '' then
  if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
  redis.call('DEL', ARGV[6] .. ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('SET', ARGV[6] .. ARGV[1], ARGV[7])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'f', ARGV[1], 'r', ARGV[2])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"#;

/// Sets many fields (`ARGV` from 6: field, record, sealed record, …) and
/// their edge keys (`ARGV[5]` + field); with `ARGV[4]` = `last`, logs one
/// `*` and announces it (nodes read the import whole, once, when its last
/// batch is in).
const IMPORT: &str = r#"
for i = 6, #ARGV, 3 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('SET', ARGV[5] .. ARGV[i], ARGV[i + 2])
end
if ARGV[4] == 'last' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'f', '*', 'r', '')
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return (#ARGV - 5) / 3
"#;

/// The current version's API-key providers, if a version is current.
async fn providers(kv: &RedisKv) -> Result<Option<Vec<String>>, RegistryError> {
    match fetch_current(kv).await {
        Ok(p) => Ok(Some(api_key_providers(&p.compile().map_err(RegistryError::Invalid)?))),
        Err(RegistryError::Empty) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Adds (or replaces: same provider and key) one consumer.
pub async fn add(url: &str, mut consumer: Consumer) -> Result<(), RegistryError> {
    let kv = store(url)?;
    consumer.key_sha256 = consumer.key_sha256.trim().to_ascii_lowercase();
    consumer.added_at = now_rfc3339();
    consumer.check(providers(&kv).await?.as_deref()).map_err(RegistryError::Consumer)?;
    let record = serde_json::to_string(&consumer).map_err(|e| RegistryError::Store(e.to_string()))?;
    change(&kv, &consumer.field(), &record).await.map(drop)
}

/// Revokes every key of consumer `id` of `provider`: how many.
pub async fn revoke(url: &str, provider: &str, id: &str) -> Result<usize, RegistryError> {
    let kv = store(url)?;
    let mut revoked = 0;
    for c in list(&kv).await?.into_iter().filter(|c| c.provider == provider && c.id == id) {
        revoked += usize::from(change(&kv, &c.field(), "").await?);
    }
    Ok(revoked)
}

async fn change(kv: &RedisKv, field: &str, record: &str) -> Result<bool, RegistryError> {
    let kept = LOG_KEPT.to_string();
    let edge = String::from_utf8_lossy(&sealed(record.as_bytes())).into_owned();
    let args = [field, record, &kept, CHANNEL, ANNOUNCED, EDGE_CONSUMER, &edge];
    let done: i64 = kv.script(&Script::new(CHANGE), &[CONSUMERS, LOG], &args).await?;
    Ok(done == 1)
}

/// Every consumer in the registry.
pub async fn list_all(url: &str) -> Result<Vec<Consumer>, RegistryError> {
    list(&store(url)?).await
}

async fn list(kv: &RedisKv) -> Result<Vec<Consumer>, RegistryError> {
    let all: Vec<(String, String)> = kv.command(cmd("HGETALL", &[CONSUMERS])).await?;
    Ok(all.into_iter().filter_map(|(_, record)| serde_json::from_str(&record).ok()).collect())
}

/// What an import file holds: `[[consumers]]` tables of [`Consumer`]s.
#[derive(Deserialize)]
struct Import {
    consumers: Vec<Consumer>,
}

/// Adds every consumer in a TOML file, all checked first (any error and
/// none is added), in batches of a thousand: how many.
pub async fn import(url: &str, path: &Path) -> Result<usize, RegistryError> {
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError::Store(format!("{}: {e}", path.display())))?;
    let file: Import =
        toml::from_str(&text).map_err(|e| RegistryError::Consumer(format!("{}: {}", path.display(), e.message())))?;
    let kv = store(url)?;
    let names = providers(&kv).await?;
    let added_at = now_rfc3339();
    let mut fields = Vec::with_capacity(file.consumers.len() * 3);
    let mut problems = Vec::new();
    for (i, mut c) in file.consumers.into_iter().enumerate() {
        c.key_sha256 = c.key_sha256.trim().to_ascii_lowercase();
        c.added_at.clone_from(&added_at);
        match c.check(names.as_deref()) {
            Ok(()) => {
                let record = serde_json::to_string(&c).map_err(|e| RegistryError::Store(e.to_string()))?;
                let edge = String::from_utf8_lossy(&sealed(record.as_bytes())).into_owned();
                fields.extend([c.field(), record, edge]);
            }
            Err(e) => problems.push(format!("{}: consumers[{i}] ({}): {e}", path.display(), c.id)),
        }
    }
    if !problems.is_empty() {
        return Err(RegistryError::Consumer(problems.join("\n")));
    }
    let kept = LOG_KEPT.to_string();
    let batches: Vec<&[String]> = fields.chunks(3_000).collect();
    for (i, batch) in batches.iter().enumerate() {
        let last = if i + 1 == batches.len() { "last" } else { "more" };
        let mut args: Vec<&str> = vec![&kept, CHANNEL, ANNOUNCED, last, EDGE_CONSUMER];
        args.extend(batch.iter().map(String::as_str));
        let _: i64 = kv.script(&Script::new(IMPORT), &[CONSUMERS, LOG], &args).await?;
    }
    Ok(fields.len() / 3)
}

/// A node's copy of the registry's consumers: where in the log it is, and
/// where on disk it keeps them.
pub(crate) struct ConsumerSync {
    last: Option<String>,
    disk: PathBuf,
    /// Changed since last written to disk.
    unsaved: bool,
}

impl ConsumerSync {
    /// For a node keeping its last version at `cache`: the consumers beside it.
    pub(crate) fn new(cache: &Path) -> Self {
        ConsumerSync { last: None, disk: cache.with_extension("consumers.jsonl"), unsaved: false }
    }

    /// Brings `held` up to the registry: everything at first (or when
    /// this node fell behind the log, or after an import), then each
    /// change logged since.
    pub(crate) async fn sync(&mut self, kv: &RedisKv, held: &Registered) -> Result<(), RegistryError> {
        loop {
            let Some(last) = self.last.clone() else { return self.load(kv, held).await };
            // From this node's place on (its own entry first): if that entry
            // is gone, the log was trimmed past it; after an import, too,
            // read everything.
            let mut entries = log(kv, &last, "+", LOG_PAGE + 1).await?;
            if entries.first().is_none_or(|(id, _)| newer(id, &last)) {
                return self.load(kv, held).await;
            }
            let full = entries.len() == LOG_PAGE + 1;
            entries.remove(0);
            if entries.iter().any(|(_, e)| e.get("f").is_some_and(|f| f == "*")) {
                return self.load(kv, held).await;
            }
            for (id, entry) in entries {
                self.last = Some(id);
                self.unsaved = true;
                let (Some(field), Some(record)) = (entry.get("f"), entry.get("r")) else { continue };
                let Some((provider, digest)) =
                    field.split_once('/').and_then(|(p, h)| Some((p, parse_sha256(h).ok()?)))
                else {
                    continue;
                };
                let consumer = match record.as_str() {
                    "" => None,
                    r => match Consumer::built(r.as_bytes()) {
                        Ok((_, _, identity)) => Some(identity),
                        Err(e) => {
                            tracing::warn!(field, error = %e, "a registry consumer was skipped");
                            continue;
                        }
                    },
                };
                held.change(provider, digest, consumer);
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Reads every consumer, from the log's newest entry on.
    async fn load(&mut self, kv: &RedisKv, held: &Registered) -> Result<(), RegistryError> {
        let newest: Log = {
            let mut c = cmd("XREVRANGE", &[LOG, "+", "-"]);
            c.arg("COUNT").arg(1);
            kv.command(c).await?
        };
        // A page at a time, so a large registry never sits in memory twice as text.
        let mut all: Consumers = HashMap::new();
        let mut cursor = "0".to_string();
        loop {
            let mut c = cmd("HSCAN", &[CONSUMERS, &cursor]);
            c.arg("COUNT").arg(1_000);
            let (next, page): (String, Vec<(String, String)>) = kv.command(c).await?;
            for (_, record) in page {
                add_to(&mut all, &record);
            }
            if next == "0" {
                break;
            }
            cursor = next;
        }
        held.replace(all);
        self.last = Some(newest.first().map_or_else(|| "0-0".to_string(), |(id, _)| id.clone()));
        self.unsaved = true;
        Ok(())
    }

    /// Writes the consumers to disk if they changed (beside, then renamed over).
    pub(crate) fn save(&mut self, held: &Registered) {
        if !self.unsaved {
            return;
        }
        // One record per line, written as it is rebuilt: no copy of them all.
        let written = write_private(&self.disk, |out| {
            use std::io::Write as _;
            for (provider, keys) in held.snapshot() {
                for (digest, identity) in keys {
                    serde_json::to_writer(&mut *out, &record(&provider, &digest, &identity))?;
                    out.write_all(b"\n")?;
                }
            }
            Ok(())
        });
        match written {
            Ok(()) => self.unsaved = false,
            Err(e) => tracing::warn!(file = %self.disk.display(), error = %e, "could not keep the consumers on disk"),
        }
    }

    /// The consumers kept on disk (a start without the registry): how many.
    pub(crate) fn load_disk(&self, held: &Registered) -> usize {
        use std::io::BufRead as _;
        let Ok(file) = std::fs::File::open(&self.disk) else { return 0 };
        let mut all: Consumers = HashMap::new();
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            add_to(&mut all, &line);
        }
        held.replace(all);
        held.len()
    }
}

/// Log entries: their ids and fields.
type Log = Vec<(String, HashMap<String, String>)>;

/// Changes read from the log at a time.
const LOG_PAGE: usize = 10_000;

/// Up to `count` log entries from `from` to `to` (`XRANGE`).
async fn log(kv: &RedisKv, from: &str, to: &str, count: usize) -> Result<Log, RegistryError> {
    let mut c = cmd("XRANGE", &[LOG, from, to]);
    c.arg("COUNT").arg(count);
    Ok(kv.command(c).await?)
}

/// Whether stream id `a` comes after `b` (`ms-seq`).
fn newer(a: &str, b: &str) -> bool {
    let parse = |id: &str| -> (u64, u64) {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    parse(a) > parse(b)
}

/// Holds `all` in `held`, in place of what it held (how a node loads the
/// registry whole).
pub fn hold(all: &[Consumer], held: &Registered) {
    let mut out: Consumers = HashMap::new();
    for c in all {
        if let Ok(json) = serde_json::to_string(c) {
            add_to(&mut out, &json);
        }
    }
    held.replace(out);
}

/// Adds one record (JSON) to `all`; one that does not build is skipped, and logged.
fn add_to(all: &mut Consumers, record: &str) {
    match Consumer::built(record.as_bytes()) {
        Ok((provider, digest, identity)) => drop(all.entry(provider).or_default().insert(digest, identity)),
        Err(e) => tracing::warn!(error = %e, "a registry consumer was skipped"),
    }
}

/// A held consumer as a record again (to keep on disk).
fn record(provider: &str, digest: &[u8; 32], identity: &Identity) -> Consumer {
    let networks = |allow: bool| {
        identity.networks.as_ref().and_then(|n| {
            let ranges = if allow { n.allow.as_ref()? } else { &n.deny };
            Some(ranges.to_strings())
        })
    };
    Consumer {
        provider: provider.to_string(),
        id: identity.subject.clone(),
        key_sha256: crate::shared::hex::hex(digest),
        groups: identity.groups.clone(),
        scopes: identity.scopes.clone(),
        ip_allow: networks(true),
        ip_deny: networks(false).filter(|d| !d.is_empty()),
        added_at: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Consumer {
        Consumer {
            provider: "partners".into(),
            id: "acme".into(),
            key_sha256: crate::shared::hex::hex(&<sha2::Sha256 as sha2::Digest>::digest(b"acme-key")),
            groups: vec!["gold".into()],
            scopes: vec!["orders:read".into()],
            ip_allow: Some(vec!["10.0.0.0/8".into(), "2001:db8::/32".into()]),
            ip_deny: Some(vec!["10.9.0.0/16".into()]),
            added_at: String::new(),
        }
    }

    /// What a node keeps on disk builds the same consumers again, address
    /// ranges included; a line that is not a record is skipped.
    #[test]
    fn consumers_kept_on_disk_come_back_whole() {
        let dir = std::env::temp_dir().join(format!("portcullis-consumers-{}", std::process::id()));
        let mut sync = ConsumerSync::new(&dir.join("published.json"));
        let held = Registered::default();
        hold(&[acme()], &held);
        sync.unsaved = true;
        sync.save(&held);
        let mut text = std::fs::read_to_string(&sync.disk).unwrap();
        text.push_str("not a record\n");
        std::fs::write(&sync.disk, text).unwrap();
        let back = Registered::default();
        assert_eq!(sync.load_disk(&back), 1);
        let (digest, _) = acme().identity().unwrap();
        let identity = back.get("partners", &digest).expect("held again");
        assert_eq!((identity.subject.as_str(), identity.groups.clone()), ("acme", vec!["gold".to_string()]));
        let rules = identity.networks.as_ref().expect("its ranges");
        assert!(rules.admits("10.1.2.3".parse().unwrap()) && !rules.admits("10.9.1.1".parse().unwrap()));
        assert!(!rules.admits("192.0.2.1".parse().unwrap()));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_record_that_would_not_work_is_refused_with_why() {
        let providers = ["partners".to_string()];
        assert_eq!(acme().check(Some(&providers)), Ok(()));
        let bad = |f: fn(&mut Consumer)| {
            let mut c = acme();
            f(&mut c);
            c.check(Some(&providers)).unwrap_err()
        };
        assert!(bad(|c| c.provider = "nowhere".into()).contains("provider `nowhere`"));
        assert!(bad(|c| c.id = " ".into()).starts_with("id"));
        assert!(bad(|c| c.key_sha256 = "abc".into()).starts_with("key_sha256"));
        assert!(bad(|c| c.ip_allow = Some(vec!["10.0.0.0/33".into()])).contains("ip_allow"));
        assert!(bad(|c| c.ip_allow = Some(Vec::new())).contains("empty allow list"));
    }

    #[test]
    fn kv_schema_consumer_records_match_the_code() {
        let doc = include_str!("../../kv-schema/registry.md");
        let after = doc.split("<!-- consumer -->").nth(1).expect("tagged example");
        let c: Consumer = serde_json::from_str(&crate::ports::testing::doc_block(after, "json")).unwrap();
        assert_eq!(c.check(Some(&["partners".to_string()])), Ok(()));
        assert_eq!(c.field(), format!("partners/{}", c.key_sha256));
    }

    #[test]
    fn stream_ids_order_by_time_then_sequence() {
        assert!(newer("1700000000001-0", "1700000000000-5"));
        assert!(newer("1700000000000-6", "1700000000000-5"));
        assert!(!newer("1700000000000-5", "1700000000000-5"));
        assert!(!newer("0-0", "1-0"));
    }
}
