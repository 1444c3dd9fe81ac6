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
//!
//! Keys of one request's limits can live on different cluster slots; this
//! store is for a single Redis (or a primary with replicas), not a cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio::sync::OnceCell;

use super::breaker::{Breaker, Permit};
use crate::ports::{KvError, KvStore, LimitStep, Meter};
use crate::shared::gcra::Decision;

/// The limit step (`KvStore::limit`) atomically, on Redis' clock. Five
/// arguments per key: `r` (a GCRA rate: interval, burst, cost, delay
/// allowance) or `q` (a quota: limit, window end, cost, unused).
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
    end
    redis.call('SET', KEYS[i], string.format('%d', value), 'PX', math.max(math.floor((keep - now) / 1000), 0) + 1000)
  end
end
local out = { now }
for i = 1, #KEYS do out[i + 1] = values[i] end
return out
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
    client: redis::Client,
    config: ConnectionManagerConfig,
    connections: Vec<OnceCell<ConnectionManager>>,
    next: AtomicUsize,
    timeout: Duration,
    limit: Script,
    cas: Script,
    breaker: Breaker,
}

fn err(e: impl std::fmt::Display) -> KvError {
    KvError(format!("redis: {e}"))
}

impl RedisKv {
    /// A store on `url` (`redis://host:port/db`) with `connections`
    /// multiplexed connections and a deadline of `timeout` per call.
    /// Connects lazily: a node starts even while Redis is down.
    pub fn new(url: &str, connections: usize, timeout: Duration) -> Result<Self, KvError> {
        let client = redis::Client::open(url).map_err(err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        Ok(Self {
            client,
            config,
            connections: (0..connections.max(1)).map(|_| OnceCell::new()).collect(),
            next: AtomicUsize::new(0),
            timeout,
            limit: Script::new(LIMIT),
            cas: Script::new(CAS),
            breaker: Breaker::default(),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, KvError> {
        let slot = &self.connections[self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len()];
        let conn = slot
            .get_or_try_init(|| async {
                tokio::time::timeout(self.timeout, self.client.get_connection_manager_with_config(self.config.clone()))
                    .await
                    .map_err(|_| err("connect timed out"))?
                    .map_err(err)
            })
            .await?;
        Ok(conn.clone())
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
        let attempts = self.connections.len().min(2);
        let mut failure = err("no connection");
        for _ in 0..attempts {
            let mut conn = match self.connection().await {
                Ok(conn) => conn,
                Err(e) => {
                    failure = e;
                    continue;
                }
            };
            let reply = match &call {
                Call::Cmd(cmd) => tokio::time::timeout(self.timeout, cmd.query_async(&mut conn)).await,
                Call::Script(invocation) => {
                    tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn)).await
                }
            };
            match reply {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if e.is_timeout() => return Err(err(e)),
                Ok(Err(e)) => failure = err(e),
                Err(_) => return Err(err("timed out")),
            }
        }
        Err(failure)
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

    /// One round trip, atomic across keys, on Redis' clock.
    async fn limit(&self, steps: &[LimitStep<'_>], _now_us: u64) -> Result<(Vec<Decision>, u64), KvError> {
        let mut invocation = self.limit.prepare_invoke();
        for s in steps {
            invocation.key(s.key);
            match s.meter {
                Meter::Rate { rate, max_delay_us } => {
                    invocation.arg("r").arg(rate.interval_us).arg(rate.burst).arg(s.cost).arg(max_delay_us)
                }
                Meter::Quota { limit, ends_us } => invocation.arg("q").arg(limit).arg(ends_us).arg(s.cost).arg(0),
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
        let (now, tats) = numbers.split_first().ok_or_else(|| err("empty reply"))?;
        if tats.len() != steps.len() {
            return Err(err("reply does not match the keys"));
        }
        let decisions = steps.iter().zip(tats).map(|(s, &tat)| s.decide(Some(tat), *now)).collect();
        Ok((decisions, *now))
    }
}
