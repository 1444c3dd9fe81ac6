//! Unknown keys, wrong types and bad syntax are named with their line.

use super::*;

#[test]
fn unknown_keys_are_named_with_their_line() {
    let e = one(&format!("{SVC}[[routes]]\npath = \"/a\"\nservice = \"s\"\nstrip_prefx = \"/a\"\n"));
    assert_eq!((e.line, e.key.as_str()), (6, "routes[0].strip_prefx"));
    assert!(e.message.contains("unknown field `strip_prefx`"), "{}", e.message);
    assert_eq!(e.to_string().split(':').take(2).collect::<Vec<_>>(), ["gw.toml", "6"]);

    let e = one("[gateway]\ntrusted_proxy = []\n");
    assert_eq!((e.line, e.key.as_str()), (2, "gateway.trusted_proxy"));
}

#[test]
fn wrong_types_and_syntax() {
    let e = one("[gateway]\nmax_header_count = \"many\"\n");
    assert_eq!((e.line, e.key.as_str()), (2, "gateway.max_header_count"));
    let e = one("[gateway]\nmax_body_size = \"10MB\"\n");
    assert!(e.message.contains("unknown size unit"), "{}", e.message);
    let e = one("[gateway\n");
    assert_eq!((e.line, e.key.as_str()), (1, "(syntax)"));
}
