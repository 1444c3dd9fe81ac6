//! Path normalisation, done once before routing so that the path the router
//! matches is the path the origin receives: `/v1/../admin` is matched (and
//! forwarded) as `/admin`, and can never slip past the rules of `/admin`.
//!
//! Steps, in order:
//! 1. `%XX` escapes of unreserved characters (RFC 3986 §2.3: letters, digits,
//!    `-._~`) are decoded; other escapes are kept, with upper-case hex.
//! 2. Escapes that would change the path's structure or smuggle control bytes
//!    (`%2F` `/`, `%5C` `\`, `%00`-`%1F`, `%7F`) and raw `\` are refused.
//! 3. `;` path parameters (`%3B` too), per [`PathParameters`]: by default a
//!    dot segment that carries them (`..;`, `.;x`) is refused, because
//!    servlet containers and some frameworks strip the parameters and then
//!    read it as `..` — a way past a route's prefix at such an origin.
//! 4. Empty segments (`//`) are dropped; `.` and `..` segments are resolved
//!    (RFC 3986 §5.2.4), never climbing above `/`.

use std::borrow::Cow;

use thiserror::Error;

/// Why a request path was refused (always the client's fault: 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum PathError {
    #[error("the request path must start with `/`")]
    NotAbsolute,
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
    #[error("the request path encodes `/`, `\\` or a control character, which is not allowed")]
    ForbiddenEscape,
    #[error("the request path contains `\\`, which is not allowed")]
    Backslash,
    #[error("the request path has a dot segment with `;` parameters (such as `..;`), which some origins read as `..`")]
    DotSegmentParameters,
    #[error("the request path contains `;`, which this gateway does not accept")]
    Parameters,
}

/// What the gateway accepts of `;` path parameters (`[gateway]
/// path_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PathParameters {
    /// Refuse a `.` or `..` segment that carries parameters; forward others.
    #[default]
    RefuseDotSegments,
    /// Refuse any `;` in a path.
    Refuse,
}

