//! The key-value port on Redis, for a fleet of nodes sharing state.
//!
//! - One round trip per rate-limit decision: a script reads every limit's
//!   TAT, decides and writes them all or none, atomically, on Redis' own
//!   clock (so nodes with drifting clocks still share one timeline). It
//!   returns what it read; the decision is recomputed here with the same
//!   function every home uses, so the headers agree to the microsecond.
//! - Compare-and-swap is a script too.
//! - A few multiplexed connections, used round-robin; each reconnects by
//!   itself after Redis comes back. Every call has a deadline, and a
//!   breaker stops calling a Redis that keeps failing (`breaker.rs`).
//! - On a Redis Cluster (`redis-cluster://host:port,host:port`), redis-rs's
//!   cluster connection follows `MOVED`/`ASK` and a failover. Every key of
//!   one caller shares a hash tag, so a limit step over them is one script;
//!   a step whose keys span slots runs slot by slot and gives back what it
//!   charged if one refuses (`kv-schema/rate-limits.md`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::{Script, Value};
use tokio::sync::OnceCell;

use super::breaker::{Breaker, Permit};
use crate::ports::{KvError, KvStore, LimitStep, Meter};
use crate::shared::gcra::Decision;

/// The limit step (`KvStore::limit`) atomically, on Redis' clock. Five
/// arguments per key: `r` (a GCRA rate: interval, burst, cost, delay
/// allowance), `l` (a rate that leases: interval, burst, cost, units wanted
/// in all, from above half the burst; `shared/lease.rs`) or `q` (a quota: limit, window end, cost,
/// unused). It returns what it read; each decision, the lease's size
/// included, is recomputed from that with the same functions every home uses.
const LIMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local values = {}
local admit = true
for i = 1, #KEYS do
  local kind = ARGV[(i - 1) * 5 + 1]
  local a = tonumber(ARGV[(i - 1) * 5 + 2])
  local b = tonumber(ARGV[(i - 1) * 5 + 3])
  local cost = tonumber(ARGV[(i - 1) * 5 + 4])
  local delay = tonumber(ARGV[(i - 1) * 5 + 5])
  if kind == 'q' then
    local used = tonumber(redis.call('GET', KEYS[i])) or 0
    values[i] = used
    if used + cost > a then admit = false end
  else
    local tat = tonumber(redis.call('GET', KEYS[i])) or now
    if tat < now then tat = now end
    values[i] = tat
    if cost > b or tat + cost * a - b * a > now + delay then admit = false end
  end
end
if admit then
  for i = 1, #KEYS do
    local kind = ARGV[(i - 1) * 5 + 1]
    local a = tonumber(ARGV[(i - 1) * 5 + 2])
    local b = tonumber(ARGV[(i - 1) * 5 + 3])
    local cost = tonumber(ARGV[(i - 1) * 5 + 4])
    local value = values[i] + cost * a
    local keep = value
    if kind == 'q' then
      value = values[i] + cost
      keep = b
    elseif kind == 'l' then
      -- lease::grant: a range ending no sooner than the span (100 ms, at
      -- most a quarter of the window) from now and where half the burst
      -- is left; whole intervals counted exactly, though Lua divides in floats.
      local extra = tonumber(ARGV[(i - 1) * 5 + 5]) - cost
      if extra > 0 then
        local span = math.min(100000, math.floor(b * a / 4))
        local start = math.max(value, now + span - extra * a)
        local room = now + b * a - math.floor(b / 2) * a - start
        local fits = 0
        if room > 0 then
          fits = math.floor(room / a)
          if fits * a > room then fits = fits - 1 end
          if (fits + 1) * a <= room then fits = fits + 1 end
        end
        local leased = math.min(extra, fits)
        if leased > 0 then value = start + leased * a end
      end
      keep = value
    end
    redis.call('SET', KEYS[i], string.format('%d', value), 'PX', math.max(math.floor((keep - now) / 1000), 0) + 1000)
  end
end
local out = { now }
for i = 1, #KEYS do out[i + 1] = values[i] end
return out
"#;

