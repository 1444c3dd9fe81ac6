//! Oversized request heads answer 431 and declared bodies over the route limit 413.

use super::*;

#[test]
fn head_limits_answer_431() {
    let ports = FakePorts::new(FakeHttp::ok());
    let mut req = get("/admin");
    for i in 0..25 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let ex = run(&ports, req.body(Bytes::new()).unwrap(), peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    let req = get("/admin").header("x-big", "a".repeat(3000)).body(Bytes::new()).unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(ports.http.last().is_none());
}

#[test]
fn declared_body_over_the_route_limit_answers_413() {
    let ports = FakePorts::new(FakeHttp::ok());
    let req = Request::put("/v1/users/1")
        .header("host", "gw.example.com")
        .header("content-length", "101")
        .body(Bytes::new())
        .unwrap();
    let ex = run(&ports, req, peer("198.51.100.7"));
    assert_eq!(ex.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let req = Request::put("/v1/users/1")
        .header("host", "gw.example.com")
        .header("content-length", "100")
        .body(Bytes::from(vec![0; 100]))
        .unwrap();
    assert_eq!(run(&ports, req, peer("198.51.100.7")).response.status(), StatusCode::OK);
    let req = Request::put("/v1/users/1")
        .header("host", "gw.example.com")
        .header("content-length", "ten")
        .body(Bytes::new())
        .unwrap();
    assert_eq!(run(&ports, req, peer("198.51.100.7")).response.status(), StatusCode::BAD_REQUEST);
}
