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
    assert_eq!(c.services[0].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.services[0].request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(c.routes[0].max_body_size, DEFAULT_MAX_BODY_SIZE);
    assert_eq!(&*c.routes[0].name, "/x");
    assert_eq!(c.origins(), ["http://127.0.0.1:9000"]);
}

/// Values for every placeholder the shipped configs use.
fn conformance_vars() -> Variables {
    let mut vars = Variables::new();
    for name in vars::referenced(include_str!("../../tests/conformance/gateway.toml")) {
        vars.insert(name, "1");
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
    let e = one(text);
    assert_eq!((e.line, e.key.as_str()), (2, "services.s.url"));
    assert!(e.message.contains("PORTCULLIS_VAR_PORT"), "{}", e.message);
}
