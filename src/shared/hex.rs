//! Lower-case hex, as ids, digests and store keys are written.

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends the lower-case hex of `bytes` to `s`: written 32 bytes at a time
/// into a buffer, then appended whole (a `char` at a time cost three times
/// as much: the ids of every request are written here).
pub(crate) fn push_hex(s: &mut String, bytes: &[u8]) {
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(32) {
        let text = &mut buf[..chunk.len() * 2];
        hex_into(text, chunk);
        // Only ASCII digits were written, so this never fails.
        s.push_str(std::str::from_utf8(text).unwrap_or_default());
    }
}

/// Writes the lower-case hex of `bytes` into `out`, two digits a byte, as
/// many as fit (ids are laid out in fixed buffers this way).
pub(crate) fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_in_order_across_chunks() {
        let bytes: Vec<u8> = (0..=255u8).chain(0..=40).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), expected);
        let mut s = String::from("id=");
        push_hex(&mut s, &bytes[250..]);
        assert_eq!(s, format!("id={}", &expected[500..]));
        assert_eq!(hex(&[]), "");
    }
}
