//! gRPC-Web bodies on the node (the bridge's decisions are the core's,
//! `pipeline::grpc_web`): a `-text` request body decoded from base64 as it
//! streams, and a gRPC answer's body with its trailers as a last frame
//! (flag 0x80: `name: value\r\n` lines), base64 for `-text`.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::BoxError;

#[derive(Debug, thiserror::Error)]
#[error("the gRPC-Web text body is not base64: {0}")]
struct NotBase64(String);

/// A request body in base64 (`application/grpc-web-text`), decoded. The
/// stream may hold several padded runs (a client encodes each message on
/// its own); what arrives split between chunks waits for the rest.
pub(crate) struct FromText<B> {
    inner: B,
    pending: BytesMut,
}

impl<B> FromText<B> {
    pub(crate) fn new(inner: B) -> Self {
        Self { inner, pending: BytesMut::new() }
    }

    /// Decodes every whole 4-character group pending, run by padded run.
    fn decode(&mut self) -> Result<Bytes, NotBase64> {
        let mut out = Vec::new();
        let mut start = 0;
        let whole = self.pending.len() / 4 * 4;
        while start < whole {
            // A run ends at the group that holds padding, or with what is whole.
            let end =
                self.pending[start..whole].iter().position(|&b| b == b'=').map_or(whole, |at| (start + at) / 4 * 4 + 4);
            STANDARD.decode_vec(&self.pending[start..end], &mut out).map_err(|e| NotBase64(e.to_string()))?;
            start = end;
        }
        let _ = self.pending.split_to(whole);
        Ok(Bytes::from(out))
    }
}

impl<B> Body for FromText<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        self.pending.extend(data.iter().filter(|b| !b.is_ascii_whitespace()));
                        let decoded = self.decode().map_err(|e| Box::new(e) as BoxError)?;
                        if !decoded.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(decoded))));
                        }
                    }
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None if self.pending.is_empty() => return Poll::Ready(None),
                None => {
                    let rest = String::from_utf8_lossy(&self.pending).into_owned();
                    return Poll::Ready(Some(Err(Box::new(NotBase64(format!("it ends in `{rest}`"))))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.pending.is_empty()
    }
}

/// A gRPC answer's body as gRPC-Web: the messages as they are, the
/// trailers as a last frame; with `text`, all of it base64 in one run (3
/// bytes at a time, the last padded).
pub(crate) struct ToWeb<B> {
    inner: B,
    text: bool,
    /// Up to 2 bytes waiting for a whole base64 group (`text`).
    carry: BytesMut,
    done: bool,
}

impl<B> ToWeb<B> {
    pub(crate) fn new(inner: B, text: bool) -> Self {
        Self { inner, text, carry: BytesMut::new(), done: false }
    }

    /// `bytes` as they go out: base64 of whole groups for `text`
    /// (`last`: the rest too, padded).
    fn out(&mut self, bytes: &[u8], last: bool) -> Bytes {
        if !self.text {
            return Bytes::copy_from_slice(bytes);
        }
        self.carry.extend_from_slice(bytes);
        let whole = if last { self.carry.len() } else { self.carry.len() / 3 * 3 };
        let chunk = self.carry.split_to(whole);
        Bytes::from(STANDARD.encode(&chunk))
    }
}

/// The trailer frame: flag 0x80, the length, then `name: value\r\n` lines.
fn trailer_frame(trailers: &HeaderMap) -> Vec<u8> {
    let mut lines = Vec::new();
    for (name, value) in trailers {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    let mut frame = BytesMut::with_capacity(5 + lines.len());
    frame.put_u8(0x80);
    frame.put_u32(u32::try_from(lines.len()).unwrap_or(u32::MAX));
    frame.extend_from_slice(&lines);
    frame.to_vec()
}

impl<B> Body for ToWeb<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let bytes = match frame.into_data() {
                        Ok(data) => self.out(&data, false),
                        Err(frame) => {
                            let trailers = frame.into_trailers().unwrap_or_default();
                            self.done = true;
                            self.out(&trailer_frame(&trailers), true)
                        }
                    };
                    if !bytes.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    // No trailers: the status was in the headers (trailers-only).
                    self.done = true;
                    let rest = self.out(&[], true);
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    fn stream(frames: Vec<Frame<Bytes>>) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        StreamBody::new(futures::stream::iter(frames.into_iter().map(Ok::<_, BoxError>)))
    }

    #[tokio::test]
    async fn text_bodies_decode_across_chunks_and_padded_runs() {
        let a = STANDARD.encode([0u8, 0, 0, 0, 1, 7]); // a run with padding ("AAAAAAEH")
        let b = STANDARD.encode([0u8, 0, 0, 0, 2, 8, 9]); // another, padded ("AAAAAAIICQ==")
        let all = format!("{a}{b}");
        let (x, y) = all.split_at(5);
        let body = FromText::new(stream(vec![
            Frame::data(Bytes::from(x.to_string())),
            Frame::data(Bytes::from(y.to_string())),
        ]));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], &[0, 0, 0, 0, 1, 7, 0, 0, 0, 0, 2, 8, 9]);
        let bad = FromText::new(stream(vec![Frame::data(Bytes::from_static(b"AAA"))]));
        assert!(bad.collect().await.is_err(), "a body cut inside a group is refused");
        let bad = FromText::new(stream(vec![Frame::data(Bytes::from_static(b"A*AA"))]));
        assert!(bad.collect().await.is_err(), "not base64");
    }

    #[tokio::test]
    async fn answers_end_with_their_trailers_as_a_frame_in_binary_and_text() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let frames = || vec![Frame::data(Bytes::from_static(&[0, 0, 0, 0, 1, 42])), Frame::trailers(trailers.clone())];
        let binary = ToWeb::new(stream(frames()), false).collect().await.unwrap().to_bytes();
        let lines = b"grpc-status: 0\r\ngrpc-message: ok\r\n";
        let mut expected = vec![0, 0, 0, 0, 1, 42, 0x80, 0, 0, 0, lines.len() as u8];
        expected.extend_from_slice(lines);
        assert_eq!(&binary[..], &expected[..]);
        let text = ToWeb::new(stream(frames()), true).collect().await.unwrap().to_bytes();
        assert_eq!(STANDARD.decode(&text).unwrap(), expected, "one base64 run");
        let trailers_only = ToWeb::new(stream(Vec::new()), true).collect().await.unwrap().to_bytes();
        assert!(trailers_only.is_empty());
    }
}
