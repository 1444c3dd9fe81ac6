//! Request ids and W3C trace context (`traceparent`), so a request can be
//! followed from the client through the gateway into the origin's logs.

use http::HeaderValue;

use crate::shared::entropy::Entropy;
use crate::shared::hex::hex_into;

/// A request id from the client if it is well formed, else a fresh UUIDv4.
pub(crate) fn request_id(inbound: Option<&HeaderValue>, entropy: &Entropy) -> HeaderValue {
    if let Some(v) = inbound.filter(|v| valid_request_id(v.as_bytes())) {
        return v.clone();
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&entropy.bytes()[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    // 8-4-4-4-12 hex digits, written in place.
    let mut uuid = [b'-'; 36];
    for (text, bytes) in [(0..8, 0..4), (9..13, 4..6), (14..18, 6..8), (19..23, 8..10), (24..36, 10..16)] {
        hex_into(&mut uuid[text], &b[bytes]);
    }
    HeaderValue::from_bytes(&uuid).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// 1 to 128 characters from `A-Z a-z 0-9 - _ . : + / = @`: enough for
/// UUIDs, ULIDs and vendor ids, nothing that could break a log line.
fn valid_request_id(b: &[u8]) -> bool {
    (1..=128).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.:+/=@".contains(c))
}

/// An id as `N` lower-case hex digits, kept inline: a request's trace
/// ids are made on every request (as `String`s: three allocations, one
/// more for the log's copy).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct HexId<const N: usize>([u8; N]);

impl<const N: usize> HexId<N> {
    /// The hex of `bytes` (`N / 2` of them).
    fn of(bytes: &[u8]) -> Self {
        let mut text = [b'0'; N];
        hex_into(&mut text, bytes);
        Self(text)
    }

    /// `N` bytes already checked to be lower-case hex.
    pub(super) fn checked(text: &[u8]) -> Option<Self> {
        Some(Self(text.try_into().ok()?))
    }

    /// The digits as bytes, with no UTF-8 check (they are ASCII).
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored, so this never fails.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl<const N: usize> Default for HexId<N> {
    fn default() -> Self {
        Self([b'0'; N])
    }
}

impl<const N: usize> std::ops::Deref for HexId<N> {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<const N: usize> std::fmt::Debug for HexId<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
impl<const N: usize> PartialEq<&str> for HexId<N> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The trace context forwarded upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trace {
    pub(crate) trace_id: HexId<32>,
    /// The gateway's own span, the parent of the origin's.
    pub(crate) span_id: HexId<16>,
    pub(crate) flags: HexId<2>,
    /// True if the client sent a valid `traceparent` (then `tracestate` is kept too).
    pub(crate) continued: bool,
    /// The client's span, when continued.
    pub(crate) parent: Option<HexId<16>>,
}

impl Trace {
    /// Continues a valid inbound `traceparent` with a new span (keeping its
    /// sampling decision), or starts a trace, sampled for `ratio` of them
    /// (decided by the trace id, as OpenTelemetry's ratio sampler does).
    pub(crate) fn from_header(inbound: Option<&HeaderValue>, entropy: &Entropy, ratio: f64) -> Self {
        let span_id = HexId::of(&entropy.bytes()[32..40]);
        match inbound.and_then(|v| v.to_str().ok()).and_then(parse_traceparent) {
            Some((trace_id, parent, flags)) => Self { trace_id, span_id, flags, continued: true, parent: Some(parent) },
            None => {
                let id = &entropy.bytes()[16..32];
                let draw = u64::from_be_bytes(id[8..16].try_into().unwrap_or_default()) >> 11;
                // 53 bits against the ratio: exact for 0 and 1.
                let sampled = (draw as f64) < ratio * (1u64 << 53) as f64;
                let flags = HexId(if sampled { *b"01" } else { *b"00" });
                Self { trace_id: HexId::of(id), span_id, flags, continued: false, parent: None }
            }
        }
    }

    /// The trace is sampled: its spans are recorded (where the home exports them).
    pub(crate) fn sampled(&self) -> bool {
        u8::from_str_radix(self.flags.as_str(), 16).is_ok_and(|f| f & 1 == 1)
    }

    /// `traceparent` naming `span_id` as the parent.
    pub(crate) fn header_for(&self, span_id: &[u8]) -> HeaderValue {
        let mut text = Vec::with_capacity(55);
        for part in [b"00".as_slice(), self.trace_id.as_bytes(), span_id, self.flags.as_bytes()] {
            if !text.is_empty() {
                text.push(b'-');
            }
            text.extend_from_slice(part);
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    pub(crate) fn header_value(&self) -> HeaderValue {
        self.header_for(self.span_id.as_bytes())
    }
}

/// Parses `version-traceid-parentid-flags` per W3C Trace Context level 1:
/// lower-case hex, no all-zero ids, version `ff` invalid, and a future version
/// may carry more fields after a `-`. Returns (trace id, parent id, flags).
fn parse_traceparent(text: &str) -> Option<(HexId<32>, HexId<16>, HexId<2>)> {
    let t = text.trim_matches([' ', '\t']);
    let b = t.as_bytes();
    if b.len() < 55 || !lower_hex(&b[..2]) || &b[..2] == b"ff" {
        return None;
    }
    let version_00 = &b[..2] == b"00";
    if (version_00 && b.len() != 55) || (!version_00 && b.len() > 55 && b[55] != b'-') {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (&b[3..35], &b[36..52], &b[53..55]);
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|&c| c == b'0') || parent.iter().all(|&c| c == b'0') {
        return None;
    }
    Some((HexId::checked(trace)?, HexId::checked(parent)?, HexId::checked(flags)?))
}

fn lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn inbound_request_ids_are_kept_only_when_well_formed() {
        let e = Entropy::draw(1);
        assert_eq!(request_id(Some(&hv("abc-123_X.y:z")), &e), "abc-123_X.y:z");
        for bad in ["", "has space", "quote\"", "a,b", &"x".repeat(129)] {
            let id = request_id(Some(&hv(bad)), &e);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 36, "a fresh UUID replaces {bad:?}");
        }
        let generated = request_id(None, &e);
        let s = generated.to_str().unwrap();
        assert_eq!(&s[14..15], "4", "version 4: {s}");
        assert!("89ab".contains(&s[19..20]), "variant 10xx: {s}");
        for (i, c) in s.bytes().enumerate() {
            let dash = [8, 13, 18, 23].contains(&i);
            assert!(if dash { c == b'-' } else { c.is_ascii_hexdigit() && !c.is_ascii_uppercase() }, "{s} at {i}");
        }
        assert_ne!(request_id(None, &Entropy::draw(2)), generated, "fresh ids differ");
    }

    #[test]
    fn ids_are_kept_inline_as_lower_hex() {
        assert_eq!(HexId::<8>::of(&[0x00, 0xab, 0x10, 0xff]), "00ab10ff");
        assert_eq!(HexId::<4>::checked(b"abc"), None, "a wrong length is refused, not a panic");
        assert_eq!(HexId::<2>::checked(b"0f").map(|h| h.to_string()), Some("0f".to_string()));
        assert_eq!(format!("{:?}", HexId::<2>::default()), "\"00\"");
    }

    #[test]
    fn valid_traceparent_is_continued_with_a_new_span() {
        let t = Trace::from_header(Some(&hv(VALID)), &Entropy::draw(1), 1.0);
        assert!(t.continued);
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id, "00f067aa0ba902b7");
        assert_eq!(t.flags, "01");
        let out = t.header_value();
        assert!(out.to_str().unwrap().starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_eq!(out.len(), 55);
        // A future version with extra fields is understood and sent on as version 00.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        let t = Trace::from_header(Some(&hv(future)), &Entropy::draw(1), 1.0);
        assert!(t.continued);
        assert_eq!(t.flags, "00");
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        let bad = [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "garbage",
        ];
        for b in bad {
            let t = Trace::from_header(Some(&hv(b)), &Entropy::draw(3), 1.0);
            assert!(!t.continued, "{b}");
            assert_eq!(t.trace_id.len(), 32);
            assert_ne!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        }
    }

    #[test]
    fn new_traces_are_sampled_at_the_ratio_and_continued_ones_keep_the_clients_choice() {
        let sampled =
            |ratio| (0..2000u128).filter(|&i| Trace::from_header(None, &Entropy::draw(i), ratio).sampled()).count();
        assert_eq!(sampled(0.0), 0);
        assert_eq!(sampled(1.0), 2000);
        let tenth = sampled(0.1);
        assert!((140..=260).contains(&tenth), "{tenth} of 2000 at 10 %");
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let t = Trace::from_header(Some(&hv(unsampled)), &Entropy::draw(1), 1.0);
        assert!(!t.sampled());
        assert_eq!(t.parent.as_deref(), Some("00f067aa0ba902b7"));
        assert!(Trace::from_header(Some(&hv(VALID)), &Entropy::draw(1), 0.0).sampled());
    }
}
