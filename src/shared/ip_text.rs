//! An address as text, as forwarding headers and the log write it. IPv4 is
//! written digit by digit: `Ipv4Addr`'s `Display` (buffered and padded) cost
//! ~1.3k instructions, paid twice by every request.

use std::fmt::Write as _;
use std::net::IpAddr;

/// Appends `ip` as `Display` writes it (`192.0.2.1`, `2001:db8::1`).
pub(crate) fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            let mut text = String::new();
            let _ = write!(text, "{v6}");
            out.extend_from_slice(text.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_display_writes_it() {
        let mut seen = 0;
        for ip in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "127.0.0.1", "192.0.2.201", "::1", "2001:db8::8a2e:370:7334"]
            .iter()
            .map(|s| s.parse::<IpAddr>().unwrap())
            .chain((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, 7])))
        {
            let mut out = b"x".to_vec();
            push_ip(&mut out, ip);
            assert_eq!(out, format!("x{ip}").into_bytes());
            seen += 1;
        }
        assert_eq!(seen, 263);
    }
}
