//! Config errors name file, line and key; the shipped examples compile.

use super::*;

fn errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, "gw.toml", &Variables::default()) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigErrors(list)) => list,
    }
}

fn one(text: &str) -> ConfigError {
    let list = errors(text);
    assert_eq!(list.len(), 1, "{list:?}");
    list.into_iter().next().unwrap()
}

/// The errors of `text`, in order: line, key, and a part of the message.
fn expect_errors(text: &str, expect: &[(usize, &str, &str)]) {
    let got: Vec<(usize, String, String)> = errors(text).into_iter().map(|e| (e.line, e.key, e.message)).collect();
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((line, key, message), (want_line, want_key, want_message)) in got.iter().zip(expect) {
        assert_eq!((*line, key.as_str()), (*want_line, *want_key), "{message}");
        assert!(message.contains(want_message), "{key}: {message}");
    }
}

const SVC: &str = "[services.s]\nurl = \"http://127.0.0.1:9000\"\n";

#[test]
fn shipped_configs_compile() {
    for (name, text) in [
        ("routes/gateway.toml", include_str!("../../routes/gateway.toml")),
        ("tests/conformance/gateway.toml", include_str!("../../tests/conformance/gateway.toml")),
    ] {
        if let Err(e) = Config::parse(text, name, &conformance_vars()) {
            panic!("{e}");
        }
    }
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let e = one(&format!("{SVC}[[routes]]\npath = \"/a\"\nservice = \"s\"\nstrip_prefx = \"/a\"\n"));
    assert_eq!((e.line, e.key.as_str()), (6, "routes[0].strip_prefx"));
    assert!(e.message.contains("unknown field `strip_prefx`"), "{}", e.message);
    assert_eq!(e.to_string().split(':').take(2).collect::<Vec<_>>(), ["gw.toml", "6"]);

    let e = one("[gateway]\ntrusted_proxy = []\n");
    assert_eq!((e.line, e.key.as_str()), (2, "gateway.trusted_proxy"));
}

