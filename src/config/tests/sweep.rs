//! The `[sweep]` endpoint.

use super::*;

#[test]
fn the_sweep_is_checked() {
    let hash = "292d6859659abd91ec9f82925b6e85d4ebae3b3c8140df2c26d9658f4ae86df7";
    let text = format!("{SVC}[sweep]\npath = \"sweep\"\ntoken_sha256 = \"abc\"\nbatch = 0\n");
    expect_errors(
        &text,
        &[
            (4, "sweep.path", "a plain path"),
            (5, "sweep.token_sha256", "64 hex digits"),
            (6, "sweep.batch", "between 1 and 100000"),
        ],
    );
    for path in ["/a/../sweep", "/{x}", "/a?b"] {
        let e = one(&format!("{SVC}[sweep]\npath = \"{path}\"\ntoken_sha256 = \"{hash}\"\n"));
        assert_eq!(e.key, "sweep.path", "{path}");
    }
    let shadowing = format!(
        "{SVC}[sweep]\npath = \"/ops/sweep\"\ntoken_sha256 = \"{hash}\"\n[[routes]]\nname = \"ops\"\npath = \"/ops/{{*rest}}\"\nservice = \"s\"\n"
    );
    let e = one(&shadowing);
    assert_eq!((e.line, e.key.as_str()), (4, "sweep.path"));
    assert!(e.message.contains("route `ops` also answers this path"), "{}", e.message);
    let ok = Config::parse(
        &format!("{SVC}[sweep]\npath = \"/ops/sweep\"\ntoken_sha256 = \"{hash}\"\n"),
        "gw.toml",
        &Variables::default(),
    )
    .unwrap();
    let sweep = ok.sweep.expect("configured");
    assert_eq!((sweep.path.as_str(), sweep.batch), ("/ops/sweep", 1000));
}