/// Whether a segment's text has a parameter delimiter: `;` or its escape
/// (upper-case once decoded), which some servers decode before splitting.
fn parameter_at(segment: &str) -> Option<usize> {
    match (segment.find(';'), segment.find("%3B")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Normalises an origin-form path (without the query): borrowed when it
/// is normal already (the common case).
pub(crate) fn normalize_path(raw: &str, parameters: PathParameters) -> Result<Cow<'_, str>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    // Fast path: nothing to decode, no parameters, no dot or empty segments.
    if !needs_work(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw)?;
    check_parameters(&decoded, parameters)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// `;` parameters in a decoded path, per the gateway's setting.
fn check_parameters(decoded: &str, parameters: PathParameters) -> Result<(), PathError> {
    for segment in decoded.split('/') {
        let Some(at) = parameter_at(segment) else { continue };
        if parameters == PathParameters::Refuse {
            return Err(PathError::Parameters);
        }
        if matches!(&segment[..at], "." | "..") {
            return Err(PathError::DotSegmentParameters);
        }
    }
    Ok(())
}

/// An escape, `\`, `;`, or a `.`, `..` or empty segment (`//`; a
/// trailing `/` is kept): one pass over the segments after the first `/`.
fn needs_work(raw: &str) -> bool {
    let mut segments = raw.as_bytes().split(|&c| c == b'/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let inner_empty = segment.is_empty() && segments.peek().is_some();
        if inner_empty
            || segment == b"."
            || segment == b".."
            || segment.iter().any(|&c| c == b'%' || c == b'\\' || c == b';')
        {
            return true;
        }
    }
    false
}

fn decode_unreserved(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
                let value = hex_value(hex[0])
                    .zip(hex_value(hex[1]))
                    .map(|(hi, lo)| hi << 4 | lo)
                    .ok_or(PathError::BadEscape)?;
                match value {
                    b'/' | b'\\' | 0x00..=0x1f | 0x7f => return Err(PathError::ForbiddenEscape),
                    c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => out.push(c as char),
                    c => {
                        out.push('%');
                        out.push(char::from(HEX[(c >> 4) as usize]));
                        out.push(char::from(HEX[(c & 0xf) as usize]));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy the run up to the next byte that needs attention.
                let end = bytes[i..].iter().position(|&c| c == b'%' || c == b'\\').map_or(bytes.len(), |p| i + p);
                out.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    // A path ending in `/`, `/.` or `/..` names a directory: keep its trailing slash.
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p, PathParameters::default()).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_pass_unchanged() {
        assert_eq!(norm("/").unwrap(), "/");
        assert_eq!(norm("/v1/users/42").unwrap(), "/v1/users/42");
        assert_eq!(norm("/v1/users/").unwrap(), "/v1/users/");
        assert_eq!(norm("/a/b.c/.well-known/x..y").unwrap(), "/a/b.c/.well-known/x..y");
    }

    #[test]
    fn dot_segments_and_duplicate_slashes_are_resolved() {
        assert_eq!(norm("/v1/../admin").unwrap(), "/admin");
        assert_eq!(norm("/v1/./users//42").unwrap(), "/v1/users/42");
        assert_eq!(norm("//admin").unwrap(), "/admin");
        assert_eq!(norm("/../../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(norm("/a/b/..").unwrap(), "/a/");
        assert_eq!(norm("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(norm("/..").unwrap(), "/");
        assert_eq!(norm("/a/").unwrap(), "/a/");
    }

    #[test]
    fn unreserved_escapes_are_decoded_before_dot_removal() {
        assert_eq!(norm("/v1/%2e%2e/admin").unwrap(), "/admin");
        assert_eq!(norm("/v1/%2E./admin").unwrap(), "/admin");
        assert_eq!(norm("/%61dmin").unwrap(), "/admin");
        assert_eq!(norm("/a%7Eb").unwrap(), "/a~b");
    }

    #[test]
    fn reserved_escapes_are_kept_with_upper_hex() {
        assert_eq!(norm("/files/a%20b").unwrap(), "/files/a%20b");
        assert_eq!(norm("/files/a%3fb").unwrap(), "/files/a%3Fb");
        assert_eq!(norm("/caf%c3%a9").unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn structural_escapes_and_garbage_are_refused() {
        assert_eq!(norm("/v1/..%2fadmin"), Err(PathError::ForbiddenEscape));
        assert_eq!(norm("/v1/%2F"), Err(PathError::ForbiddenEscape));
        assert_eq!(norm("/v1/%5c..%5cadmin"), Err(PathError::ForbiddenEscape));
        assert_eq!(norm("/v1/%00"), Err(PathError::ForbiddenEscape));
        assert_eq!(norm("/v1/\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(norm("/v1/%zz"), Err(PathError::BadEscape));
        assert_eq!(norm("/v1/%4"), Err(PathError::BadEscape));
        assert_eq!(norm("v1"), Err(PathError::NotAbsolute));
        assert_eq!(norm("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn dot_segments_with_parameters_are_refused() {
        for p in ["/v1/..;/admin", "/v1/..;x=1/admin", "/v1/.;/admin", "/v1/%2e%2e;/admin", "/v1/..%3b/admin", "/..;"] {
            assert_eq!(norm(p), Err(PathError::DotSegmentParameters), "{p}");
        }
        // Other parameters pass unchanged by default, and refuse with `refuse`.
        for p in ["/cars;color=red/1", "/a/b;v=1", "/a/x..;", "/a/%3Bx"] {
            assert_eq!(norm(p).as_deref(), Ok(p.replace("%3b", "%3B").as_str()), "{p}");
            assert_eq!(normalize_path(p, PathParameters::Refuse), Err(PathError::Parameters), "{p}");
        }
        assert_eq!(normalize_path("/v1/..;/admin", PathParameters::Refuse), Err(PathError::Parameters));
        assert_eq!(normalize_path("/v1/users", PathParameters::Refuse).as_deref(), Ok("/v1/users"));
    }

    #[test]
    fn normalising_is_idempotent() {
        for p in ["/a/../b//c/%2e/d%20e/", "/x/%7e/..", "/%41%42/./"] {
            let once = norm(p).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{p}");
        }
    }
}