#[test]
fn wrong_types_and_syntax() {
    let e = one("[gateway]\nmax_header_count = \"many\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "gateway.max_header_count"));
    let e = one("[gateway]\nmax_body_size = \"10MB\"\n");
    assert!(e.message.contains("unknown size unit"), "{}", e.message);
    let e = one("[gateway\n");
    assert_eq!((e.line, e.key.as_str()), (1, "(syntax)"));
}

#[test]
fn services_are_checked() {
    let cases = [
        ("[services.s]\nurl = \"127.0.0.1:9000\"\n", "services.s.url", "needs a scheme"),
        ("[services.s]\nurl = \"ftp://x\"\n", "services.s.url", "not supported"),
        ("[services.s]\nurl = \"http://u:p@x\"\n", "services.s.url", "credentials"),
        ("[services.s]\nurl = \"http://x/?q=1\"\n", "services.s.url", "query"),
        // A port that is not a number would otherwise be read as none (port 80).
        ("[services.s]\nurl = \"http://127.0.0.1:no-port\"\n", "services.s.url", "the port `no-port`"),
        ("[services.s]\nurl = \"https://[::1]:0/api\"\n", "services.s.url", "the port `0`"),
        ("[services.s]\nurl = \"http://x:65536\"\n", "services.s.url", "the port `65536`"),
        ("[services.s]\ntargets = [{ url = \"http://x:80a\" }]\n", "services.s.targets[0].url", "the port `80a`"),
        ("[services.s]\n", "services.s", "needs `url` or `targets`"),
        (
            "[services.s]\nurl = \"http://x\"\nconnect_timeout = \"soon\"\n",
            "services.s.connect_timeout",
            "not a duration",
        ),
        ("[services.s]\nurl = \"http://x\"\nrequest_timeout = \"0s\"\n", "services.s.request_timeout", "longer than 0"),
        ("[services.s]\ntargets = [{ url = \"http://x\", weight = 0 }]\n", "services.s.targets", "weight above 0"),
    ];
    for (text, key, msg) in cases {
        let e = one(text);
        assert_eq!(e.key, key, "{text}");
        assert!(e.message.contains(msg), "{text}: {}", e.message);
    }
}

#[test]
fn routes_are_checked() {
    let route = |extra: &str| format!("{SVC}[[routes]]\npath = \"/v1/users/{{id}}\"\nservice = \"s\"\n{extra}");
    let cases = [
        (route("rewrite = \"/u/{user}\"\n"), "routes[0].rewrite", "uses {user}"),
        (route("strip_prefix = \"/v2\"\n"), "routes[0].strip_prefix", "not a leading part"),
        (route("strip_prefix = \"/v1/us\"\n"), "routes[0].strip_prefix", "not a leading part"),
        (route("strip_prefix = \"/v1\"\nrewrite = \"/x\"\n"), "routes[0].strip_prefix", "either"),
        (route("methods = [\"get\"]\n"), "routes[0].methods[0]", "write `GET`"),
        (route("methods = []\n"), "routes[0].methods", "empty list"),
        (route("host = \"http://x.com\"\n"), "routes[0].host", "not a host name"),
        (route("max_body_size = 0\n"), "routes[0].max_body_size", "more than 0"),
        (
            route("request_headers.set = { \"bad header\" = \"v\" }\n"),
            "routes[0].request_headers.set.bad header",
            "not a valid header name",
        ),
        (
            route("request_headers.set = { \"connection\" = \"close\" }\n"),
            "routes[0].request_headers.set.connection",
            "hop-by-hop",
        ),
        (route("request_headers.set = { \"host\" = \"x\" }\n"), "routes[0].request_headers.set.host", "hop-by-hop"),
        (
            route("response_headers.add = { \"x-a\" = \"line\\nbreak\" }\n"),
            "routes[0].response_headers.add.x-a",
            "not a valid header value",
        ),
        (
            route("request_headers.remove = [\"x y\"]\n"),
            "routes[0].request_headers.remove[0]",
            "not a valid header name",
        ),
        (
            format!("{SVC}[[routes]]\npath = \"/a\"\nservice = \"t\"\n"),
            "routes[0].service",
            "no service named `t` (defined: `s`)",
        ),
        (format!("{SVC}[[routes]]\npath = \"a\"\nservice = \"s\"\n"), "routes[0].path", "must start with `/`"),
        (format!("{SVC}[gateway]\ntrusted_proxies = [\"10.0.0.0/33\"]\n"), "gateway.trusted_proxies[0]", "not an IP"),
        (format!("{SVC}[gateway]\ndefault_host = \"*.x.com\"\n"), "gateway.default_host", "exact host"),
    ];
    for (text, key, msg) in cases {
        let e = one(&text);
        assert_eq!(e.key, key, "{text}");
        assert!(e.message.contains(msg), "{text}: {}", e.message);
    }
}

#[test]
fn conflicts_and_duplicates_point_at_the_later_route() {
    let text = format!(
        "{SVC}[[routes]]\npath = \"/a/{{id}}\"\nservice = \"s\"\n\n[[routes]]\npath = \"/a/{{name}}\"\nservice = \"s\"\n\n[[routes]]\nname = \"/a/{{id}}\"\npath = \"/b\"\nservice = \"s\"\n"
    );
    let list = errors(&text);
    assert_eq!(list.len(), 2, "{list:?}");
    let dup = list.iter().find(|e| e.key == "routes[2].name").unwrap();
    assert!(dup.message.contains("used twice"));
    assert_eq!(dup.line, 12);
    let conflict = list.iter().find(|e| e.key == "routes[1].path").unwrap();
    assert_eq!(conflict.line, 8);
    assert!(conflict.message.contains("routes[0]"), "{}", conflict.message);
}

#[test]
fn every_error_is_reported_at_once() {
    let text = "[services.a]\nurl = \"nope\"\n[services.b]\nurl = \"http://x\"\nconnect_timeout = \"x\"\n";
    assert_eq!(errors(text).len(), 2);
}

#[test]
fn defaults_are_filled_in() {
    let c =
        Config::parse(&format!("{SVC}[[routes]]\npath = \"/x\"\nservice = \"s\"\n"), "gw.toml", &Variables::default())
            .unwrap();
    assert_eq!(c.gateway.max_body_size, DEFAULT_MAX_BODY_SIZE);
    assert_eq!(c.gateway.max_header_size, DEFAULT_MAX_HEADER_SIZE);
    assert_eq!(c.gateway.max_header_count, DEFAULT_MAX_HEADER_COUNT);
    assert!(c.gateway.access_log);
    assert!(c.gateway.drop_underscore_headers);
    assert_eq!(c.gateway.max_response_header_size, DEFAULT_MAX_RESPONSE_HEADER_SIZE);
    assert_eq!(c.services[0].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.services[0].request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(c.routes[0].max_body_size, DEFAULT_MAX_BODY_SIZE);
    assert_eq!(&*c.routes[0].name, "/x");
    assert_eq!(c.services[0].targets[0].origin, "http://127.0.0.1:9000");
}

#[test]
fn header_hardening_settings_are_checked() {
    let e = one(&format!("[gateway]\nunderscores_in_headers = \"allow\"\nmax_response_header_size = \"1MiB\"\n{SVC}"));
    assert_eq!((e.line, e.key.as_str()), (2, "gateway.underscores_in_headers"));
    assert!(e.message.contains("\"drop\"") && e.message.contains("\"keep\""), "{}", e.message);
    let e = one(&format!("[gateway]\nmax_response_header_size = \"lots\"\n{SVC}"));
    assert_eq!(e.key, "gateway.max_response_header_size");
}

#[test]
fn failure_limits_default_on_and_can_be_set_or_turned_off() {
    let provider = |limit: &str| {
        format!("[auth.api_key.p]\n{limit}consumers = [{{ id = \"a\", key_sha256 = \"{}\" }}]\n{SVC}", "b".repeat(64))
    };
    let parse =
        |text: &str| Config::parse(text, "gw.toml", &Variables::default()).unwrap().auth.providers[0].failure_limit;
    let default = parse(&provider("")).unwrap();
    assert_eq!((default.burst, default.interval_us), (60, 1_000_000));
    assert_eq!(parse(&provider("failure_limit = \"off\"\n")), None);
    assert_eq!(parse(&provider("failure_limit = \"5/hour\"\n")).map(|r| r.burst), Some(5));
    let e = one(&provider("failure_limit = \"many\"\n"));
    assert_eq!((e.line, e.key.as_str()), (2, "auth.api_key.p.failure_limit"));
    assert!(e.message.contains("\"off\""), "{}", e.message);
}

/// Values for every placeholder the shipped configs use.
fn conformance_vars() -> Variables {
    let mut vars = Variables::new();
    for name in vars::referenced(include_str!("../../tests/conformance/gateway.toml")) {
        let value = if name.ends_with("secret") { "s".repeat(40) } else { "1".to_string() };
        vars.insert(name, value);
    }
    vars
}

#[test]
fn placeholders_fill_urls_and_header_values() {
    let mut vars = Variables::new();
    vars.insert("port", "9123");
    vars.insert("team", "core");
    let text = "[services.s]\nurl = \"http://127.0.0.1:{{ port }}\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nrequest_headers.set = { \"x-team\" = \"{{ team }}\" }\n";
    let c = Config::parse(text, "gw.toml", &vars).unwrap();
    assert_eq!(c.services[0].targets[0].origin, "http://127.0.0.1:9123");
    assert_eq!(c.routes[0].request_headers.set[0].1, "core");
    // Without the variables: both unset placeholders, each at its line.
    let errors = errors(text);
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, [(2, "services.s.url"), (6, "routes[0].request_headers.set.x-team")]);
    assert!(errors[0].message.contains("PORTCULLIS_VAR_PORT"), "{}", errors[0].message);
}

#[test]
fn auth_providers_are_checked() {
    let jwt = |body: &str| format!("[auth.jwt.corp]\nissuer = \"https://idp/\"\n{body}\n");
    let mut vars = Variables::new();
    vars.insert("secret", "0123456789abcdef0123456789abcdef");
    vars.insert("short", "too-short");
    let check = |text: &str| match Config::parse(text, "gw.toml", &vars) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigErrors(list)) => list,
    };
    let cases = [
        (
            jwt("algorithms = [\"RS256\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.audiences",
            "at least one audience",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"none\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.algorithms[0]",
            "never accepted",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS257\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.algorithms[0]",
            "not a JWT algorithm",
        ),
        (jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]"), "auth.jwt.corp", "exactly one of"),
        (
            jwt(
                "audiences = [\"a\"]\nalgorithms = [\"HS256\"]\nhmac_secret = \"literally-in-the-file-0123456789abcdef\"",
            ),
            "auth.jwt.corp.hmac_secret",
            "never go in the config file",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"HS256\"]\nhmac_secret = \"{{ short }}\""),
            "auth.jwt.corp.hmac_secret",
            "at least 32",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\nhmac_secret = \"{{ secret }}\""),
            "auth.jwt.corp.algorithms",
            "only HS256",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\", \"HS256\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.algorithms",
            "never public keys",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"ftp://idp/jwks\""),
            "auth.jwt.corp.jwks_uri",
            "not an http(s) URL",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"http://idp:jwks/keys\""),
            "auth.jwt.corp.jwks_uri",
            "the port `jwks`",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\nkeys = [{ pem = \"garbage\" }]"),
            "auth.jwt.corp.keys[0].pem",
            "not a PEM public key",
        ),
        (
            jwt(
                "audiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"http://idp/jwks\"\ntoken_from = [{ header = \"x\", cookie = \"y\" }]",
            ),
            "auth.jwt.corp.token_from[0]",
            "exactly one of",
        ),
        (
            "[auth.api_key.p]\nconsumers = [{ id = \"a\", key_sha256 = \"abc\" }]\n".into(),
            "auth.api_key.p.consumers[0].key_sha256",
            "64 hex digits",
        ),
        (
            "[auth.api_key.p]\nforward = { \"x-c\" = \"email\" }\n".into(),
            "auth.api_key.p.forward.x-c",
            "forwards `id` or `groups`",
        ),
        (
            format!("{SVC}[[routes]]\npath = \"/a\"\nservice = \"s\"\nauth = {{ any_of = [\"ghost\"] }}\n"),
            "routes[0].auth.any_of[0]",
            "no provider named `ghost`",
        ),
        (
            format!("{SVC}[[routes]]\npath = \"/a\"\nservice = \"s\"\nauth = {{ any_of = [] }}\n"),
            "routes[0].auth.any_of",
            "at least one provider",
        ),
    ];
    for (text, key, msg) in cases {
        let errors = check(&text);
        let e = errors.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no error for {key} in {errors:?}"));
        assert!(e.message.contains(msg), "{key}: {}", e.message);
    }
}

