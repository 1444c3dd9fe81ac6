//! Route paths, rewrites, methods, hosts and header edits; conflicts between routes.

use super::*;

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
fn websocket_routes_are_checked() {
    let svc = "[services.s]\nurl = \"http://x\"\n[services.h2]\nurl = \"http://x\"\nhttp2 = true\n";
    let route = |extra: &str| format!("{svc}[[routes]]\npath = \"/ws\"\nservice = \"s\"\n{extra}\n");
    let cases = [
        (route("websocket_idle_timeout = \"1m\""), "routes[0].websocket_idle_timeout", "needs `websocket = true`"),
        (route("websocket = true\nmethods = [\"POST\"]"), "routes[0].websocket", "add \"GET\""),
        (
            route("websocket = true\nwebsocket_idle_timeout = \"0s\""),
            "routes[0].websocket_idle_timeout",
            "longer than 0",
        ),
        (route("websocket = true").replace("service = \"s\"", "service = \"h2\""), "routes[0].websocket", "HTTP/1.1"),
    ];
    for (text, key, msg) in cases {
        let e = one(&text);
        assert_eq!(e.key, key, "{text}");
        assert!(e.message.contains(msg), "{text}: {}", e.message);
    }
    let config = Config::parse(&route("websocket = true"), "gw.toml", &Variables::default()).unwrap();
    assert_eq!(config.routes[0].websocket, Some(std::time::Duration::from_secs(600)), "ten minutes by default");
    let config = Config::parse(&route(""), "gw.toml", &Variables::default()).unwrap();
    assert_eq!(config.routes[0].websocket, None);
}

#[test]
fn grpc_web_needs_a_post_to_an_http2_service_and_page_origins() {
    let text = format!(
        r#"{SVC}[services.h]
url = "http://127.0.0.1:9001"
http2 = true

[[routes]]
path = "/a"
service = "s"
grpc_web = true

[[routes]]
path = "/b"
methods = ["GET"]
service = "h"
grpc_web = true
grpc_web_origins = ["https://app.test/", "app.test", "*"]

[[routes]]
path = "/c"
service = "h"
grpc_web_origins = ["https://app.test"]
"#
    );
    expect_errors(
        &text,
        &[
            (10, "routes[0].grpc_web", "service `s` speaks HTTP/1.1"),
            (16, "routes[1].grpc_web", "add \"POST\" to `methods`"),
            (17, "routes[1].grpc_web_origins[0]", "is not an origin"),
            (17, "routes[1].grpc_web_origins[1]", "is not an origin"),
            (22, "routes[2].grpc_web_origins", "needs `grpc_web = true`"),
        ],
    );
    let ok = format!(
        "{SVC}[services.h]\nurl = \"http://127.0.0.1:9001\"\nhttp2 = true\n[[routes]]\npath = \"/b\"\nservice = \"h\"\ngrpc_web = true\ngrpc_web_origins = [\"HTTPS://App.test:8443\", \"*\"]\n"
    );
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let route = &config.routes[0];
    let policy = route.cors.as_ref().unwrap();
    assert!(route.grpc_web && !policy.varies() && policy.allows(&http::HeaderValue::from_static("https://any.test")));
    assert!(policy.refuse_other_origins && policy.expose.to_str().unwrap().starts_with("grpc-status, "));
}

#[test]
fn cors_policies_are_checked_and_named_by_services_and_routes() {
    let text = format!(
        r#"{SVC}[services.t]
url = "http://127.0.0.1:9002"
cors = "missing"

[cors.bad]
origins = ["*", "null", "https://a.test/"]
credentials = true
methods = ["get"]
headers = ["*", "x-a"]
expose_headers = ["*", "bad header"]
max_age = "soon"

[cors.empty]
origins = []

[[routes]]
path = "/a"
service = "s"
cors = "nope"
grpc_web_origins = ["https://a.test"]
"#
    );
    expect_errors(
        &text,
        &[
            (5, "services.t.cors", "no CORS policy named `missing` (defined: `bad`, `empty`)"),
            (8, "cors.bad.origins[1]", "sandboxed pages"),
            (8, "cors.bad.origins[2]", "is not an origin"),
            (9, "cors.bad.credentials", "list the origins"),
            (10, "cors.bad.methods[0]", "write `GET`"),
            (11, "cors.bad.headers", "give it alone"),
            (12, "cors.bad.expose_headers[0]", "\"*\" means nothing with credentials"),
            (12, "cors.bad.expose_headers[1]", "is not a header name"),
            (13, "cors.bad.max_age", "is not a duration"),
            (16, "cors.empty.origins", "at least one origin"),
            (21, "routes[0].cors", "either `cors` or `grpc_web_origins`"),
            (22, "routes[0].grpc_web_origins", "needs `grpc_web = true`"),
        ],
    );
    let ok = format!(
        r#"{SVC}[services.t]
url = "http://127.0.0.1:9002"
cors = "web"

[cors.web]
origins = ["https://app.test", "https://*.app.test"]
credentials = true
methods = ["GET", "PUT"]
headers = ["Content-Type", "x-a"]
expose_headers = ["x-b"]
max_age = "1h"

[cors.open]
origins = ["*"]

[[routes]]
path = "/a"
service = "t"

[[routes]]
path = "/b"
service = "t"
cors = "open"

[[routes]]
path = "/c"
service = "s"
"#
    );
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let web = config.routes[0].cors.as_ref().unwrap();
    assert_eq!(&*web.name, "web");
    assert!(web.credentials && web.varies() && web.allows(&http::HeaderValue::from_static("https://x.app.test")));
    assert!(!web.allows(&http::HeaderValue::from_static("https://app.test.evil")));
    assert_eq!(web.max_age, "3600");
    assert_eq!(web.expose, "x-request-id, retry-after, ratelimit, ratelimit-policy, x-b");
    assert_eq!(web.refused_header("content-type, X-A, x-c"), Some("x-c"));
    assert!(web.allows_method(&http::Method::PUT) && !web.allows_method(&http::Method::DELETE));
    assert_eq!(&*config.routes[1].cors.as_ref().unwrap().name, "open");
    assert!(config.routes[2].cors.is_none());
}

