//! The upstream phase: the exchange with the route's service, made to
//! survive its failures. In order: the bulkhead (`max_in_flight`), a target
//! from the balancer among those passive health has not ejected, the try
//! under what is left of the service's `request_timeout`, and — where the
//! failure allows it, the request can be replayed and the retry budget has
//! room — another try, on another target where there is one, after a
//! jittered backoff (or the origin's `Retry-After`). What the tries did is
//! in the access log; a route's `fallback` answers when no target could be
//! reached.

pub(crate) mod balance;
mod breaker;
mod budget;
mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::SizeHint;
use thiserror::Error;

use super::error::GatewayError;
use super::log::Failure;
use super::trace::{SpanKind, SpanRecord};
use super::{Ctx, Gateway, Outcome, caller};
use crate::config::balance::Balance;
#[cfg(not(target_arch = "wasm32"))]
use crate::config::resilience::Probe;
use crate::config::resilience::{MAX_ATTEMPTS, Retry, is_idempotent};
use crate::config::router::RouteError;
use crate::config::{Route, Service};
use crate::ports::{Body, BodyCopy, Clock, HttpClient, Ports, UpstreamError, UpstreamOptions, read_body};
use crate::shared::grpc::{Code, GRPC_STATUS};
use crate::shared::problem::{Answer, Problem, Source};
use balance::Balancer;
use breaker::Breaker;
use budget::RetryBudget;
use health::{Change, Targets};

/// What the phase keeps per service, as long as the gateway value lives (a
/// process; at the edge an instance, which under WASI 0.2 is one request).
pub(crate) struct ServiceState {
    balancer: Balancer,
    health: Targets,
    budget: RetryBudget,
    breaker: Option<Breaker>,
    /// Requests in the phase now (the bulkhead's count).
    active: AtomicU32,
}

impl ServiceState {
    /// Records an active probe of a target (see [`health::Targets::probed`]).
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn probed(&self, index: usize, passed: bool, first: bool, probe: &Probe) -> Option<bool> {
        self.health.probed(index, passed, first, probe)
    }

    /// Whether a target may serve now (monotonic): the node's metrics and admin API.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn target_in(&self, index: usize, now: Duration) -> bool {
        self.health.is_in(index, now)
    }

    /// The circuit's state at `now` (wall clock), if the service has a breaker.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn circuit(&self, now: Duration) -> Option<&'static str> {
        self.breaker.as_ref().map(|b| b.state(now))
    }

    /// Requests in the phase now.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn in_flight(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    pub(crate) fn new(service: &Service) -> Self {
        Self {
            balancer: Balancer::new(service),
            health: Targets::new(service.targets.len()),
            budget: RetryBudget::default(),
            breaker: service.breaker.as_ref().map(|_| Breaker::new(&service.name)),
            active: AtomicU32::new(0),
        }
    }
}

/// Why the phase answered without an origin's answer.
#[derive(Debug, Error)]
pub(crate) enum Refusal {
    #[error("every target of the service is ejected and `when_all_down = \"refuse\"`")]
    NoHealthyTarget,
    #[error("the service has {0} requests in flight, its `max_in_flight`")]
    Overloaded(u32),
    #[error("the service's circuit is open for {0} s more")]
    CircuitOpen(u64),
}

impl Answer for Refusal {
    fn problem(&self) -> Problem {
        let (slug, detail, wait) = match self {
            Self::NoHealthyTarget => ("no-healthy-upstream", "no healthy upstream target is available", 1),
            Self::Overloaded(_) => ("upstream-overloaded", "the upstream service has too many requests in flight", 1),
            Self::CircuitOpen(wait) => {
                ("circuit-open", "the upstream service is failing; the gateway stopped calling it for a while", *wait)
            }
        };
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, slug, detail, Source::Upstream)
            .header(RETRY_AFTER, HeaderValue::from(wait))
    }
}

