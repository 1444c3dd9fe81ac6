//! Load-balancing policies, hash keys and target weights.

use super::*;

#[test]
fn balancing_is_checked() {
    let text = r#"
[auth.api_key.partners]
consumers = [{ id = "a", key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]
[services.rr]
url = "http://o"
hash_on = "client_ip"
[services.odd]
url = "http://o"
balance = "fastest"
[services.nokey]
url = "http://o"
balance = "consistent_hash"
[services.badkey]
url = "http://o"
balance = "consistent_hash"
hash_on = "cookie:a b"
[services.heavy]
targets = [{ url = "http://a", weight = 1001 }, { url = "http://b" }]
[services.by_consumer]
url = "http://o"
balance = "consistent_hash"
hash_on = "consumer"
[services.by_subject]
url = "http://o"
balance = "consistent_hash"
hash_on = "subject"
[[routes]]
path = "/public"
service = "by_consumer"
[[routes]]
path = "/keyed"
service = "by_consumer"
auth = { any_of = ["partners"] }
[[routes]]
path = "/keyed-too"
service = "by_subject"
auth = { any_of = ["partners"] }
"#;
    expect_errors(
        text,
        &[
            (6, "services.rr.hash_on", "only for balance = \"consistent_hash\""),
            (9, "services.odd.balance", "`fastest`: use round_robin, least_request, random or consistent_hash"),
            (12, "services.nokey.balance", "say what to hash in `hash_on`"),
            (16, "services.badkey.hash_on", "cookie names are letters"),
            (18, "services.heavy.targets[0].weight", "from 0 to 1000"),
            (29, "routes[0].service", "hashes on the caller's consumer, which this route never has"),
            (36, "routes[2].service", "give it `auth` with a JWT provider"),
        ],
    );
}

#[test]
fn balancing_defaults_to_round_robin_and_reads_each_policy() {
    use caller_key::CallerKey;
    let service = |extra: &str| {
        let text = format!("[services.s]\nurl = \"http://o\"\n{extra}\n[[routes]]\npath = \"/\"\nservice = \"s\"\n");
        Config::parse(&text, "gw.toml", &Variables::default()).unwrap().services.remove(0).balance
    };
    assert_eq!(service(""), Balance::RoundRobin);
    assert_eq!(service("balance = \"least_request\""), Balance::LeastRequest);
    assert_eq!(service("balance = \"random\""), Balance::Random);
    let hashed = service("balance = \"consistent_hash\"\nhash_on = \"header:X-Tenant\"");
    assert_eq!(hashed, Balance::ConsistentHash(CallerKey::Header(HeaderName::from_static("x-tenant"))));
    let by_cookie = service("balance = \"consistent_hash\"\nhash_on = \"cookie:sid\"");
    assert_eq!(by_cookie, Balance::ConsistentHash(CallerKey::Cookie("sid".into())));
}