/// Gives back what a limit step charged (a step over several cluster
/// slots, refused on another slot): each key's value less its amount, its
/// expiry kept.
const REFUND: &str = r#"
for i = 1, #KEYS do
  local value = tonumber(redis.call('GET', KEYS[i]))
  if value then
    local left = string.format('%d', value - tonumber(ARGV[i]))
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl > 0 then redis.call('SET', KEYS[i], left, 'PX', ttl) else redis.call('SET', KEYS[i], left) end
  end
end
return 1
"#;

/// Gives back the unused rest of a leased range: the TAT goes from
/// `ARGV[2]` (the range's end) back to `ARGV[1]` if it is still there;
/// its expiry follows on Redis' clock, as the limit script sets it.
const GIVE_BACK: &str = r#"
if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local from = tonumber(ARGV[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', math.max(math.floor((from - now) / 1000), 0) + 1000)
return 1
"#;

const CAS: &str = r#"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
if ARGV[4] == '0' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
"#;

pub struct RedisKv {
    backend: Backend,
    timeout: Duration,
    limit: Script,
    refund: Script,
    give_back: Script,
    cas: Script,
    breaker: Breaker,
}

/// A single Redis (or a primary with replicas), or a cluster.
enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        connections: Vec<OnceCell<ConnectionManager>>,
        next: AtomicUsize,
    },
    Cluster {
        client: ClusterClient,
        connection: OnceCell<ClusterConnection>,
    },
}

/// The URL scheme of a cluster's seed nodes.
pub const CLUSTER_SCHEME: &str = "redis-cluster://";

/// Whether `url` names a store this module serves.
pub fn is_redis_url(url: &str) -> bool {
    ["redis://", "rediss://", CLUSTER_SCHEME].iter().any(|scheme| url.starts_with(scheme))
}

fn err(e: impl std::fmt::Display) -> KvError {
    KvError(format!("redis: {e}"))
}

