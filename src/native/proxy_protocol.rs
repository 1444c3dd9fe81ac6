//! The PROXY protocol (HAProxy's, v1 text and v2 binary) on listeners that
//! opt in: an L4 load balancer opens every connection with a header naming
//! the client, and the node takes the client's address from it. Exactly
//! the header's bytes are read (peeked first), so what follows — a TLS
//! handshake or an HTTP request — is untouched. A connection without a
//! valid header is closed: on such a listener, anyone could otherwise
//! claim any address by connecting directly.

use std::io;
use std::net::IpAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 signature.
const V2: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// A v1 header is at most 107 bytes, CRLF included.
const V1_MAX: usize = 107;
/// The most a v2 header may carry after its 16 fixed bytes (addresses and TLVs).
const V2_MAX_BODY: usize = 4096;

/// Reads the header: the client's address, or `None` for a header that
/// names none (v2 `LOCAL`, the balancer's own health check; v1 `UNKNOWN`).
pub(crate) async fn read(stream: &mut TcpStream) -> io::Result<Option<IpAddr>> {
    let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut peeked = [0u8; V1_MAX];
    let seen = peek_at_least(stream, &mut peeked, V2.len()).await?;
    if peeked[..V2.len()] == *V2 {
        let mut fixed = [0u8; 16];
        stream.read_exact(&mut fixed).await?;
        let length = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        if length > V2_MAX_BODY {
            return Err(invalid(format!("a v2 header of {length} bytes")));
        }
        let mut header = fixed.to_vec();
        header.resize(16 + length, 0);
        stream.read_exact(&mut header[16..]).await?;
        let parsed = ppp::v2::Header::try_from(header.as_slice()).map_err(|e| invalid(e.to_string()))?;
        return Ok(match (parsed.command, parsed.addresses) {
            (ppp::v2::Command::Local, _) => None,
            (_, ppp::v2::Addresses::IPv4(a)) => Some(a.source_address.into()),
            (_, ppp::v2::Addresses::IPv6(a)) => Some(a.source_address.into()),
            (_, _) => None,
        });
    }
    if !peeked[..seen].starts_with(b"PROXY ") {
        return Err(invalid("no PROXY protocol header".into()));
    }
    // v1: up to CRLF, within 107 bytes.
    let mut seen = seen;
    let end = loop {
        if let Some(at) = peeked[..seen].windows(2).position(|w| w == b"\r\n") {
            break at + 2;
        }
        if seen == V1_MAX {
            return Err(invalid("a v1 header without CRLF within 107 bytes".into()));
        }
        seen = peek_at_least(stream, &mut peeked, seen + 1).await?;
    };
    let mut header = vec![0u8; end];
    stream.read_exact(&mut header).await?;
    let parsed = ppp::v1::Header::try_from(header.as_slice()).map_err(|e| invalid(e.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(a.source_address.into()),
        ppp::v1::Addresses::Tcp6(a) => Some(a.source_address.into()),
        ppp::v1::Addresses::Unknown => None,
    })
}

/// Peeks until at least `want` bytes have arrived (or the buffer is full).
async fn peek_at_least(stream: &TcpStream, buf: &mut [u8], want: usize) -> io::Result<usize> {
    let mut wait = std::time::Duration::from_millis(1);
    loop {
        let n = stream.peek(buf).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a PROXY protocol header"));
        }
        if n >= want.min(buf.len()) {
            return Ok(n);
        }
        // Readiness stays set while bytes wait unread: look again later.
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_millis(64));
    }
}
