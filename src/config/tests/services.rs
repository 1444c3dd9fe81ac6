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
