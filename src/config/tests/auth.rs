//! API-key providers, route auth, failure limits, and a whole valid auth section.

use super::*;

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

#[test]
fn api_key_providers_are_checked() {
    expect_each_key(&[
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
    ]);
}

#[test]
fn route_auth_is_checked() {
    expect_each_key(&[
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
    ]);
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
fn mtls_providers_are_checked() {
    let p = |consumer: &str| format!("[auth.mtls.m]\nconsumers = [{consumer}]\n");
    expect_each_key(&[
        (p("{ id = \"a\" }"), "auth.mtls.m.consumers[0]", "give one of `spiffe_id`"),
        (p("{ id = \"a\", dns = \"a.test\", email = \"a@test\" }"), "auth.mtls.m.consumers[0]", "give one of"),
        (p("{ id = \"a\", spiffe_id = \"https://x\" }"), "auth.mtls.m.consumers[0].spiffe_id", "spiffe://"),
        (p("{ id = \"a\", sha256 = \"xyz\" }"), "auth.mtls.m.consumers[0].sha256", "64 hex digits"),
        (
            p("{ id = \"a\", dns = \"a.test\" }, { id = \"b\", dns = \"A.test\" }"),
            "auth.mtls.m.consumers[1]",
            "another consumer has this certificate name",
        ),
        (
            "[auth.mtls.m]\nforward = { \"x-c\" = \"subject\" }\n".into(),
            "auth.mtls.m.forward.x-c",
            "`id`, `groups`, `spiffe_id`, `common_name` or `sha256`",
        ),
        ("[auth.mtls.m]\n[auth.api_key.m]\n".into(), "auth.mtls.m", "provider names must be unique"),
    ]);
}

#[test]
fn introspection_providers_are_checked() {
    let text = format!(
        r#"{SVC}
[auth.introspection.none]
endpoint = "ftp://idp.test/introspect"

[auth.introspection.both]
endpoint = "https://idp.test/introspect"
client_id = "gw"
client_secret = "s"
bearer_token = "t"
cache_ttl = "never"

[auth.jwt.both]
issuer = "i"
audiences = ["a"]
algorithms = ["RS256"]
jwks_uri = "https://idp.test/jwks"
"#
    );
    expect_errors(
        &text,
        &[
            (
                4,
                "auth.introspection.none",
                "`client_id` and `client_secret`, `client_id` and `private_key`, or a `bearer_token`",
            ),
            (5, "auth.introspection.none.endpoint", "is not an http(s) URL"),
            (7, "auth.introspection.both", "provider names must be unique"),
            (
                7,
                "auth.introspection.both",
                "`client_id` and `client_secret`, `client_id` and `private_key`, or a `bearer_token`",
            ),
            (12, "auth.introspection.both.cache_ttl", "is not a duration"),
        ],
    );
    let ok = format!(
        "{SVC}[auth.introspection.o]\nendpoint = \"https://idp.test/introspect\"\nclient_id = \"gw:1\"\nclient_secret = \"p@ss\"\n"
    );
    let config = Config::parse(&ok, "gw.toml", &Variables::default()).unwrap();
    let crate::config::auth::ProviderKind::Introspection(p) = &config.auth.providers[0].kind else {
        panic!("introspection")
    };
    // RFC 6749 §2.3.1: the id and secret form-encoded, then base64.
    let crate::config::introspection::ClientAuth::Header(authorization) = &p.client else { panic!("basic") };
    assert_eq!(authorization, "Basic Z3clM0ExOnAlNDBzcw==");
    assert_eq!((p.cache_ttl.as_secs(), p.negative_ttl.as_secs(), p.timeout.as_secs()), (60, 5, 3));
}

/// `private_key_jwt`: the key's kind gives the algorithm (an RSA key may
/// choose), the endpoint is the audience unless set, and a key that is not
/// one or options without a key are named.
#[test]
fn introspection_signs_with_a_private_key() {
    use jsonwebtoken::Algorithm;
    let provider = |pem: &str, extra: &str| {
        format!(
            "{SVC}[auth.introspection.o]\nendpoint = \"https://idp.test/introspect\"\nclient_id = \"gw\"\nprivate_key = \"\"\"{pem}\"\"\"\n{extra}"
        )
    };
    let assertion = |text: &str| {
        let config = Config::parse(text, "gw.toml", &Variables::default()).unwrap();
        let crate::config::auth::ProviderKind::Introspection(p) = &config.auth.providers[0].kind else {
            panic!("introspection")
        };
        let crate::config::introspection::ClientAuth::Assertion(a) = &p.client else { panic!("assertion") };
        (a.header.alg, a.header.kid.clone(), a.audience.clone(), a.client_id.clone())
    };
    let keys = [
        (include_str!("../../../tests/fixtures/keys/rsa1.pem"), Algorithm::RS256),
        (include_str!("../../../tests/fixtures/keys/ec256.pem"), Algorithm::ES256),
        (include_str!("../../../tests/fixtures/keys/ec384.pem"), Algorithm::ES384),
        (include_str!("../../../tests/fixtures/keys/ed25519.pem"), Algorithm::EdDSA),
    ];
    for (pem, alg) in keys {
        let (got, kid, aud, id) = assertion(&provider(pem, ""));
        assert_eq!((got, kid, aud.as_str(), id.as_str()), (alg, None, "https://idp.test/introspect", "gw"));
    }
    let rsa = keys[0].0;
    let chosen = provider(
        rsa,
        "assertion_algorithm = \"PS256\"\nprivate_key_id = \"k1\"\nassertion_audience = \"https://idp.test/\"\n",
    );
    let (alg, kid, aud, _) = assertion(&chosen);
    assert_eq!((alg, kid.as_deref(), aud.as_str()), (Algorithm::PS256, Some("k1"), "https://idp.test/"));

    let e = one(&provider(include_str!("../../../tests/fixtures/keys/ec256.pub.pem"), ""));
    assert_eq!((e.line, e.key.as_str()), (6, "auth.introspection.o.private_key"));
    assert!(e.message.contains("not a PEM private key"), "{}", e.message);
    let e = one(&provider(keys[1].0, "assertion_algorithm = \"ES384\"\n"));
    assert_eq!(e.key, "auth.introspection.o.assertion_algorithm");
    assert!(e.message.contains("only an RSA key has a choice"), "{}", e.message);
    let e = one(&provider(rsa, "assertion_algorithm = \"HS256\"\n"));
    assert!(e.message.contains("RS256/384/512 or PS256/384/512, not HS256"), "{}", e.message);
    let secret = format!(
        "{SVC}[auth.introspection.o]\nendpoint = \"https://idp.test/introspect\"\nclient_id = \"gw\"\nclient_secret = \"s\"\nprivate_key_id = \"k\"\n"
    );
    let e = one(&secret);
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("auth.introspection.o.private_key_id", "belongs to a `private_key`")
    );
}