#[test]
fn a_valid_auth_section_compiles() {
    let mut vars = Variables::new();
    vars.insert("secret", "0123456789abcdef0123456789abcdef");
    let text = r#"
[auth]
realm = "shop"
[auth.jwt.corp]
issuer = "https://idp/"
audiences = ["api"]
algorithms = ["RS256", "ES256"]
jwks_uri = "https://idp/jwks"
forward_claims = { "x-user" = "sub" }
[auth.jwt.internal]
issuer = "https://internal/"
audiences = ["api"]
algorithms = ["HS256"]
hmac_secret = "{{ secret }}"
token_from = [{ cookie = "session" }, { query = "access_token" }]
[auth.api_key.partners]
forward = { "x-consumer" = "id" }
consumers = [{ id = "a", key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]
[services.s]
url = "http://o"
[[routes]]
path = "/a"
service = "s"
auth = { any_of = ["corp", "partners"], scopes = ["read"], claims = { tenant = ["acme", "globex"] }, groups = ["gold"] }
"#;
    let c = Config::parse(text, "gw.toml", &vars).unwrap();
    assert_eq!(c.auth.realm, "shop");
    assert_eq!(c.auth.providers.len(), 3);
    assert_eq!(c.auth.identity_headers.len(), 2);
    let route = c.routes[0].auth.as_ref().unwrap();
    assert_eq!(route.providers.len(), 2);
    assert_eq!(route.claims, vec![("tenant".to_string(), vec!["acme".to_string(), "globex".to_string()])]);
    let offered = &route.challenge;
    assert_eq!((offered.realm.as_str(), offered.bearer, offered.api_key), ("shop", true, true));
}

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
            (7, "limits.bad name", "policy names are letters"),
            (16, "limits.by.key", "use client_ip, consumer, subject, header:<name> or cookie:<name>"),
            (24, "limits.cas.consistency", "`eventual`: use \"exact\""),
            (20, "limits.fail.on_store_error", "`maybe`: use \"allow\""),
            (5, "limits.per_ip.rate", "`ten/s` is not a rate"),
            (12, "limits.zero.burst", "must be at least 1"),
            (32, "routes[0].limits[1]", "listed twice"),
            (32, "routes[0].limits[2]", "no policy named `missing`"),
        ],
    );
}

