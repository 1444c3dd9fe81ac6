//! Routes pick the origin and its path; dot segments cannot cross routes.

use super::*;

#[test]
fn rewrites_path_keeps_query_and_sets_origin_authority() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/v1/users/42?x=1&y=%20").header("x-debug", "1").header("x-tag", "a").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::OK);
    let sent = ports.http.last().unwrap();
    assert_eq!(sent.uri().to_string(), "http://users.internal:8080/base/u/42?x=1&y=%20");
    assert_eq!(sent.headers()["host"], "users.internal:8080");
    assert_eq!(sent.headers()["x-forwarded-host"], "gw.example.com:8443");
    assert!(sent.headers().get("x-debug").is_none());
    assert_eq!(sent.headers()["x-gateway"], "portcullis");
    let tags: Vec<_> = sent.headers().get_all("x-tag").iter().collect();
    assert_eq!(tags, ["a", "b"]);
    let (_, opts) = ports.http.sent.lock().unwrap().last().cloned().unwrap();
    assert_eq!(opts.connect_timeout, Duration::from_secs(1));
    assert_eq!(opts.request_timeout, Duration::from_secs(3));
    assert_eq!(opts.max_request_body, 100);
    assert_eq!(ex.log.route.as_deref(), Some("users"));
    assert_eq!(ex.log.path, "/v1/users/42");
}

#[test]
fn strip_prefix_and_catch_all() {
    let ports = FakePorts::new(FakeHttp::ok());
    run(&ports, get("/v1/docs/a/b.html").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ports.http.last().unwrap().uri().path(), "/base/docs/a/b.html");
}

#[test]
fn dot_segments_cannot_reach_another_routes_rules() {
    let ports = FakePorts::new(FakeHttp::ok());
    // Without normalisation this would match `/v1/{*rest}` (any method) and
    // reach the admin path through the users service.
    let req = Request::post("/v1/../admin").header("host", "gw.example.com").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(ex.response.headers()["allow"], "GET, HEAD");
    assert!(ports.http.last().is_none(), "nothing reached an origin");

    let ex = run(
        &ports,
        Request::get("/v1/%2e%2e/admin").header("host", "gw.example.com").body(Bytes::new()).unwrap(),
        peer("198.51.100.7"),
    );
    assert_eq!(ex.response.status(), StatusCode::OK);
    assert_eq!(ports.http.last().unwrap().uri().to_string(), "http://admin.internal/admin");

    let ex = run(
        &ports,
        Request::get("/v1/..%2fadmin").header("host", "gw.example.com").body(Bytes::new()).unwrap(),
        peer("198.51.100.7"),
    );
    assert_eq!(ex.response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(problem(&ex.response)["type"], "urn:portcullis:problem:bad-path");
}

#[test]
fn not_found_and_host_specific_routes() {
    let ports = FakePorts::new(FakeHttp::ok());
    let ex = run(&ports, get("/host-only").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::NOT_FOUND);
    let p = problem(&ex.response);
    assert_eq!(p["status"], 404);
    assert_eq!(p["request_id"], ex.response.headers()["x-request-id"].to_str().unwrap());
    assert!(ex.log.route.is_none());

    let req = Request::get("/host-only").header("host", "API.example.com:443").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::OK);
}
