//! Rate-limit policies and the routes that use them.

use super::*;

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