#[test]
fn observability_settings_are_checked() {
    let text = format!(
        "[gateway]\naccess_log_sample = 1.5\ntrace_sample_ratio = -0.1\n{SVC}[admin]\ntoken_sha256 = [\"{}\", \"xyz\"]\n",
        "ab".repeat(32)
    );
    expect_errors(
        &text,
        &[
            (2, "gateway.access_log_sample", "a share from 0 to 1"),
            (3, "gateway.trace_sample_ratio", "a share from 0 to 1"),
            (7, "admin.token_sha256[1]", "64 hex digits"),
        ],
    );
    let ok = format!(
        "[gateway]\naccess_log_sample = 0\ntrace_sample_ratio = 0.01\n{SVC}[admin]\ntoken_sha256 = [\"{}\"]\n",
        "ab".repeat(32)
    );
    let c = Config::parse(&ok, "t.toml", &Variables::new()).unwrap();
    assert_eq!((c.gateway.access_log_sample, c.gateway.trace_sample_ratio), (0.0, 0.01));
    assert_eq!(c.admin_tokens, vec![[0xab; 32]]);
}

#[test]
fn the_sweep_is_checked() {
    let hash = "292d6859659abd91ec9f82925b6e85d4ebae3b3c8140df2c26d9658f4ae86df7";
    let text = format!("{SVC}[sweep]\npath = \"sweep\"\ntoken_sha256 = \"abc\"\nbatch = 0\n");
    expect_errors(
        &text,
        &[
            (4, "sweep.path", "a plain path"),
            (5, "sweep.token_sha256", "64 hex digits"),
            (6, "sweep.batch", "between 1 and 100000"),
        ],
    );
    for path in ["/a/../sweep", "/{x}", "/a?b"] {
        let e = one(&format!("{SVC}[sweep]\npath = \"{path}\"\ntoken_sha256 = \"{hash}\"\n"));
        assert_eq!(e.key, "sweep.path", "{path}");
    }
    let shadowing = format!(
        "{SVC}[sweep]\npath = \"/ops/sweep\"\ntoken_sha256 = \"{hash}\"\n[[routes]]\nname = \"ops\"\npath = \"/ops/{{*rest}}\"\nservice = \"s\"\n"
    );
    let e = one(&shadowing);
    assert_eq!((e.line, e.key.as_str()), (4, "sweep.path"));
    assert!(e.message.contains("route `ops` also answers this path"), "{}", e.message);
    let ok = Config::parse(
        &format!("{SVC}[sweep]\npath = \"/ops/sweep\"\ntoken_sha256 = \"{hash}\"\n"),
        "gw.toml",
        &Variables::default(),
    )
    .unwrap();
    let sweep = ok.sweep.expect("configured");
    assert_eq!((sweep.path.as_str(), sweep.batch), ("/ops/sweep", 1000));
}

