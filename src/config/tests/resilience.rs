//! Retries, health checks, circuit breakers, concurrency limits and fallbacks.

use super::*;

/// A mistake in each retry, health, breaker and route setting; lines counted from the blank first line.
const RESILIENCE: &str = r#"
[services.a]
url = "http://o"
max_in_flight = 0
[services.a.retry]
attempts = 11
on_status = [404, 503]
budget = "120%"
backoff = "1s"
max_backoff = "10ms"
[services.a.health]
max_ejected = "half"
when_all_down = "panic"
[services.a.breaker]
failure_rate = "0%"
window = "2m"
probes = 0
[services.b]
url = "http://o"
[services.b.breaker]
failure_rate = "off"
consecutive_failures = 0
[services.c]
url = "http://o"
[services.c.retry]
attempts = 1
[services.d]
url = "http://o"
[services.d.retry]
attempts = 3
[[routes]]
path = "/post"
methods = ["POST"]
service = "d"
[[routes]]
path = "/c"
service = "c"
retry_non_idempotent = true
fallback = { status = 99 }
"#;

#[test]
fn resilience_settings_are_checked() {
    expect_errors(
        RESILIENCE,
        &[
            (4, "services.a.max_in_flight", "at least 1"),
            (6, "services.a.retry.attempts", "from 1 (no retries) to 10"),
            (7, "services.a.retry.on_status[0]", "only 5xx and 429"),
            (8, "services.a.retry.budget", "a share such as \"20%\""),
            (10, "services.a.retry.max_backoff", "at least `backoff`"),
            (12, "services.a.health.max_ejected", "a share such as"),
            (13, "services.a.health.when_all_down", "`panic`: use \"try\""),
            (15, "services.a.breaker.failure_rate", "write \"off\""),
            (16, "services.a.breaker.window", "from 1s to 60s"),
            (17, "services.a.breaker.probes", "from 1 to 100"),
            (20, "services.b.breaker.failure_rate", "the circuit never opens"),
            (31, "routes[0].retry_non_idempotent", "this route's methods are not idempotent"),
            (38, "routes[1].retry_non_idempotent", "never retries"),
            (39, "routes[1].fallback.status", "a final status"),
        ],
    );
}