impl RedisKv {
    /// A store on `url` (`redis://host:port/db`) with `connections`
    /// multiplexed connections and a deadline of `timeout` per call; or on
    /// a cluster (`redis-cluster://host:port,host:port`: some of its nodes,
    /// from which it learns the rest) over one multiplexed connection per
    /// node. Connects lazily: a node starts even while Redis is down.
    pub fn new(url: &str, connections: usize, timeout: Duration) -> Result<Self, KvError> {
        let backend = match url.strip_prefix(CLUSTER_SCHEME) {
            Some(seeds) => {
                let nodes: Vec<String> = seeds.split(',').map(|seed| format!("redis://{}", seed.trim())).collect();
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .build()
                    .map_err(err)?;
                Backend::Cluster { client, connection: OnceCell::new() }
            }
            None => Backend::Single {
                client: redis::Client::open(url).map_err(err)?,
                config: ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1),
                connections: (0..connections.max(1)).map(|_| OnceCell::new()).collect(),
                next: AtomicUsize::new(0),
            },
        };
        Ok(Self {
            backend,
            timeout,
            limit: Script::new(LIMIT),
            refund: Script::new(REFUND),
            give_back: Script::new(GIVE_BACK),
            cas: Script::new(CAS),
            breaker: Breaker::default(),
        })
    }

    /// One command, with the store's deadline and breaker.
    pub(crate) async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, KvError> {
        self.call(Call::Cmd(cmd)).await
    }

    /// One script over `keys` with `args`, with the store's deadline and breaker.
    pub(crate) async fn script<T: redis::FromRedisValue, A: redis::ToRedisArgs>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[A],
    ) -> Result<T, KvError> {
        let mut invocation = script.prepare_invoke();
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        self.call(Call::Script(invocation)).await
    }

    /// A client for subscriptions: a single Redis', or a cluster's first
    /// seed node (a cluster carries what is published to every node).
    pub(crate) fn subscriber(url: &str) -> Result<redis::Client, KvError> {
        match url.strip_prefix(CLUSTER_SCHEME) {
            Some(seeds) => {
                let first = seeds.split(',').next().unwrap_or_default().trim();
                redis::Client::open(format!("redis://{first}")).map_err(err)
            }
            None => redis::Client::open(url).map_err(err),
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }

    /// Runs a call with the store's deadline, unless the breaker is open.
    async fn call<T: redis::FromRedisValue>(&self, call: Call<'_>) -> Result<T, KvError> {
        let permit = self.breaker.permit();
        if let Permit::Refused(left) = permit {
            return Err(err(format!("not called for {} ms more: it has been failing", left.as_millis())));
        }
        let result = self.attempt(call).await;
        match &result {
            Ok(_) => self.breaker.succeeded(&permit),
            Err(e) => self.breaker.failed(&permit, &e.0),
        }
        result
    }

    /// A connection that broke (Redis restarted) reconnects on its own, but
    /// only after failing once: that failure is retried on the next
    /// connection instead of reaching a request. A call that timed out is
    /// not retried (a hung Redis would only cost another timeout).
    async fn attempt<T: redis::FromRedisValue>(&self, call: Call<'_>) -> Result<T, KvError> {
        let (client, config, connections, next) = match &self.backend {
            Backend::Single { client, config, connections, next } => (client, config, connections, next),
            // The cluster connection retries redirections and broken nodes itself.
            Backend::Cluster { client, connection } => {
                let conn = connection
                    .get_or_try_init(|| async {
                        tokio::time::timeout(self.timeout, client.get_async_connection())
                            .await
                            .map_err(|_| err("connect timed out"))?
                            .map_err(err)
                    })
                    .await?;
                return self.send(&mut conn.clone(), &call).await.map_err(|(e, _)| e);
            }
        };
        let attempts = connections.len().min(2);
        let mut failure = err("no connection");
        for _ in 0..attempts {
            let slot = &connections[next.fetch_add(1, Ordering::Relaxed) % connections.len()];
            let connected = slot
                .get_or_try_init(|| async {
                    tokio::time::timeout(self.timeout, client.get_connection_manager_with_config(config.clone()))
                        .await
                        .map_err(|_| err("connect timed out"))?
                        .map_err(err)
                })
                .await;
            let mut conn = match connected {
                Ok(conn) => conn.clone(),
                Err(e) => {
                    failure = e;
                    continue;
                }
            };
            match self.send(&mut conn, &call).await {
                Ok(value) => return Ok(value),
                Err((e, true)) => return Err(e),
                Err((e, false)) => failure = e,
            }
        }
        Err(failure)
    }

    /// One call on one connection, within the deadline; a failure says
    /// whether it was a timeout (not worth another connection).
    async fn send<T: redis::FromRedisValue>(
        &self,
        conn: &mut impl ConnectionLike,
        call: &Call<'_>,
    ) -> Result<T, (KvError, bool)> {
        let reply = match call {
            Call::Cmd(cmd) => tokio::time::timeout(self.timeout, cmd.query_async(conn)).await,
            Call::Script(invocation) => tokio::time::timeout(self.timeout, invocation.invoke_async(conn)).await,
        };
        match reply {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                let timeout = e.is_timeout();
                Err((err(e), timeout))
            }
            Err(_) => Err((err("timed out"), true)),
        }
    }

    /// One limit script over `steps` (keys on one slot): the decisions, and
    /// the time they were made at (Redis' clock).
    async fn limit_on_slot(&self, steps: &[&LimitStep<'_>]) -> Result<(Vec<Decision>, u64), KvError> {
        let mut invocation = self.limit.prepare_invoke();
        for s in steps {
            invocation.key(s.key);
            match s.meter {
                Meter::Rate { rate, max_delay_us } => {
                    invocation.arg("r").arg(rate.interval_us).arg(rate.burst).arg(s.cost).arg(max_delay_us)
                }
                Meter::Quota { limit, ends_us } => invocation.arg("q").arg(limit).arg(ends_us).arg(s.cost).arg(0),
                Meter::Lease { rate, want } => {
                    invocation.arg("l").arg(rate.interval_us).arg(rate.burst).arg(s.cost).arg(want)
                }
            };
        }
        let reply: Vec<Value> = self.call(Call::Script(invocation)).await?;
        let numbers: Vec<u64> = reply
            .iter()
            .map(|v| match v {
                Value::Int(n) => u64::try_from(*n).map_err(|_| err("negative time")),
                other => Err(err(format!("unexpected reply {other:?}"))),
            })
            .collect::<Result<_, _>>()?;
        let (now, values) = numbers.split_first().ok_or_else(|| err("empty reply"))?;
        if values.len() != steps.len() {
            return Err(err("reply does not match the keys"));
        }
        Ok((steps.iter().zip(values).map(|(s, &value)| s.decide(Some(value), *now)).collect(), *now))
    }

    /// Gives back what admitted steps charged (a lease's range included).
    async fn refund(&self, charged: &[(&LimitStep<'_>, Decision)]) -> Result<(), KvError> {
        let mut invocation = self.refund.prepare_invoke();
        for (s, d) in charged {
            let amount = match s.meter {
                Meter::Rate { rate, .. } => rate.interval_us.saturating_mul(s.cost),
                Meter::Lease { rate, .. } => rate.interval_us.saturating_mul(s.cost + d.leased),
                Meter::Quota { .. } => s.cost,
            };
            invocation.key(s.key).arg(amount);
        }
        let _: i64 = self.call(Call::Script(invocation)).await?;
        Ok(())
    }
}

/// One request to Redis: a command or a script.
enum Call<'a> {
    Cmd(redis::Cmd),
    Script(redis::ScriptInvocation<'a>),
}

fn millis(ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

impl KvStore for RedisKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(key);
        self.call(Call::Cmd(cmd)).await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if ttl.is_some() {
            cmd.arg("PX").arg(millis(ttl));
        }
        self.call(Call::Cmd(cmd)).await
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key);
        self.call(Call::Cmd(cmd)).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        current: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let mut invocation = self.cas.key(key);
        invocation
            .arg(if current.is_some() { "1" } else { "0" })
            .arg(current.unwrap_or_default())
            .arg(new)
            .arg(millis(ttl));
        let swapped: i64 = self.call(Call::Script(invocation)).await?;
        Ok(swapped == 1)
    }

    /// One script, on Redis' clock.
    async fn give_back(&self, key: &str, from_us: u64, end_us: u64, _now_us: u64) -> Result<bool, KvError> {
        let mut invocation = self.give_back.key(key);
        invocation.arg(from_us).arg(end_us);
        let back: i64 = self.call(Call::Script(invocation)).await?;
        Ok(back == 1)
    }

    /// One round trip, atomic across keys, on Redis' clock; on a cluster,
    /// one per slot the keys are on (see the module's comment).
    async fn limit(&self, steps: &[LimitStep<'_>], _now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        let all: Vec<&LimitStep<'_>> = steps.iter().collect();
        if !self.is_cluster() {
            return self.limit_on_slot(&all).await;
        }
        let mut slots: Vec<(Slot, Vec<usize>)> = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            let slot = Slot::for_key(s.key.as_bytes());
            match slots.iter_mut().find(|(k, _)| *k == slot) {
                Some((_, members)) => members.push(i),
                None => slots.push((slot, vec![i])),
            }
        }
        // In key order, so every node takes the slots in the same order.
        slots.sort_unstable_by_key(|(_, members)| steps[members[0]].key);
        let mut decisions: Vec<Option<Decision>> = vec![None; steps.len()];
        let mut charged: Vec<(&LimitStep<'_>, Decision)> = Vec::new();
        let mut first_now = None;
        for (_, members) in &slots {
            let group: Vec<&LimitStep<'_>> = members.iter().map(|&i| &steps[i]).collect();
            let (made, now) = self.limit_on_slot(&group).await?;
            first_now.get_or_insert(now);
            if made.iter().all(|d| d.allowed) {
                charged.extend(group.iter().copied().zip(made.iter().copied()));
            }
            for (&i, d) in members.iter().zip(made) {
                decisions[i] = Some(d);
            }
        }
        let decisions: Vec<Decision> =
            decisions.into_iter().collect::<Option<_>>().ok_or_else(|| err("a step was not decided"))?;
        if decisions.iter().any(|d| !d.allowed) && !charged.is_empty() {
            self.refund(&charged).await?;
        }
        Ok((decisions, first_now.unwrap_or_default()))
    }
}