#[test]
fn ip_rules_are_checked_on_services_routes_and_consumers() {
    let text = format!(
        r#"{SVC}[services.t]
url = "http://127.0.0.1:9002"
ip_deny = ["10.0.0.0/33"]

[auth.api_key.k]
consumers = [{{ id = "a", key_sha256 = "{hash}", ip_allow = ["nowhere"] }}]

[[routes]]
path = "/a"
service = "t"
ip_allow = []
ip_deny = ["::1", "192.0.2.0/24"]
"#,
        hash = "b".repeat(64)
    );
    expect_errors(
        &text,
        &[
            (5, "services.t.ip_deny[0]", "is not an IP address or CIDR range"),
            (8, "auth.api_key.k.consumers[0].ip_allow[0]", "is not an IP address or CIDR range"),
            (13, "routes[0].ip_allow", "leave `ip_allow` out"),
        ],
    );
    let ok = format!(
        "{SVC}[services.t]\nurl = \"http://127.0.0.1:9002\"\nip_deny = [\"10.0.0.0/8\"]\n[[routes]]\npath = \"/a\"\nservice = \"t\"\nip_allow = [\"10.0.0.0/7\"]\n[[routes]]\npath = \"/b\"\nservice = \"s\"\n"
    );
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let levels: Vec<_> = config.routes[0].ip_rules.iter().map(|(level, _)| level.name()).collect();
    assert_eq!(levels, ["service", "route"]);
    let (service, route) = (&config.routes[0].ip_rules[0].1, &config.routes[0].ip_rules[1].1);
    let ip = |t: &str| t.parse::<std::net::IpAddr>().unwrap();
    assert!(!service.admits(ip("10.1.1.1")) && route.admits(ip("10.1.1.1")) && service.admits(ip("11.1.1.1")));
    assert!(config.routes[1].ip_rules.is_empty());
}

#[test]
fn a_routes_cache_is_checked_and_filled_in() {
    let text = format!(
        r#"{SVC}[services.h]
url = "http://127.0.0.1:9001"
http2 = true

[[routes]]
path = "/a"
service = "s"
cache = {{ ttl = "2h", max_ttl = "1h", stale_if_error = "40d", max_entry_size = "9MiB", tags_header = "bad header" }}

[[routes]]
path = "/b"
methods = ["POST"]
service = "s"
[routes.cache]
stale_while_revalidate = "soon"

[[routes]]
path = "/c"
service = "h"
grpc_web = true
cache = {{}}

[[routes]]
path = "/d"
service = "s"
cache = {{ ttl = "1m", vary_on = ["accept"] }}
"#
    );
    expect_errors(
        &text,
        &[
            (10, "routes[0].cache.ttl", "longer than `max_ttl`"),
            (10, "routes[0].cache.stale_if_error", "at most 30 days"),
            (10, "routes[0].cache.max_entry_size", "at most 8 MiB"),
            (10, "routes[0].cache.tags_header", "not a valid header name"),
            (16, "routes[1].cache", "add \"GET\" to the route's `methods`"),
            (17, "routes[1].cache.stale_while_revalidate", "not a duration"),
            (23, "routes[2].cache", "gRPC-Web route's answers are not cached"),
            (28, "routes[3].cache.vary_on", "unknown field `vary_on`"),
        ],
    );
    let ok =
        format!("{SVC}[gateway]\ncache_memory = \"8MiB\"\n[[routes]]\npath = \"/a\"\nservice = \"s\"\ncache = {{}}\n");
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let cache = config.routes[0].cache.as_ref().unwrap();
    assert_eq!(config.gateway.cache_memory, 8 << 20);
    assert_eq!((cache.allowance.ttl, cache.allowance.max_ttl), (Duration::ZERO, Duration::from_secs(86_400)));
    assert_eq!((cache.by_consumer, cache.shared, cache.max_entry_size), (false, true, 1 << 20));
    assert_eq!(cache.tags_header, "cache-tag");
}
