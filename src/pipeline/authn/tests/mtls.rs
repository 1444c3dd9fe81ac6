//! Client certificates (`[auth.mtls]`): a verified certificate's names pick
//! the consumer; no certificate leaves the provider to the next; one that
//! names nobody is refused and counts as a failure.

use super::*;
use crate::shared::tls::ClientCert;

const MTLS: &str = r#"
[auth.mtls.certs]
forward = { "x-client-id" = "id", "x-client-groups" = "groups", "x-client-spiffe" = "spiffe_id", "x-client-sha256" = "sha256" }
consumers = [
  { id = "billing", spiffe_id = "spiffe://corp.test/ns/prod/sa/billing", groups = ["internal", "gold"] },
  { id = "ops", common_name = "ops-cli" },
  { id = "partner", dns = "API.partner.test" },
  { id = "alice", email = "alice@corp.test" },
  { id = "pinned", sha256 = "0000000000000000000000000000000000000000000000000000000000000001" },
  { id = "gone", common_name = "revoked-cli", disabled = true },
]

[auth.api_key.keys]
consumers = [{ id = "acme", key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]

[services.s]
url = "http://o.test"

[[routes]]
path = "/x"
service = "s"
auth = { any_of = ["certs", "keys"] }
"#;

fn cert(f: impl FnOnce(&mut ClientCert)) -> ClientCert {
    let mut c = ClientCert { sha256: "ab".repeat(32), ..ClientCert::default() };
    f(&mut c);
    c
}

fn with_cert(
    cert: Option<&ClientCert>,
    headers: &[(&str, &str)],
) -> (Result<Arc<Identity>, AuthError>, http::HeaderMap) {
    let gw = Gateway::new(Config::parse(MTLS, "t.toml", &Variables::new()).unwrap());
    let ports = FakePorts::new(FakeHttp::ok());
    let mut req = Request::get("/x");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(()).unwrap();
    let route = gw.config.routes[0].auth.as_ref().unwrap();
    let caller = Caller { ip: CLIENT, cert };
    let verdict =
        block_on(authenticate(&gw.config.auth, route, &gw.caches, &ports, caller, &mut req, &mut AuthNote::default()));
    (verdict, req.headers().clone())
}

#[test]
fn a_certificates_names_pick_the_consumer() {
    let cases = [
        (cert(|c| c.uris = vec!["spiffe://corp.test/ns/prod/sa/billing".into()]), "billing"),
        (cert(|c| c.common_name = Some("ops-cli".into())), "ops"),
        (cert(|c| c.dns = vec!["other.test".into(), "api.partner.test".into()]), "partner"),
        (cert(|c| c.emails = vec!["alice@corp.test".into()]), "alice"),
        (cert(|c| c.sha256 = format!("{}1", "0".repeat(63))), "pinned"),
    ];
    for (cert, consumer) in cases {
        let (verdict, _) = with_cert(Some(&cert), &[]);
        let id = verdict.unwrap_or_else(|e| panic!("{consumer}: {e:?}"));
        assert_eq!((id.provider.as_str(), id.subject.as_str()), ("certs", consumer));
    }
    let spiffe = cert(|c| c.uris = vec!["spiffe://corp.test/ns/prod/sa/billing".into()]);
    let (_, headers) = with_cert(Some(&spiffe), &[]);
    assert_eq!(headers["x-client-id"], "billing");
    assert_eq!(headers["x-client-groups"], "internal,gold");
    assert_eq!(headers["x-client-spiffe"], "spiffe://corp.test/ns/prod/sa/billing");
    assert_eq!(headers["x-client-sha256"], "ab".repeat(32).as_str());
}

#[test]
fn no_certificate_leaves_it_to_the_next_provider_and_an_unknown_one_is_refused() {
    // Without a certificate the API-key provider decides.
    let (verdict, _) = with_cert(None, &[("x-api-key", "not-a-key")]);
    assert!(matches!(&verdict, Err(AuthError::InvalidToken { reason: "unknown_key", .. })), "{verdict:?}");
    let (verdict, _) = with_cert(None, &[]);
    assert!(matches!(verdict, Err(AuthError::Missing { .. })), "{verdict:?}");
    for unknown in
        [cert(|c| c.common_name = Some("stranger".into())), cert(|c| c.common_name = Some("revoked-cli".into()))]
    {
        let (verdict, _) = with_cert(Some(&unknown), &[]);
        assert!(
            matches!(&verdict, Err(AuthError::InvalidToken { reason: "unknown_certificate", .. })),
            "{:?}: {verdict:?}",
            unknown.common_name
        );
    }
    // The headers it forwards are identity headers: dropped from every client.
    let gw = Gateway::new(Config::parse(MTLS, "t.toml", &Variables::new()).unwrap());
    for h in ["x-client-id", "x-client-groups", "x-client-spiffe", "x-client-sha256"] {
        assert!(gw.config.auth.identity_headers.iter().any(|n| n == h), "{h}");
    }
}
