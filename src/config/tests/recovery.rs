//! Every mistake in a file is reported in one run.

use super::*;

#[test]
fn every_error_is_reported_at_once() {
    let text = "[services.a]\nurl = \"nope\"\n[services.b]\nurl = \"http://x\"\nconnect_timeout = \"x\"\n";
    assert_eq!(errors(text).len(), 2);
}

/// One mistake of each kind, lines counted from the blank first line.
const MANY_MISTAKES: &str = r#"
[gateway]
max_header_count = "many"

[services.good]
url = "http://127.0.0.1:9000"

[services.bad]
url = "127.0.0.1:9000"

[services.misshapen]
url = 7

[limits.broken]
rate = "lots"

[limits.typo]
rte = "1/s"

[[routes]]
path = "/a"
service = "good"
bogus = 1

[[routes]]
path = "/b"
service = "bad"
limits = ["broken", "typo"]

[[routes]]
path = "/c"
service = "misshapen"

[[routes]]
path = "/d"
service = "nowhere"

[[routes]]
path = "/e"
service = "good"

[[routes]]
path = "/e"
service = "good"

[bogus_section]
x = 1
"#;

/// Independent mistakes all come out in one run: syntax that TOML can read
/// past, shapes, values, references and route conflicts alike; and an entry
/// that is defined but invalid is never called missing.
#[test]
fn every_independent_mistake_is_reported_at_once() {
    let got: Vec<(usize, String)> =
        errors(MANY_MISTAKES).into_iter().map(|e| (e.line, format!("{}: {}", e.key, e.message))).collect();
    let expect: &[(usize, &str)] = &[
        (3, "gateway.max_header_count: invalid type"),
        (9, "services.bad.url: `127.0.0.1:9000` needs a scheme"),
        (12, "services.misshapen.url: invalid type"),
        (15, "limits.broken.rate: `lots` is not a rate"),
        (18, "limits.typo.rte: unknown field `rte`"),
        (23, "routes[0].bogus: unknown field `bogus`"),
        (36, "routes[3].service: no service named `nowhere` (defined: `bad`, `good`, `misshapen`)"),
        (43, "routes[5].path: conflicts with routes[4]"),
        (46, "bogus_section: unknown field `bogus_section`"),
    ];
    for (line, what) in expect {
        assert!(got.iter().any(|(l, m)| l == line && m.starts_with(what)), "missing {line}: {what}\nin {got:#?}");
    }
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    assert!(!got.iter().any(|(_, m)| m.contains("no policy named")), "defined policies are never missing");
}

#[test]
fn syntax_errors_that_toml_reads_past_are_all_reported() {
    let text = "[gateway]\nmax_header_count = = 3\n[services.s]\nurl = \"http://x\n[[routes]]\npath = \"/a\"\nservice = \"s\"\n";
    let list = errors(text);
    let syntax: Vec<usize> = list.iter().filter(|e| e.key == "(syntax)").map(|e| e.line).collect();
    assert!(syntax.len() >= 2, "{list:#?}");
    assert!(syntax.contains(&2) && syntax.contains(&4), "{list:#?}");
}

/// The recovery parser (a file with several mistakes) knows every section
/// `RawConfig` has: none is reported as an unknown field next to the real
/// mistake, and the list it offers for a section it does not know is whole.
#[test]
fn every_section_is_known_to_the_recovery_parser() {
    let names = sections::section_names();
    assert!(names.contains(&"admin") && names.contains(&"gateway") && names.len() >= 7, "{names:?}");
    for name in names {
        let text = format!("bogus = 1\n{SVC}[{name}]\n");
        let list = errors(&text);
        assert!(!list.iter().any(|e| e.message.contains(&format!("unknown field `{name}`"))), "[{name}]: {list:?}");
        let bogus = list.iter().find(|e| e.key == "bogus").unwrap_or_else(|| panic!("[{name}]: {list:?}"));
        assert!(bogus.message.contains(&format!("`{name}`")), "the expected sections name `{name}`: {}", bogus.message);
    }
    // The case the issue found: an [admin] section next to another mistake.
    let list = errors(&format!("{SVC}[admin]\ntoken_sha256 = []\n[gateway]\nmax_header_count = \"many\"\n"));
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].key, "gateway.max_header_count");
}