/// Leaves the bulkhead when the phase ends.
struct Active<'a>(&'a AtomicU32);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The upstream phase, last of the request phases: the origin's answer to
/// the request from the transform phase (or why there is none), inside the
/// bulkhead and the circuit breaker.
pub(crate) async fn phase<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    req: Request<Body<P>>,
    ctx: &mut Ctx,
) -> Outcome<Body<P>> {
    let Some(route) = gateway.route(ctx) else {
        return Err(RouteError::NotFound.into());
    };
    let index = ctx.service.unwrap_or(route.service);
    let service = &gateway.config.services[index];
    let state = &gateway.upstreams[index];
    let active = state.active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(&state.active);
    if let Some(max) = service.max_in_flight
        && active >= max
    {
        return Err(Refusal::Overloaded(max).into());
    }
    let (Some(policy), Some(breaker)) = (&service.breaker, &state.breaker) else {
        return tries(gateway, ports, route, index, req, ctx).await;
    };
    let admission = breaker
        .admit(policy, ports)
        .await
        .map_err(|wait| Refusal::CircuitOpen(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)))?;
    let result = tries(gateway, ports, route, index, req, ctx).await;
    let ok = answered_well(&result, ctx);
    if let Some(change) = breaker.record(policy, ports, admission, ok).await {
        let line = match change {
            breaker::Change::Opened { open_for, why } => {
                format!("circuit opened: service {} ({why}); open for {open_for:?}", service.name)
            }
            breaker::Change::Closed => format!("circuit closed: service {} answers again", service.name),
        };
        ports.event(&line);
    }
    result
}

/// The fallback phase (response): the route's static `fallback` answers
/// when no target could be reached (after the cache, whose stale entry
/// goes first).
pub(crate) async fn fallback_phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
) {
    let Some(fallback) = gateway.route(ctx).and_then(|r| r.fallback.as_ref()) else { return };
    let Err(err) = &*outcome else { return };
    if !unreachable(err) {
        return;
    }
    let problem = err.problem();
    let detail = format!("fallback served: {err}");
    ctx.failure = Some(Failure { problem: Some(problem.slug), source: problem.source, detail });
    ctx.fallback = true;
    let mut resp = Response::new(Body::<P>::from(fallback.body.clone()));
    *resp.status_mut() = fallback.status;
    resp.headers_mut().extend(fallback.headers.iter().map(|(n, v)| (n.clone(), v.clone())));
    *outcome = Ok(resp);
}

/// Whether the service answered well: below 500, without the fallback.
/// What the client got wrong does not count against the service.
pub(crate) fn answered_well<B>(result: &Result<Response<B>, GatewayError>, ctx: &Ctx) -> bool {
    match result {
        Ok(resp) => {
            !resp.status().is_server_error()
                && !ctx.fallback
                && !ctx.cache.as_ref().is_some_and(|c| c.covered_failure())
        }
        Err(err) => err.problem().source != Source::Upstream,
    }
}

/// No target could be reached: nothing connected, or none may be tried.
fn unreachable(err: &GatewayError) -> bool {
    matches!(
        err,
        GatewayError::Refused(Refusal::NoHealthyTarget | Refusal::CircuitOpen(_))
            | GatewayError::Upstream(UpstreamError::Connect(_) | UpstreamError::ConnectTimeout)
    )
}

