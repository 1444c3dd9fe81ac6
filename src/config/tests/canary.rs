//! Canary releases: shares, promotion, stickiness and rollback.

use super::*;

/// A route per canary mistake; lines counted from the blank first line.
const CANARIES: &str = r#"
[services.v1]
url = "http://o"
[services.v2]
url = "http://o"
[services.hashed]
url = "http://o"
balance = "consistent_hash"
hash_on = "subject"
[[routes]]
path = "/a"
service = "v1"
canary = { service = "v3", share = "5%" }
[[routes]]
path = "/b"
service = "v1"
canary = { service = "v1", share = "120%" }
[[routes]]
path = "/c"
service = "v1"
canary = { service = "v2", share = "5%", promote = { steps = ["5%"], soak = "1m" } }
[[routes]]
path = "/d"
service = "v1"
canary = { service = "v2" }
[[routes]]
path = "/e"
service = "v1"
canary = { service = "v2", promote = { steps = ["50%", "10%"], soak = "1m" } }
[[routes]]
path = "/f"
service = "v1"
canary = { service = "v2", share = "5%", sticky_on = "subject", groups = ["beta"], header = "bad header" }
[[routes]]
path = "/g"
service = "v1"
canary = { service = "v2", share = "5%", rollback = { window = "1h", min_requests = 0 } }
[[routes]]
path = "/h"
service = "v1"
canary = { service = "hashed", share = "5%" }
"#;

#[test]
fn canaries_are_checked() {
    expect_errors(
        CANARIES,
        &[
            (13, "routes[0].canary.service", "no service named `v3`"),
            (17, "routes[1].canary.service", "another service than the route's"),
            (17, "routes[1].canary.share", "0% to 100%"),
            (21, "routes[2].canary.share", "not both"),
            (25, "routes[3].canary.share", "say how many callers"),
            (29, "routes[4].canary.promote.steps", "rising shares"),
            (33, "routes[5].canary.sticky_on", "give the route `auth` with a JWT provider"),
            (33, "routes[5].canary.groups", "give the route `auth`"),
            (33, "routes[5].canary.header", "not a valid header name"),
            (37, "routes[6].canary.rollback.window", "from 1s to 10m"),
            (37, "routes[6].canary.rollback.min_requests", "at least 1"),
            (41, "routes[7].canary.service", "hashes on the caller's subject, which this route never has"),
        ],
    );
}