/// Independent mistakes all come out in one run: syntax that TOML can read
/// past, shapes, values, references and route conflicts alike; and an entry
/// that is defined but invalid is never called missing.
#[test]
fn every_independent_mistake_is_reported_at_once() {
    let text = r#"
[gateway]
max_header_count = "many"

[services.good]
url = "http://127.0.0.1:9000"

[services.bad]
url = "127.0.0.1:9000"

[services.misshapen]
url = 7

[limits.broken]
rate = "lots"

[limits.typo]
rte = "1/s"

[[routes]]
path = "/a"
service = "good"
bogus = 1

[[routes]]
path = "/b"
service = "bad"
limits = ["broken", "typo"]

[[routes]]
path = "/c"
service = "misshapen"

[[routes]]
path = "/d"
service = "nowhere"

[[routes]]
path = "/e"
service = "good"

[[routes]]
path = "/e"
service = "good"

[bogus_section]
x = 1
"#;
    let got: Vec<(usize, String)> =
        errors(text).into_iter().map(|e| (e.line, format!("{}: {}", e.key, e.message))).collect();
    let expect: &[(usize, &str)] = &[
        (3, "gateway.max_header_count: invalid type"),
        (9, "services.bad.url: `127.0.0.1:9000` needs a scheme"),
        (12, "services.misshapen.url: invalid type"),
        (15, "limits.broken.rate: `lots` is not a rate"),
        (18, "limits.typo.rte: unknown field `rte`"),
        (23, "routes[0].bogus: unknown field `bogus`"),
        (36, "routes[3].service: no service named `nowhere` (defined: `bad`, `good`, `misshapen`)"),
        (43, "routes[5].path: conflicts with routes[4]"),
        (46, "bogus_section: unknown field `bogus_section`"),
    ];
    for (line, what) in expect {
        assert!(got.iter().any(|(l, m)| l == line && m.starts_with(what)), "missing {line}: {what}\nin {got:#?}");
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    assert!(!got.iter().any(|(_, m)| m.contains("no policy named")), "defined policies are never missing");
}

#[test]
fn syntax_errors_that_toml_reads_past_are_all_reported() {
    let text = "[gateway]\nmax_header_count = = 3\n[services.s]\nurl = \"http://x\n[[routes]]\npath = \"/a\"\nservice = \"s\"\n";
    let list = errors(text);
    let syntax: Vec<usize> = list.iter().filter(|e| e.key == "(syntax)").map(|e| e.line).collect();
    assert!(syntax.len() >= 2, "{list:#?}");
    assert!(syntax.contains(&2) && syntax.contains(&4), "{list:#?}");
}

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
            (16, "services.badkey.hash_on", "cookie names are letters"),
            (18, "services.heavy.targets[0].weight", "from 0 to 1000"),
            (12, "services.nokey.balance", "say what to hash in `hash_on`"),
            (9, "services.odd.balance", "`fastest`: use round_robin, least_request, random or consistent_hash"),
            (6, "services.rr.hash_on", "only for balance = \"consistent_hash\""),
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

#[test]
fn resilience_settings_are_checked() {
    let text = r#"
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
    expect_errors(
        text,
        &[
            (6, "services.a.retry.attempts", "from 1 (no retries) to 10"),
            (7, "services.a.retry.on_status[0]", "only 5xx and 429"),
            (10, "services.a.retry.max_backoff", "at least `backoff`"),
            (8, "services.a.retry.budget", "a share such as \"20%\""),
            (12, "services.a.health.max_ejected", "a share such as"),
            (13, "services.a.health.when_all_down", "`panic`: use \"try\""),
            (15, "services.a.breaker.failure_rate", "write \"off\""),
            (17, "services.a.breaker.probes", "from 1 to 100"),
            (16, "services.a.breaker.window", "from 1s to 60s"),
            (4, "services.a.max_in_flight", "at least 1"),
            (20, "services.b.breaker.failure_rate", "the circuit never opens"),
            (31, "routes[0].retry_non_idempotent", "this route's methods are not idempotent"),
            (39, "routes[1].fallback.status", "a final status"),
            (38, "routes[1].retry_non_idempotent", "never retries"),
        ],
    );
}

#[test]
fn canaries_are_checked() {
    let text = r#"
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
    expect_errors(
        text,
        &[
            (13, "routes[0].canary.service", "no service named `v3`"),
            (17, "routes[1].canary.service", "another service than the route's"),
            (17, "routes[1].canary.share", "0% to 100%"),
            (21, "routes[2].canary.share", "not both"),
            (25, "routes[3].canary.share", "say how many callers"),
            (29, "routes[4].canary.promote.steps", "rising shares"),
            (33, "routes[5].canary.sticky_on", "give the route `auth` with a JWT provider"),
            (33, "routes[5].canary.header", "not a valid header name"),
            (33, "routes[5].canary.groups", "give the route `auth`"),
            (37, "routes[6].canary.rollback.min_requests", "at least 1"),
            (37, "routes[6].canary.rollback.window", "from 1s to 10m"),
            (41, "routes[7].canary.service", "hashes on the caller's subject, which this route never has"),
        ],
    );
}

/// The recovery parser (a file with several mistakes) knows every section
/// `RawConfig` has: none is reported as an unknown field next to the real
/// mistake, and the list it offers for a section it does not know is whole.
#[test]
fn every_section_is_known_to_the_recovery_parser() {
    let names = sections::section_names();
    assert!(names.contains(&"admin") && names.contains(&"gateway") && names.len() >= 7, "{names:?}");
    for name in names {
        let text = format!("bogus = 1\n{SVC}[{name}]\n");
        let list = errors(&text);
        assert!(!list.iter().any(|e| e.message.contains(&format!("unknown field `{name}`"))), "[{name}]: {list:?}");
        let bogus = list.iter().find(|e| e.key == "bogus").unwrap_or_else(|| panic!("[{name}]: {list:?}"));
        assert!(bogus.message.contains(&format!("`{name}`")), "the expected sections name `{name}`: {}", bogus.message);
    }
    // The case the issue found: an [admin] section next to another mistake.
    let list = errors(&format!("{SVC}[admin]\ntoken_sha256 = []\n[gateway]\nmax_header_count = \"many\"\n"));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].key, "gateway.max_header_count");
}