/// Tries until one answers, or no other is worth making: the mechanism.
/// What makes a failure worth another try is [`retry_wait`]'s. Each try is
/// sent from here, not from a function of its own: every async layer is a
/// future moved (copied) whole as it starts.
async fn tries<P: Ports>(
    gateway: &Gateway,
    ports: &P,
    route: &Route,
    index: usize,
    mut req: Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Response<Body<P>>, GatewayError> {
    let (service, state, clock) = (&gateway.config.services[index], &gateway.upstreams[index], ports.clock());
    let timeout = ctx.grpc_timeout.map_or(service.request_timeout, |t| t.min(service.request_timeout));
    let start = clock.monotonic();
    let deadline = start + timeout;
    let attempts = service.retry.attempts_over(service.targets.len());
    if attempts > 1 {
        state.budget.request(start);
    }
    let caller = match &service.balance {
        Balance::ConsistentHash(key) => Some(caller::value(&gateway.config, key, ctx, req.headers())),
        _ => None,
    };
    ports.http().prepare(&mut req, route.max_body_size).await?;
    // Read whole first when another try may send it again (and it is small).
    let max_body = service.retry.max_body;
    let kept = if attempts > 1 && replayable(req.headers(), &http_body::Body::size_hint(req.body()), max_body) {
        Some(read_whole(req.body_mut(), max_body).await?)
    } else {
        None
    };
    let mut replay = Replay::new(req, attempts, max_body, kept, <P::Http as HttpClient>::keep_copy);
    let mut tried = Tried::default();
    let mut last = None;
    // Read after preparing, which may have read the body; then after each
    // try, whose start is the reading before it.
    let mut now = clock.monotonic();
    loop {
        let random = balance::mix(ctx.entropy.choice().wrapping_add(tried.count as u64));
        let choice = choose(service, state, caller.as_deref(), random, tried.targets(), service.retry.explicit, now);
        let pick = match (choice, last.take()) {
            (Ok(pick), _) => pick,
            (Err(_), Some(result)) => return result,
            (Err(refusal), None) => return Err(refusal.into()),
        };
        // The head is copied only while another try may follow.
        let more = replay.repeatable() && ctx.attempts + 1 < attempts;
        let mut req = replay.next(more)?;
        let target = pick.index;
        let max_head = gateway.config.gateway.max_response_header_size;
        let one = Try { service, route, target: &service.targets[target], deadline, max_head };
        let sent_at = now;
        let (options, span_id) = one.begin(sent_at, &mut req, ctx);
        let result = ports.http().send(req, &options).await;
        now = clock.monotonic();
        let result = one.end(result, sent_at, now, span_id, ctx);
        drop(pick);
        tried.add(target);
        let ok = matches!(&result, Ok(resp) if !resp.status().is_server_error());
        if let Some(change) = state.health.report(target, ok, now, &service.health) {
            ports.event(&describe(service, target, &change));
        }
        let repeatable = is_idempotent(&ctx.method) || route.retry_non_idempotent;
        let wait = retry_wait(&result, repeatable, &service.retry, tried.count, random);
        let again = more
            && replay.ready()
            && wait.is_some_and(|wait| wait < deadline.saturating_sub(now))
            && state.budget.try_retry(now, service.retry.budget_percent, service.retry.min_per_second);
        let (true, Some(wait)) = (again, wait) else {
            return result.map_err(GatewayError::from);
        };
        last = Some(result.map_err(GatewayError::from));
        clock.sleep(wait).await;
        now = clock.monotonic();
    }
}

/// One try: a target of a service, for a route's request, by a deadline.
struct Try<'a> {
    service: &'a Service,
    route: &'a Route,
    target: &'a crate::config::Target,
    deadline: Duration,
    /// The largest response head the origin may send.
    max_head: u64,
}

impl Try<'_> {
    /// Aims the request at the target, under what is left of the deadline
    /// (and the policy's per-try timeout), as its own span when recorded
    /// (the origin's parent): how to send it, and that span's id.
    fn begin<B>(&self, now: Duration, req: &mut Request<B>, ctx: &mut Ctx) -> (UpstreamOptions, Option<String>) {
        super::transform::aim(req, self.target);
        let span_id = ctx.spans.as_ref().map(|_| super::trace::new_id(now));
        if let Some(id) = &span_id {
            req.headers_mut().insert(super::transform::TRACEPARENT, ctx.trace.header_for(id.as_bytes()));
        }
        ctx.upstream = Some(self.target.label.clone());
        ctx.attempts += 1;
        let left = self.deadline.saturating_sub(now);
        let timeout = self.service.retry.per_try_timeout.map_or(left, |limit| limit.min(left));
        (options(self.service, timeout, self.route.max_body_size), span_id)
    }

    /// What the try got, sent at `sent_at` and answered (or failed) at
    /// `end`: the time to the response head is the upstream latency; a
    /// head larger than the gateway allows is refused; a failure is counted
    /// for the log, and the span recorded.
    fn end<B>(
        &self,
        result: Result<Response<B>, UpstreamError>,
        sent_at: Duration,
        end: Duration,
        span_id: Option<String>,
        ctx: &mut Ctx,
    ) -> Result<Response<B>, UpstreamError> {
        let latency = end.saturating_sub(sent_at);
        ctx.upstream_latency = Some(latency);
        ctx.upstream_time += latency;
        let result = result.and_then(|resp| {
            let head: u64 = resp.headers().iter().map(|(k, v)| (k.as_str().len() + v.len()) as u64).sum();
            if head > self.max_head {
                let max = self.max_head;
                return Err(UpstreamError::Protocol(format!("the response head is {head} bytes, more than {max}")));
            }
            Ok(resp)
        });
        if let Err(e) = &result {
            ctx.try_failures.push(failure_kind(e));
        }
        if let (Some(spans), Some(id)) = (&mut ctx.spans, span_id) {
            spans.push(try_span(&ctx.trace.span_id, id, sent_at, end, self.target, &result));
        }
        result
    }
}

