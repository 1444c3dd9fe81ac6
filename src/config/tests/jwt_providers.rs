//! JWT providers: audiences, algorithms, where the keys come from and where the token is read.

use super::*;

fn jwt(body: &str) -> String {
    format!("[auth.jwt.corp]\nissuer = \"https://idp/\"\n{body}\n")
}

#[test]
fn jwt_audiences_and_algorithms_are_checked() {
    expect_each_key(&[
        (
            jwt("algorithms = [\"RS256\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.audiences",
            "at least one audience",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"none\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.algorithms[0]",
            "never accepted",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS257\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.algorithms[0]",
            "not a JWT algorithm",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\nhmac_secret = \"{{ secret }}\""),
            "auth.jwt.corp.algorithms",
            "only HS256",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\", \"HS256\"]\njwks_uri = \"http://idp/jwks\""),
            "auth.jwt.corp.algorithms",
            "never public keys",
        ),
    ]);
}

#[test]
fn jwt_key_sources_are_checked() {
    expect_each_key(&[
        (jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]"), "auth.jwt.corp", "exactly one of"),
        (
            jwt(
                "audiences = [\"a\"]\nalgorithms = [\"HS256\"]\nhmac_secret = \"literally-in-the-file-0123456789abcdef\"",
            ),
            "auth.jwt.corp.hmac_secret",
            "never go in the config file",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"HS256\"]\nhmac_secret = \"{{ short }}\""),
            "auth.jwt.corp.hmac_secret",
            "at least 32",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"ftp://idp/jwks\""),
            "auth.jwt.corp.jwks_uri",
            "not an http(s) URL",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"http://idp:jwks/keys\""),
            "auth.jwt.corp.jwks_uri",
            "the port `jwks`",
        ),
        (
            jwt("audiences = [\"a\"]\nalgorithms = [\"RS256\"]\nkeys = [{ pem = \"garbage\" }]"),
            "auth.jwt.corp.keys[0].pem",
            "not a PEM public key",
        ),
    ]);
}

#[test]
fn jwt_token_sources_are_checked() {
    expect_each_key(&[(
        jwt(
            "audiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"http://idp/jwks\"\ntoken_from = [{ header = \"x\", cookie = \"y\" }]",
        ),
        "auth.jwt.corp.token_from[0]",
        "exactly one of",
    )]);
}
