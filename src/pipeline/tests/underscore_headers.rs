//! Underscore headers, and those disguising the gateway's own, never reach the origin.

use super::*;

#[test]
fn underscore_headers_go_or_only_those_disguising_the_gateways_own() {
    let req = || {
        get("/admin")
            .header("x_forwarded_for", "6.6.6.6")
            .header("x_request_id", "mine")
            .header("x_user", "mallory")
            .header("my_header", "v")
            .header("x-real-ip", "6.6.6.6")
            .body(Bytes::new())
            .unwrap()
    };
    let ports = FakePorts::new(FakeHttp::ok());
    run(&ports, req(), peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert!(h.keys().all(|k| !k.as_str().contains('_')), "{h:?}");
    assert!(h.get("x-real-ip").is_none());

    let partners = r#"
[auth.api_key.partners]
forward = { "x-user" = "id" }
consumers = [{ id = "a", key_sha256 = "b81ff514581f28cf9536d9227563cf3a93e9ced7728e175b4e1d044be8a3ef29" }]
"#;
    let text = format!("{CONFIG}{partners}");
    let text = text.replace("[gateway]\n", "[gateway]\nunderscores_in_headers = \"keep\"\n");
    let keep = Gateway::new(Config::parse(&text, "test.toml", &Default::default()).unwrap());
    let ports = FakePorts::new(FakeHttp::ok());
    run_with(&keep, &ports, req(), peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["my_header"], "v", "kept");
    for disguised in ["x_forwarded_for", "x_request_id", "x_user", "x-real-ip"] {
        assert!(h.get(disguised).is_none(), "{disguised} reached the origin");
    }
}
