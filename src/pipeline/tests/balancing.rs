//! Weighted targets.

use super::*;

#[test]
fn weighted_targets_split_traffic() {
    let ports = FakePorts::new(FakeHttp::ok());
    let mut b = 0;
    for _ in 0..400 {
        let req = Request::get("/host-only").header("host", "api.example.com").body(Bytes::new()).unwrap();
        run(&ports, req, peer("198.51.100.7"));
        if ports.http.last().unwrap().uri().host() == Some("b.internal") {
            b += 1;
        }
    }
    // Weight 3 of 4: expect 300; 230..370 is more than 7 standard deviations wide.
    assert!((230..370).contains(&b), "{b} of 400 went to b");
}
