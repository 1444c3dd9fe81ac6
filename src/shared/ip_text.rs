//! An address as text, as forwarding headers and the log write it, laid
//! out on the stack. IPv4 is written digit by digit: `Ipv4Addr`'s `Display`
//! (buffered and padded) cost ~1.3k instructions, paid twice a request.

use std::fmt::Write as _;
use std::net::IpAddr;

/// `ip` as `Display` writes it (`192.0.2.1`, `2001:db8::1`).
pub(crate) struct IpText {
    buf: [u8; 46],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> Self {
        let mut text = Self { buf: [0; 46], len: 0 };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            // The longest (an IPv4-mapped one with every group) is 45 bytes.
            IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_display_writes_it() {
        let mut seen = 0;
        let longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        for ip in ["0.0.0.0", "9.10.99.100", "255.255.255.255", "127.0.0.1", "::1", "2001:db8::8a2e:370:7334", longest]
            .iter()
            .map(|s| s.parse::<IpAddr>().unwrap())
            .chain((0..=255u8).map(|o| IpAddr::from([o, 255 - o, o / 3, 7])))
            .chain([IpAddr::from([0xffff_u16; 8]), "::ffff:255.255.255.255".parse().unwrap()])
        {
            assert_eq!(IpText::new(ip).as_bytes(), ip.to_string().as_bytes());
            seen += 1;
        }
        assert_eq!(seen, 265);
    }
}
