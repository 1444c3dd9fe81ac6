//! Service URLs, timeouts and targets.

use super::*;

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
fn a_services_origin_settings_are_checked() {
    let tls = |url: &str, table: &str| format!("[services.s]\nurl = \"{url}\"\n[services.s.tls]\n{table}\n");
    let cases = [
        (tls("http://x", "ca = \"ca.pem\""), "services.s.tls", "every target to be https://"),
        (tls("https://x", "cert = \"c.pem\""), "services.s.tls.key", "needs its key"),
        (tls("https://x", "key = \"k.pem\""), "services.s.tls.cert", "needs its certificate"),
        (tls("https://x", "ca = \"\""), "services.s.tls.ca", "must name a file"),
        (tls("https://x", "server_name = \"*.x\""), "services.s.tls.server_name", "one DNS name"),
        (tls("https://x", "sni = \"x\""), "services.s.tls.sni", "unknown"),
        (
            "[services.s]\nurl = \"http://x\"\n[services.s.retry]\non_grpc_status = [\"UNAVAILABLE\", \"BUSY\"]\n"
                .into(),
            "services.s.retry.on_grpc_status[1]",
            "not a gRPC status",
        ),
        ("[services.s]\nurl = \"http://x\"\nhttp2 = \"yes\"\n".into(), "services.s.http2", "boolean"),
    ];
    for (text, key, msg) in cases {
        let e = one(&text);
        assert_eq!(e.key, key, "{text}");
        assert!(e.message.contains(msg), "{text}: {}", e.message);
    }
    let ok = tls("https://x", "ca = \"ca.pem\"\nserver_name = \"Origin.Internal\"\ncert = \"c.pem\"\nkey = \"k.pem\"");
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let t = config.services[0].tls.as_ref().unwrap();
    assert_eq!(t.server_name.as_deref(), Some("origin.internal"));
    assert!(t.ca.is_some() && t.client.is_some());
}
