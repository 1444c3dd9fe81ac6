//! What the client gets back: origin failures, edited headers, origin framing.

use super::*;

#[test]
fn upstream_failures_map_to_502_and_504_without_detail() {
    for (err, status) in [
        (UpstreamError::Connect("connection refused (10.0.0.1:80)".into()), 502),
        (UpstreamError::ConnectTimeout, 504),
        (UpstreamError::Timeout(Duration::from_secs(3)), 504),
        (UpstreamError::BodyTooLarge { limit: 100 }, 413),
    ] {
        let e = err.clone();
        let ports = FakePorts::new(FakeHttp::new(move |_| Err(e.clone())));
        let ex = run(&ports, get("/admin").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
        assert_eq!(ex.response.status().as_u16(), status, "{err}");
        assert!(!String::from_utf8_lossy(ex.response.body()).contains("10.0.0.1"));
        assert_eq!(ex.log.error.as_deref(), Some(err.to_string().as_str()));
        assert!(ex.log.upstream.as_deref().unwrap().starts_with("admin http://admin.internal:80"));
    }
}

#[test]
fn response_headers_are_edited_and_hop_by_hop_dropped() {
    let ports = FakePorts::new(FakeHttp::new(|_| {
        Ok(Response::builder()
            .header("server", "origin/1.0")
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-request-id", "origin-made-up")
            .body(Bytes::from_static(b"hi"))
            .unwrap())
    }));
    let ex = run(&ports, get("/v1/users/7").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    let h = ex.response.headers();
    assert!(h.get("server").is_none() && h.get("connection").is_none() && h.get("keep-alive").is_none());
    assert_eq!(h["x-internal"], "secret", "Connection cannot name more hop-by-hop headers");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-request-id"], ex.log.request_id, "the gateway's id wins");
}

#[test]
fn origin_framing_and_head_size() {
    let ports = FakePorts::new(FakeHttp::new(|_| {
        Ok(Response::builder()
            .header("transfer-encoding", "chunked")
            .header("content-length", "5")
            .body(Bytes::from_static(b"0123456789"))
            .unwrap())
    }));
    let ex = run(&ports, get("/admin").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert!(ex.response.headers().get("content-length").is_none(), "the origin's length is not the body's");
    let ports = FakePorts::new(FakeHttp::new(|_| {
        let mut resp = Response::builder();
        for i in 0..70 {
            resp = resp.header(format!("x-filler-{i}"), "f".repeat(1000));
        }
        Ok(resp.body(Bytes::new()).unwrap())
    }));
    let ex = run(&ports, get("/admin").body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ex.response.status(), 502);
    assert_eq!(problem(&ex.response)["type"], "urn:portcullis:problem:upstream-invalid");
}
