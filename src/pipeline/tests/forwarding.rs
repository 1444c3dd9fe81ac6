//! Forwarding headers, request ids and trace context sent to the origin.

use super::*;

#[test]
fn spoofed_forwarding_headers_from_untrusted_peers_are_replaced() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/admin")
        .header("x-forwarded-for", "1.1.1.1")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .header("forwarded", "for=1.1.1.1")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-forwarded-for"], "198.51.100.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "gw.example.com:8443");
    assert_eq!(h["forwarded"], "for=198.51.100.7;host=\"gw.example.com:8443\";proto=http");
    assert_eq!(ex.log.client_ip.to_string(), "198.51.100.7");
}

#[test]
fn trusted_proxies_extend_the_chain() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/admin")
        .header("x-forwarded-for", "203.0.113.5, 10.0.0.9")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.5")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, Downstream::plain("::ffff:10.1.2.3".parse().unwrap(), Scheme::Http));
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-forwarded-for"], "203.0.113.5, 10.0.0.9, 10.1.2.3");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], "for=203.0.113.5, for=10.1.2.3;host=\"gw.example.com:8443\";proto=http");
    assert_eq!(ex.log.client_ip.to_string(), "203.0.113.5");
}

#[test]
fn ipv6_clients_are_quoted_in_forwarded_and_https_is_said() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = get("/admin").header("x-forwarded-for", "1.1.1.1").body(Bytes::new()).unwrap();
    run(&ports, req, Downstream::plain("2001:db8::7".parse().unwrap(), Scheme::Https));
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-forwarded-for"], "2001:db8::7");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["forwarded"], "for=\"[2001:db8::7]\";host=\"gw.example.com:8443\";proto=https");
}

#[test]
fn request_id_and_traceparent_are_propagated() {
    let ports = FakePorts::new(FakeHttp::ok());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let req = get("/admin")
        .header("x-request-id", "client-id-1")
        .header("traceparent", tp)
        .header("tracestate", "vendor=1")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.headers()["x-request-id"], "client-id-1");
    let h = ports.http.last().unwrap().headers().clone();
    assert_eq!(h["x-request-id"], "client-id-1");
    let sent_tp = h["traceparent"].to_str().unwrap();
    assert!(sent_tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent_tp.ends_with("-01"));
    assert_ne!(sent_tp, tp);
    assert_eq!(h["tracestate"], "vendor=1");
    assert_eq!(ex.log.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");

    // A bad traceparent starts a new trace and drops the orphaned tracestate.
    let req = get("/admin").header("traceparent", "nonsense").header("tracestate", "v=1").body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    let h = ports.http.last().unwrap().headers().clone();
    assert!(h.get("tracestate").is_none());
    assert_eq!(h["traceparent"].len(), 55);
    assert_eq!(ex.response.headers()["x-request-id"].len(), 36);
}
