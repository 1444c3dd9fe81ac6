//! Finding a credential in a request (header, cookie, query parameter) and
//! taking it out again before the origin sees the request.

use std::borrow::Cow;

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderValue, Request, Uri};

use crate::config::auth::TokenSource;
use crate::shared::headers;

pub(crate) enum Found<'s, 'r> {
    None,
    /// Present but unusable: answered 400 `invalid_request`.
    Malformed(String),
    /// The credential (borrowed from the request unless it had to be
    /// decoded) and the source it came from (to strip it later).
    Credential(Cow<'r, str>, &'s TokenSource),
}

/// What one source holds: nothing, a credential, or a malformed one.
type Seen<'r> = Option<Result<Cow<'r, str>, String>>;

/// The first source that holds a credential.
pub(crate) fn find<'s, 'r, B>(sources: &'s [TokenSource], req: &'r Request<B>) -> Found<'s, 'r> {
    for source in sources {
        let seen = match source {
            TokenSource::Bearer => bearer(req),
            TokenSource::Header(name) => single(req.headers().get_all(name).iter(), name.as_str()),
            TokenSource::Cookie(name) => cookie(req, name),
            TokenSource::Query(name) => query(req.uri(), name),
        };
        match seen {
            None => continue,
            Some(Ok(credential)) => return Found::Credential(credential, source),
            Some(Err(description)) => return Found::Malformed(description),
        }
    }
    Found::None
}

/// `Authorization: Bearer <b64token>` (RFC 6750 §2.1). Another scheme is
/// not a bearer credential; a bearer one that breaks the grammar is malformed.
fn bearer<B>(req: &Request<B>) -> Seen<'_> {
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err("send one Authorization header".into()));
    }
    if let Some(token) = plain_bearer(value.as_bytes()) {
        return Some(Ok(Cow::Borrowed(token)));
    }
    checked_bearer(value)
}

/// The common shape, `Bearer <b64token>` with one space and nothing around
/// it, in one pass over a table: what [`checked_bearer`] accepts from such a
/// value (its text, trim and character checks cost ~11 instructions a byte
/// of a token, ~6k a request for an RS256 token).
fn plain_bearer(value: &[u8]) -> Option<&str> {
    let token = value.get(..7).filter(|s| s.eq_ignore_ascii_case(b"bearer ")).and(value.get(7..))?;
    let end = token.iter().rposition(|&b| b != b'=').map_or(0, |last| last + 1);
    let b64token = !token.is_empty() && all_b64token(&token[..end]);
    b64token.then(|| std::str::from_utf8(token).ok()).flatten()
}

/// Whether every byte is a b64token character: with no branch and no
/// table, so the compiler checks sixteen bytes at once in vector registers
/// (~1.6 instructions a byte; a branch a byte cost ~6, a table ~2.5).
fn all_b64token(s: &[u8]) -> bool {
    s.iter().fold(true, |all, &b| all & is_b64token(b))
}

/// RFC 6750's b64token characters (before any trailing `=`): letters,
/// digits and `-._~+/`, by arithmetic (`| 0x20` folds case; `-./` are adjacent).
fn is_b64token(b: u8) -> bool {
    let letter = (b | 0x20).wrapping_sub(b'a') < 26;
    let digit = b.wrapping_sub(b'0') < 10;
    let dash_dot_slash = b.wrapping_sub(b'-') < 3;
    letter | digit | dash_dot_slash | (b == b'_') | (b == b'~') | (b == b'+')
}

fn checked_bearer(value: &HeaderValue) -> Seen<'_> {
    let Ok(text) = value.to_str() else { return Some(Err("the Authorization header is not valid text".into())) };
    let (scheme, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    let b64token = !token.is_empty() && all_b64token(token.trim_end_matches('=').as_bytes());
    if !b64token {
        return Some(Err("the Authorization header must be `Bearer <token>`".into()));
    }
    Some(Ok(Cow::Borrowed(token)))
}

fn single<'a>(mut values: impl Iterator<Item = &'a HeaderValue>, name: &str) -> Seen<'a> {
    let value = values.next()?;
    if values.next().is_some() {
        return Some(Err(format!("send one {name} header")));
    }
    Some(match value.to_str().map(str::trim) {
        Ok(v) if !v.is_empty() => Ok(Cow::Borrowed(v)),
        _ => Err(format!("the {name} header is empty or not valid text")),
    })
}

fn cookie<'r, B>(req: &'r Request<B>, name: &str) -> Seen<'r> {
    let v = headers::cookie(req.headers(), name)?;
    Some(if v.is_empty() { Err(format!("the {name} cookie is empty")) } else { Ok(Cow::Borrowed(v)) })
}

fn query<'r>(uri: &'r Uri, name: &str) -> Seen<'r> {
    for pair in uri.query()?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            return Some(match percent_decode(v) {
                Some(v) if !v.is_empty() => Ok(Cow::Owned(v)),
                _ => Err(format!("the {name} query parameter is empty or badly encoded")),
            });
        }
    }
    None
}

