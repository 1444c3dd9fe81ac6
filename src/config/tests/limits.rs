//! Rate-limit policies and the routes that use them.

use super::*;
use crate::config::rate_limits::Metering;
use crate::shared::quota::Period;

#[test]
fn rate_limit_policies_are_checked() {
    let text = format!(
        r#"{SVC}
[limits.per_ip]
rate = "ten/s"

[limits."bad name"]
rate = "1/s"

[limits.zero]
rate = "5/s"
burst = 0

[limits.by]
rate = "5/s"
key = "cookie"

[limits.fail]
rate = "5/s"
on_store_error = "maybe"

[limits.cas]
rate = "5/s"
consistency = "eventual"

[limits.ok]
rate = "5/s"

[[routes]]
path = "/a"
service = "s"
limits = ["ok", "ok", "missing"]
"#
    );
    expect_errors(
        &text,
        &[
            (5, "limits.per_ip.rate", "`ten/s` is not a rate"),
            (7, "limits.bad name", "policy names are letters"),
            (12, "limits.zero.burst", "must be at least 1"),
            (16, "limits.by.key", "use client_ip, consumer, subject, header:<name> or cookie:<name>"),
            (20, "limits.fail.on_store_error", "`maybe`: use \"allow\""),
            (24, "limits.cas.consistency", "`eventual`: use \"exact\""),
            (32, "routes[0].limits[1]", "listed twice"),
            (32, "routes[0].limits[2]", "no policy named `missing`"),
        ],
    );
}

#[test]
fn smoothing_is_checked() {
    let text = format!(
        r#"{SVC}
[limits.long]
rate = "5/s"
max_delay = "31s"

[limits.alone]
rate = "5/s"
max_waiting = 10

[limits.none]
rate = "5/s"
max_delay = "1s"
max_waiting = 0

[limits.bad]
rate = "5/s"
max_delay = "soon"
"#
    );
    expect_errors(
        &text,
        &[
            (6, "limits.long.max_delay", "at most 30s"),
            (10, "limits.alone.max_waiting", "set it"),
            (15, "limits.none.max_waiting", "at least 1"),
            (19, "limits.bad.max_delay", "is not a duration"),
        ],
    );
    let ok = format!(
        "{SVC}[limits.s]\nrate = \"5/s\"\nmax_delay = \"500ms\"\n[limits.t]\nrate = \"5/s\"\nmax_delay = \"2s\"\nmax_waiting = 7\n"
    );
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let smoothing: Vec<_> =
        config.rate_limits.iter().map(|l| l.smoothing().map(|s| (s.max_delay.as_millis(), s.max_waiting))).collect();
    assert_eq!(smoothing, [Some((500, 100)), Some((2000, 7))]);
}

#[test]
fn quotas_are_checked() {
    let text = format!(
        r#"{SVC}
[limits.both]
rate = "5/s"
quota = "5/day"

[limits.neither]
key = "consumer"

[limits.bad]
quota = "5/week"
time_zone = "Europe/Atlantis"
warn_at = ["90%", "80%", "120%"]
burst = 3

[limits.zero]
quota = "0/month"

[limits.rated]
rate = "5/s"
warn_at = ["80%"]
"#
    );
    expect_errors(
        &text,
        &[
            (5, "limits.both.rate", "either `rate`"),
            (8, "limits.neither", "needs `rate`"),
            (12, "limits.bad.quota", "is not a quota"),
            (13, "limits.bad.time_zone", "an IANA name such as \"Europe/Berlin\", or a fixed offset"),
            (14, "limits.bad.warn_at[1]", "rising shares"),
            (14, "limits.bad.warn_at[2]", "is not a share"),
            (15, "limits.bad.burst", "belongs to a `rate`"),
            (18, "limits.zero.quota", "refuses everything"),
            (22, "limits.rated.warn_at", "belongs to a `quota`"),
        ],
    );
    let ok = format!(
        "{SVC}[limits.m]\nquota = \"10000/month\"\nkey = \"consumer\"\ntime_zone = \"+05:30\"\nwarn_at = [\"80%\", \"90%\"]\n[limits.d]\nquota = \"50/day\"\ntime_zone = \"-05:00\"\n[limits.b]\nquota = \"9/day\"\ntime_zone = \"Europe/Berlin\"\n"
    );
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let quotas: Vec<_> = config
        .rate_limits
        .iter()
        .map(|l| match &l.meter {
            Metering::Quota(q) => (q.limit, q.period, q.zone.clone(), q.warn_at.clone()),
            Metering::Rate { .. } => panic!("a quota"),
        })
        .collect();
    let fixed = |s| jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(s).unwrap());
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    assert_eq!(
        quotas,
        [
            (9, Period::Day, berlin, vec![]),
            (50, Period::Day, fixed(-18_000), vec![]),
            (10_000, Period::Month, fixed(19_800), vec![80, 90])
        ]
    );
}
