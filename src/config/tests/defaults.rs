//! What an omitted setting becomes.

use super::*;

#[test]
fn defaults_are_filled_in() {
    let c =
        Config::parse(&format!("{SVC}[[routes]]\npath = \"/x\"\nservice = \"s\"\n"), "gw.toml", &Variables::default())
            .unwrap();
    assert_eq!(c.gateway.max_body_size, DEFAULT_MAX_BODY_SIZE);
    assert_eq!(c.gateway.max_header_size, DEFAULT_MAX_HEADER_SIZE);
    assert_eq!(c.gateway.max_header_count, DEFAULT_MAX_HEADER_COUNT);
    assert!(c.gateway.access_log);
    assert!(c.gateway.drop_underscore_headers);
    assert_eq!(c.gateway.max_response_header_size, DEFAULT_MAX_RESPONSE_HEADER_SIZE);
    assert_eq!(c.services[0].connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(c.services[0].request_timeout, DEFAULT_REQUEST_TIMEOUT);
    assert_eq!(c.routes[0].max_body_size, DEFAULT_MAX_BODY_SIZE);
    assert_eq!(&*c.routes[0].name, "/x");
    assert_eq!(c.services[0].targets[0].origin, "http://127.0.0.1:9000");
}