/// The retry policy: how long to wait before another try after this
/// outcome, or `None` if it is not worth one ([`worth_another`]). An
/// origin's `Retry-After` on an answer is waited, else the backoff.
fn retry_wait<B>(
    result: &Result<Response<B>, UpstreamError>,
    repeatable: bool,
    policy: &Retry,
    tries: usize,
    random: u64,
) -> Option<Duration> {
    if !worth_another(result, repeatable, policy) {
        return None;
    }
    let asked = match result {
        Ok(resp) => retry_after(resp.headers()),
        Err(_) => None,
    };
    Some(asked.unwrap_or_else(|| backoff(policy.backoff, policy.max_backoff, tries, random)))
}

/// The targets a request has tried, in order (`attempts` is at most
/// [`MAX_ATTEMPTS`], so they always fit).
#[derive(Default)]
struct Tried {
    targets: [usize; MAX_ATTEMPTS as usize],
    count: usize,
}

impl Tried {
    fn targets(&self) -> &[usize] {
        &self.targets[..self.count]
    }

    fn add(&mut self, target: usize) {
        if let Some(slot) = self.targets.get_mut(self.count) {
            *slot = target;
            self.count += 1;
        }
    }
}

/// The request for each try: its head, and its body, kept whole when it
/// may be sent again.
struct Replay<B> {
    head: Option<http::request::Parts>,
    body: ReplayBody<B>,
}

enum ReplayBody<B> {
    /// Read before the first try (its size known and small enough).
    Kept(Bytes),
    /// Streamed to the first try with a copy kept as it passes.
    Copied(Option<B>, Arc<BodyCopy>),
    Once(Option<B>),
}

/// How a home keeps a copy of a streamed body ([`HttpClient::keep_copy`]).
type KeepCopy<B> = fn(&mut B, u64) -> Option<Arc<BodyCopy>>;

impl<B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + From<Bytes> + Unpin> Replay<B> {
    /// Keeps the body for another try when one may follow: `kept`, read
    /// whole before (see [`replayable`]), else copied as it streams, up to
    /// `max_body`, where the home can.
    fn new(req: Request<B>, attempts: u32, max_body: u64, kept: Option<Bytes>, copy: KeepCopy<B>) -> Self {
        let (head, mut body) = req.into_parts();
        let body = match kept {
            Some(bytes) => ReplayBody::Kept(bytes),
            None if attempts < 2 => ReplayBody::Once(Some(body)),
            None => match copy(&mut body, max_body) {
                Some(copy) => ReplayBody::Copied(Some(body), copy),
                None => ReplayBody::Once(Some(body)),
            },
        };
        Self { head: Some(head), body }
    }

    /// Whether the body may be sent more than once.
    fn repeatable(&self) -> bool {
        !matches!(self.body, ReplayBody::Once(_))
    }

    /// Whether another try can have the body now (a copied one: the client
    /// sent it all within the limit).
    fn ready(&self) -> bool {
        match &self.body {
            ReplayBody::Kept(_) => true,
            ReplayBody::Copied(first, copy) => first.is_some() || copy.whole().is_some(),
            ReplayBody::Once(first) => first.is_some(),
        }
    }

    /// The request for the next try; with `more`, the head is copied for
    /// another (it is taken only for a last try, so one is always left).
    fn next(&mut self, more: bool) -> Result<Request<B>, UpstreamError> {
        let body = match &mut self.body {
            ReplayBody::Kept(bytes) => B::from(bytes.clone()),
            ReplayBody::Copied(first, copy) => match first.take() {
                Some(body) => body,
                None => B::from(copy.whole().ok_or_else(|| UpstreamError::Protocol("the body was not kept".into()))?),
            },
            ReplayBody::Once(b) => b.take().unwrap_or_else(|| B::from(Bytes::new())),
        };
        let head = if more { self.head.clone() } else { self.head.take() };
        let head = head.ok_or_else(|| UpstreamError::Protocol("the request was already sent".into()))?;
        Ok(Request::from_parts(head, body))
    }
}

/// Whether a try's outcome is worth another: nothing reached the origin
/// (any method), a listed gRPC status answered before any message (any
/// method, as gRPC's own retry policy), or a listed status, a timeout or a
/// reset (idempotent methods, or routes that opt in).
fn worth_another<B>(result: &Result<Response<B>, UpstreamError>, repeatable: bool, policy: &Retry) -> bool {
    match result {
        Ok(resp) => {
            // The field is looked up only when a gRPC status can matter.
            let grpc = || resp.headers().get(GRPC_STATUS).and_then(|v| Code::from_header(v.as_bytes()));
            (repeatable && policy.on_status.contains(&resp.status()))
                || (!policy.on_grpc_status.is_empty()
                    && grpc().is_some_and(|code| policy.on_grpc_status.contains(&code)))
        }
        Err(e) => {
            e.problem().retryable || (repeatable && matches!(e, UpstreamError::Timeout(_) | UpstreamError::Protocol(_)))
        }
    }
}