/// `%XX` and `+` decoding of a query value; `None` if it is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Removes the credential a source found.
pub(crate) fn strip<B>(source: &TokenSource, req: &mut Request<B>) {
    match source {
        TokenSource::Bearer => {
            req.headers_mut().remove(AUTHORIZATION);
        }
        TokenSource::Header(name) => {
            req.headers_mut().remove(name);
        }
        TokenSource::Cookie(name) => {
            let kept: Vec<String> = req
                .headers()
                .get_all(COOKIE)
                .iter()
                .filter_map(|h| h.to_str().ok())
                .flat_map(|t| t.split(';'))
                .map(str::trim)
                .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .map(str::to_string)
                .collect();
            req.headers_mut().remove(COOKIE);
            if let Ok(v) = HeaderValue::from_str(&kept.join("; "))
                && !kept.is_empty()
            {
                req.headers_mut().insert(COOKIE, v);
            }
        }
        TokenSource::Query(name) => {
            let uri = req.uri();
            let kept: Vec<&str> = uri
                .query()
                .unwrap_or_default()
                .split('&')
                .filter(|pair| !pair.is_empty() && pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
                .collect();
            let path_and_query =
                if kept.is_empty() { uri.path().to_string() } else { format!("{}?{}", uri.path(), kept.join("&")) };
            let mut parts = uri.clone().into_parts();
            if let Ok(pq) = path_and_query.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(new) = Uri::from_parts(parts) {
                    *req.uri_mut() = new;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut r = Request::get(uri);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(()).unwrap()
    }

    fn token(found: Found) -> Result<String, String> {
        match found {
            Found::Credential(c, _) => Ok(c.into_owned()),
            Found::Malformed(m) => Err(m),
            Found::None => Err("none".into()),
        }
    }

    #[test]
    fn bearer_tokens_follow_rfc_6750() {
        let s = [TokenSource::Bearer];
        assert_eq!(
            token(find(&s, &req("/", &[("authorization", "Bearer abc.def-_~+/ghi==")]))),
            Ok("abc.def-_~+/ghi==".into())
        );
        assert_eq!(token(find(&s, &req("/", &[("authorization", "bearer  abc")]))), Ok("abc".into()));
        assert_eq!(token(find(&s, &req("/", &[("authorization", "Basic dXNlcjpwdw==")]))), Err("none".into()));
        assert!(token(find(&s, &req("/", &[("authorization", "Bearer")]))).unwrap_err().contains("Bearer <token>"));
        assert!(token(find(&s, &req("/", &[("authorization", "Bearer a b")]))).unwrap_err().contains("Bearer <token>"));
        assert!(token(find(&s, &req("/", &[("authorization", "Bearer a"), ("authorization", "Bearer b")]))).is_err());
        assert_eq!(token(find(&s, &req("/", &[]))), Err("none".into()));
    }

    #[test]
    fn b64token_characters_are_rfc_6750s() {
        for b in 0..=u8::MAX {
            let spec = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(is_b64token(b), spec, "{b:#04x}");
            assert_eq!(all_b64token(&[b; 20]), spec, "{b:#04x} in a chunk and the remainder");
        }
        let mut token = [b'x'; 40];
        for i in 0..token.len() {
            token[i] = b',';
            assert!(!all_b64token(&token), "a comma at {i}");
            token[i] = b'x';
        }
        assert!(all_b64token(&token));
    }

    /// Any value the one-pass shape takes, the full checks take alike.
    #[test]
    fn the_plain_shape_agrees_with_the_full_checks() {
        use proptest::prelude::*;
        let chars = prop::sample::select(b"Bb eEaArR\t=-._~+/:a9\x7f\x80\"".to_vec());
        let values = (
            prop::sample::select(vec!["Bearer ", "bearer ", "BEARER ", "Bearer", "Bearer  ", " Bearer ", ""]),
            prop::collection::vec(chars, 0..12),
        );
        proptest!(ProptestConfig::with_cases(4000), |((prefix, tail) in values)| {
            let bytes = [prefix.as_bytes(), &tail].concat();
            let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
            if let Some(token) = plain_bearer(value.as_bytes()) {
                prop_assert_eq!(checked_bearer(&value), Some(Ok(token.into())));
            }
        });
        assert_eq!(plain_bearer(b"Bearer abc.def-_~+/ghi=="), Some("abc.def-_~+/ghi=="));
        assert_eq!(plain_bearer(b"bearer =="), Some("=="));
        for other in [&b"Bearer  abc"[..], b"Bearer a=b", b"Bearer ", b"Bearer abc ", b"Basic abc", b"Bearer\tabc"] {
            assert_eq!(plain_bearer(other), None, "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn cookies_and_query_parameters() {
        let c = [TokenSource::Cookie("session".into())];
        let r = req("/", &[("cookie", "a=1; session=tok123; b=2")]);
        assert_eq!(token(find(&c, &r)), Ok("tok123".into()));
        let mut r = r;
        strip(&c[0], &mut r);
        assert_eq!(r.headers()["cookie"], "a=1; b=2");

        let q = [TokenSource::Query("access_token".into())];
        let mut r = req("/x?a=1&access_token=t%2Bk&b=2", &[]);
        assert_eq!(token(find(&q, &r)), Ok("t+k".into()));
        strip(&q[0], &mut r);
        assert_eq!(r.uri().to_string(), "/x?a=1&b=2");
        let mut r = req("/x?access_token=t", &[]);
        strip(&q[0], &mut r);
        assert_eq!(r.uri().to_string(), "/x");
        assert!(token(find(&q, &req("/x?access_token=", &[]))).is_err());
    }

    #[test]
    fn first_source_with_a_credential_wins() {
        let s = [TokenSource::Bearer, TokenSource::Cookie("s".into())];
        let r = req("/", &[("cookie", "s=from-cookie")]);
        match find(&s, &r) {
            Found::Credential(c, source) => {
                assert_eq!(c, "from-cookie");
                assert_eq!(source, &TokenSource::Cookie("s".into()));
            }
            _ => panic!("expected the cookie"),
        }
    }
}
