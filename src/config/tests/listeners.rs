//! `[[listeners]]` and `[acme]`: every mistake at its key, in one run.

use super::*;

#[test]
fn acme_mistakes_are_reported_each_at_its_key() {
    let text = format!(
        r#"{SVC}
[acme]
directory = "http://acme.test/dir"
contact = ["ops@a.test"]
challenge = "dns-01"

[[listeners]]
address = "127.0.0.1:8443"
[listeners.tls]
acme = ["*.a.test", "a.test", "A.test", "10.0.0.1", "bad_name.test"]
"#
    );
    expect_errors(
        &text,
        &[
            (5, "acme.directory", "an ACME directory is an https:// URL"),
            (6, "acme.contact[0]", "write mailto:ADDRESS"),
            (7, "acme.challenge", "the node does not answer dns-01"),
            (12, "listeners[0].tls.acme[0]", "a wildcard needs the dns-01 challenge"),
            (12, "listeners[0].tls.acme[2]", "`a.test` is listed twice"),
            (12, "listeners[0].tls.acme[3]", "a host name, not an address"),
            (12, "listeners[0].tls.acme[4]", "is not a host name"),
        ],
    );
}

#[test]
fn names_to_order_need_an_acme_section_and_a_tls_listener_needs_a_certificate() {
    let text = format!(
        r#"{SVC}
[[listeners]]
address = "127.0.0.1:8443"
[listeners.tls]
acme = ["a.test"]

[[listeners]]
address = "127.0.0.1:9443"
[listeners.tls]
min_version = "1.3"
"#
    );
    expect_errors(
        &text,
        &[
            (7, "listeners[0].tls.acme", "names to order need an [acme] section"),
            (11, "listeners[1].tls.certificates", "or names to order: acme = ["),
        ],
    );
}

#[test]
fn a_listener_may_serve_ordered_certificates_alone() {
    let text = format!(
        "{SVC}\n[acme]\ndirectory = \"https://acme.test/dir\"\ncontact = [\"mailto:ops@a.test\"]\nchallenge = \"tls-alpn-01\"\n\n[[listeners]]\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\nacme = [\"API.a.test\"]\n"
    );
    let config = Config::parse(&text, "gw.toml", &Variables::default()).unwrap();
    let acme = config.acme.as_ref().unwrap();
    assert_eq!((acme.challenge, acme.state.path.as_str()), (acme::Challenge::TlsAlpn01, "acme"));
    let tls = config.listeners[0].tls.as_ref().unwrap();
    assert_eq!((tls.certificates.len(), tls.acme.clone()), (0, vec!["api.a.test".to_string()]));
}