/// A target for the next try: one not yet tried that health has not
/// ejected; else (where the service's retry policy allows a target twice)
/// a tried one still in; else, with every target out, any allowed (if the
/// service says to try anyway).
fn choose<'s>(
    service: &Service,
    state: &'s ServiceState,
    caller: Option<&[u8]>,
    random: u64,
    tried: &[usize],
    again: bool,
    now: Duration,
) -> Result<balance::Pick<'s>, Refusal> {
    let b = &state.balancer;
    let healthy = |i: usize| state.health.is_in(i, now);
    let allowed = |i: usize| again || !tried.contains(&i);
    b.pick(service, caller, random, |i| healthy(i) && !tried.contains(&i))
        .or_else(|| again.then(|| b.pick(service, caller, random, healthy)).flatten())
        .or_else(|| service.health.try_when_all_down.then(|| b.pick(service, caller, random, allowed)).flatten())
        .ok_or(Refusal::NoHealthyTarget)
}

/// A body that may be kept for another try: one whose `Content-Length`,
/// or else known size (none at all; one the edge has read already), is at
/// most `max`. A body of unknown size (chunked, at the node) streams once.
fn replayable(headers: &HeaderMap, hint: &SizeHint, max: u64) -> bool {
    let length = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    length.or(hint.upper()).is_some_and(|n| n <= max)
}

/// A body read whole, up to `max` bytes.
async fn read_whole<B>(body: &mut B, max: u64) -> Result<Bytes, UpstreamError>
where
    B: http_body::Body<Data = Bytes, Error: std::fmt::Display> + Unpin,
{
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    read_body(body, limit).await.map_err(|e| UpstreamError::ClientBody(e.to_string()))
}

/// Full jitter: a random wait below `min(max, base × 2^(retry − 1))`.
fn backoff(base: Duration, max: Duration, retry: usize, random: u64) -> Duration {
    let ceiling = base.saturating_mul(1 << retry.saturating_sub(1).min(16)).min(max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(random % nanos)
}

/// An origin's `Retry-After` in seconds (a date is not honoured).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(seconds))
}

/// A failed try's kind, as `portcullis_upstream_try_failures_total` counts them.
fn failure_kind(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Connect(_) => "connect_error",
        UpstreamError::ConnectTimeout => "connect_timeout",
        UpstreamError::Timeout(_) => "timeout",
        UpstreamError::Protocol(_) => "invalid_response",
        UpstreamError::BodyTooLarge { .. } | UpstreamError::ClientBody(_) => "client_body",
    }
}

/// The span of one try (a client span: what the origin sees as its parent).
fn try_span<B>(
    root: &str,
    span_id: String,
    start: Duration,
    end: Duration,
    target: &crate::config::Target,
    result: &Result<Response<B>, UpstreamError>,
) -> SpanRecord {
    let mut span = SpanRecord::new("portcullis.upstream", SpanKind::Client, root, start, end)
        .attr("server.address", target.origin.clone())
        .attr("portcullis.upstream.target", &*target.label);
    span.span_id = span_id;
    match result {
        Ok(resp) => {
            let status = resp.status();
            span.attr("http.response.status_code", status.as_str())
                .failed(status.is_server_error().then(|| format!("the origin answered {status}")))
        }
        Err(e) => span.failed(Some(e.to_string())),
    }
}

fn describe(service: &Service, index: usize, change: &Change) -> String {
    let target = &service.targets[index].label;
    match change {
        Change::Ejected { failures, ejections, duration } => {
            format!(
                "upstream target ejected: {target} failed {failures} times in a row; out for {duration:?} (ejection {ejections} in a row)"
            )
        }
        Change::Recovered { ejections } => {
            format!("upstream target healthy again: {target} answered after {ejections} ejection(s)")
        }
    }
}

/// How to reach a service's origins for one exchange. The connect timeout
/// stays the service's; `timeout` (to the response head) covers connecting too.
pub(crate) fn options(service: &Service, timeout: Duration, max_body: u64) -> UpstreamOptions {
    UpstreamOptions {
        connect_timeout: service.connect_timeout,
        request_timeout: timeout,
        max_request_body: max_body,
        http2: service.http2,
        tls_of: service.tls.as_ref().map(|_| service.name.clone()),
    }
}

#[cfg(test)]
mod tests;
