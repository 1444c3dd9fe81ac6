//! Ambiguous hosts are refused; every unambiguous form is served.

use super::*;

#[test]
fn the_host_must_be_unambiguous() {
    let ports = FakePorts::new(FakeHttp::ok());
    let two = get("/admin").header("host", "evil.example").body(Bytes::new()).unwrap();
    let none = Request::get("/admin").body(Bytes::new()).unwrap();
    let h2 = |host: &str| {
        Request::get("http://gw.example.com/admin")
            .version(http::Version::HTTP_2)
            .header("host", host)
            .body(Bytes::new())
            .unwrap()
    };
    let host = |value: &str| Request::get("/admin").header("host", value).body(Bytes::new()).unwrap();
    let h2_bare = Request::get("/admin").version(http::Version::HTTP_2).body(Bytes::new()).unwrap();
    let userinfo = Request::get("http://user@gw.example.com/admin")
        .version(http::Version::HTTP_2)
        .header("host", "user@gw.example.com")
        .body(Bytes::new())
        .unwrap();
    for (what, req) in [
        ("two Host headers", two),
        ("HTTP/1.1 without Host", none),
        ("Host ≠ :authority", h2("b.example")),
        ("HTTP/2 without :authority or Host", h2_bare),
        ("user information in Host", host("user@a.example")),
        ("user information in :authority", userinfo),
        ("an empty Host on an origin-form request", host("")),
        ("a path in Host", host("a.example/admin")),
        ("a port that is not a number", host("a.example:8o")),
        ("a space in Host", host("a.example b")),
        ("an unclosed IP literal", host("[::1")),
        (
            "a port that is not a number in the authority",
            Request::get("http://gw.example.com:80a/admin").body(Bytes::new()).unwrap(),
        ),
    ] {
        let ex = run(&ports, req, peer("198.51.100.7"));
        assert_eq!(ex.response.status(), 400, "{what}");
        assert_eq!(problem(&ex.response)["type"], "urn:portcullis:problem:ambiguous-host", "{what}");
    }
    assert!(ports.http.last().is_none(), "nothing reached the origin");
    let absolute_empty_host =
        Request::get("http://gw.example.com/admin").header("host", "").body(Bytes::new()).unwrap();
    for ok in [
        h2("GW.example.com"),
        Request::get("http://gw.example.com/admin").body(Bytes::new()).unwrap(),
        absolute_empty_host,
        host("gw.example.com:8443"),
        host("[::1]:8080"),
        host("192.0.2.1"),
        Request::get("/admin").version(http::Version::HTTP_10).body(Bytes::new()).unwrap(),
    ] {
        assert_eq!(run(&ports, ok, peer("198.51.100.7")).response.status(), 200);
    }
}
