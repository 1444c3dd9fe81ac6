//! `{{ name }}` placeholders filled from variables.

use super::*;

#[test]
fn placeholders_fill_urls_and_header_values() {
    let mut vars = Variables::new();
    vars.insert("port", "9123");
    vars.insert("team", "core");
    let text = "[services.s]\nurl = \"http://127.0.0.1:{{ port }}\"\n[[routes]]\npath = \"/x\"\nservice = \"s\"\nrequest_headers.set = { \"x-team\" = \"{{ team }}\" }\n";
    let c = Config::parse(text, "gw.toml", &vars).unwrap();
    assert_eq!(c.services[0].targets[0].origin, "http://127.0.0.1:9123");
    assert_eq!(c.routes[0].request_headers.set[0].1, "core");
    // Without the variables: both unset placeholders, each at its line.
    let errors = errors(text);
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(got, [(2, "services.s.url"), (6, "routes[0].request_headers.set.x-team")]);
    assert!(errors[0].message.contains("PORTCULLIS_VAR_PORT"), "{}", errors[0].message);
}
