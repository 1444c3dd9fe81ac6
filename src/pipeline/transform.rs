//! The transform phase: the request the origin receives and the response the
//! client receives. Hop-by-hop headers never cross the gateway; forwarding
//! headers say who the client was, believing inbound ones only from trusted
//! proxies; the route's header edits come last, so config has the last word.

use std::convert::Infallible;
use std::net::IpAddr;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use ipnet::IpNet;

use super::{Ctx, Flow, Gateway, Outcome};
use crate::config::{Config, PathRewrite, Route, Target};
use crate::ports::{Body, Ports};
use crate::shared::headers::is_hop_by_hop;
use crate::shared::ip_text::IpText;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Removes the hop-by-hop headers (the fixed list above).
///
/// Headers that a `Connection` header *names* are not removed: Spin and
/// wasmtime drop `Connection` before the edge component can read it, so
/// honouring it on the node alone would make the homes disagree. It also
/// closes a known abuse, where a client names a header (`X-Forwarded-For`,
/// an identity header) to have a proxy strip what a trusted hop added.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, is_hop_by_hop);
}

/// `spin-*` headers describe one Spin hop (client address, matched route);
/// Spin overwrites them at the edge and no origin should see them, so the
/// node drops any a client sends, too.
fn is_platform_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("spin-")
}

/// Headers only the gateway sets (forwarding, identity), as a client might
/// disguise them: `X-Real-IP` (which origins read like `X-Forwarded-For`),
/// and any name with `_` that reads as one of them once `_` is `-` (CGI,
/// WSGI and PHP servers map both to `HTTP_X_USER`). With
/// `underscores_in_headers = "drop"` (the default, as nginx) every name with
/// `_` goes.
fn disguised(name: &HeaderName, config: &Config) -> bool {
    let name = name.as_str();
    if name == X_REAL_IP {
        return true;
    }
    if !name.contains('_') {
        return false;
    }
    if config.gateway.drop_underscore_headers {
        return true;
    }
    let dashed = name.replace('_', "-");
    FORWARDING.contains(&dashed.as_str()) || config.auth.identity_headers.iter().any(|h| h.as_str() == dashed)
}

/// The forwarding headers the gateway sets, by name.
const FORWARDING: [&str; 6] =
    ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id", "x-real-ip"];
const X_REAL_IP: &str = "x-real-ip";

fn remove_where(headers: &mut HeaderMap, pred: impl Fn(&HeaderName) -> bool) {
    if !headers.keys().any(&pred) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| pred(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

fn trusted(ip: IpAddr, proxies: &[IpNet]) -> bool {
    let ip = canonical(ip);
    proxies.iter().any(|net| net.contains(&ip))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are the IPv4 address.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer, unless the peer is a trusted proxy; then
/// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted(peer, proxies) {
        return peer;
    }
    let mut last = peer;
    let entries: Vec<&str> =
        headers.get_all(&X_FORWARDED_FOR).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for entry in entries.into_iter().rev() {
        let Some(ip) = parse_forwarded_ip(entry.trim()) else {
            break;
        };
        if !trusted(ip, proxies) {
            return ip;
        }
        last = ip;
    }
    last
}

/// Accepts `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` and `[2001:db8::1]:5678`.
fn parse_forwarded_ip(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok()).map(canonical);
    }
    text.rsplit_once(':').and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok()).map(IpAddr::V4)
}

/// The transform phase (request): the client's request becomes the
/// origin's, for any of the service's targets.
pub(crate) async fn request_phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    req: &mut Request<Body<P>>,
    ctx: &mut Ctx,
) -> Result<Flow<Body<P>>, Infallible> {
    if let Some(route) = gateway.route(ctx) {
        let client = std::mem::replace(req, Request::new(Body::<P>::from(Bytes::new())));
        *req = request(client, ctx, route, &gateway.config);
    }
    Ok(Flow::Continue)
}

/// The transform phase (response): the origin's answer shaped for the client.
pub(crate) async fn response_phase<P: Ports>(
    gateway: &Gateway,
    _ports: &P,
    outcome: &mut Outcome<Body<P>>,
    ctx: &mut Ctx,
) {
    if let (Ok(resp), Some(route)) = (outcome, gateway.route(ctx)) {
        response(resp, route);
    }
}

/// Builds the origin's request from the client's, for any of the service's
/// targets: the URI is the upstream path and query; [`aim`] completes it
/// for one target.
fn request<B>(mut req: Request<B>, ctx: &Ctx, route: &Route, config: &Config) -> Request<B> {
    let proxies = &config.gateway.trusted_proxies;
    // The client's path and query as they came, when the route keeps the
    // path and normalising changed nothing (the common case: no copy, no parse).
    let kept = match (&route.rewrite, req.uri().path_and_query()) {
        (PathRewrite::Keep, Some(pq)) if pq.path() == ctx.path => Some(pq.clone()),
        _ => None,
    };
    let uri = match kept {
        Some(pq) => Uri::builder().path_and_query(pq).build(),
        None => {
            // Sized exactly, query included: the string becomes the URI's
            // bytes as it is (spare room would cost another allocation).
            let query = req.uri().query();
            let extra = query.map_or(0, |q| q.len() + 1);
            let exactly = |path: &str| {
                let mut s = String::with_capacity(path.len() + extra);
                s.push_str(path);
                s
            };
            let mut path_and_query = match &route.rewrite {
                PathRewrite::Keep => exactly(&ctx.path),
                PathRewrite::StripPrefix(prefix) => {
                    let rest = ctx.path.strip_prefix(prefix.as_str()).unwrap_or(&ctx.path);
                    exactly(if rest.is_empty() { "/" } else { rest })
                }
                PathRewrite::Template(t) => {
                    t.render(extra, |name| ctx.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()))
                }
            };
            if let Some(q) = query {
                path_and_query.push('?');
                path_and_query.push_str(q);
            }
            Uri::builder().path_and_query(path_and_query).build()
        }
    };
    // The path is normalised and the query was already part of a URI, so
    // this cannot fail; keep the original URI rather than panic if it did.
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = http::Version::HTTP_11;

    let peer_trusted = trusted(ctx.peer, proxies);
    let headers = req.headers_mut();
    let inbound_host = ctx.host_header.clone();
    remove_where(headers, |n| is_hop_by_hop(n) || is_platform_header(n) || disguised(n, config));
    set_forwarding(headers, ctx, peer_trusted, inbound_host.as_ref());
    if ctx.grpc {
        // gRPC's one end-to-end use of `TE`: the origin may answer with trailers.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if ctx.tunnel.is_some() {
        super::upgrade::restore(headers);
    }
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    headers.insert(TRACEPARENT, ctx.trace.header_value());
    if !ctx.trace.continued {
        headers.remove(TRACESTATE);
    }
    route.request_headers.apply(headers);
    req
}

/// Points a request from [`request`] at one target: its address, base
/// path and `Host`.
pub(crate) fn aim<B>(req: &mut Request<B>, target: &Target) {
    let builder = Uri::builder().scheme(target.scheme.clone()).authority(target.authority.clone());
    // Moved out, not cloned: a path's first clone would allocate to share it.
    let uri = match std::mem::take(req.uri_mut()).into_parts().path_and_query {
        // No base path: the request's own, as it is (no copy, no parse).
        Some(pq) if target.base_path.is_empty() => builder.path_and_query(pq).build(),
        tail => {
            let tail = tail.as_ref().map_or("/", |pq| pq.as_str());
            let mut path_and_query = String::with_capacity(target.base_path.len() + tail.len());
            path_and_query.push_str(&target.base_path);
            path_and_query.push_str(tail);
            builder.path_and_query(path_and_query).build()
        }
    };
    // Each part is already valid, so the build cannot fail.
    if let Ok(uri) = uri {
        *req.uri_mut() = uri;
    }
    req.headers_mut().insert(header::HOST, target.host.clone());
}

fn set_forwarding(headers: &mut HeaderMap, ctx: &Ctx, peer_trusted: bool, host: Option<&HeaderValue>) {
    let peer = IpText::new(ctx.peer);
    let peer = peer.as_bytes();

    let mut xff = prior_list(headers, &X_FORWARDED_FOR, peer_trusted, peer.len());
    xff.extend_from_slice(peer);
    set(headers, X_FORWARDED_FOR, xff);

    if !(peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(ctx.scheme.as_str()));
    }
    if !(peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }

    // RFC 7239: each proxy appends one element; IPv6 and host:port are quoted.
    let quoted = ctx.peer.is_ipv6();
    let host = host.filter(|h| h.to_str().is_ok()).map(|h| h.as_bytes());
    let host_len = host.map_or(0, |h| ";host=\"\"".len() + h.iter().filter(|&&c| c != b'"' && c != b'\\').count());
    let element =
        "for=".len() + peer.len() + if quoted { 4 } else { 0 } + host_len + ";proto=".len() + ctx.scheme.as_str().len();
    let mut forwarded = prior_list(headers, &header::FORWARDED, peer_trusted, element);
    forwarded.extend_from_slice(if quoted { b"for=\"[" } else { b"for=" });
    forwarded.extend_from_slice(peer);
    if quoted {
        forwarded.extend_from_slice(b"]\"");
    }
    if let Some(h) = host {
        forwarded.extend_from_slice(b";host=\"");
        forwarded.extend(h.iter().filter(|&&c| c != b'"' && c != b'\\'));
        forwarded.push(b'"');
    }
    forwarded.extend_from_slice(b";proto=");
    forwarded.extend_from_slice(ctx.scheme.as_str().as_bytes());
    set(headers, header::FORWARDED, forwarded);
}

/// What trusted proxies before us said in a list header, each valid value
/// followed by `, `, in a buffer of its exact size with `room` for our own
/// element: it becomes the header's bytes as it is (no copy, no second
/// allocation). An untrusted peer's list is dropped.
fn prior_list(headers: &HeaderMap, name: &HeaderName, trusted: bool, room: usize) -> Vec<u8> {
    if !trusted {
        return Vec::with_capacity(room);
    }
    let valid = || headers.get_all(name).into_iter().filter(|v| v.to_str().is_ok());
    let mut out = Vec::with_capacity(valid().map(|v| v.len() + 2).sum::<usize>() + room);
    for v in valid() {
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b", ");
    }
    out
}

/// Sets a header built from parts the gateway checked or wrote; one that is
/// still not a valid value (never expected) removes the header instead.
fn set(headers: &mut HeaderMap, name: HeaderName, value: Vec<u8>) {
    match HeaderValue::from_maybe_shared(Bytes::from(value)) {
        Ok(v) => {
            headers.insert(name, v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// Shapes the origin's response for the client. A `Content-Length` next to
/// `Transfer-Encoding` is dropped (RFC 9112 §6.3: the body was decoded by its
/// chunks, so that length is not the body's), and the body goes on framed by
/// the client's hop.
fn response<B>(resp: &mut Response<B>, route: &Route) {
    if resp.headers().contains_key(header::TRANSFER_ENCODING) {
        resp.headers_mut().remove(header::CONTENT_LENGTH);
    }
    strip_hop_by_hop(resp.headers_mut());
    route.response_headers.apply(resp.headers_mut());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn client_ip_ignores_headers_from_untrusted_peers() {
        let peer: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(client_ip(peer, &xff("1.1.1.1"), &nets(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn client_ip_walks_past_trusted_proxies() {
        let proxies = nets(&["10.0.0.0/8"]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let h = xff("6.6.6.6, 1.2.3.4, 10.1.1.1");
        assert_eq!(client_ip(peer, &h, &proxies), "1.2.3.4".parse::<IpAddr>().unwrap());
        // Garbage stops the walk at the last address a trusted hop vouched for.
        let h = xff("1.2.3.4, garbage, 10.1.1.1");
        assert_eq!(client_ip(peer, &h, &proxies), "10.1.1.1".parse::<IpAddr>().unwrap());
        // Ports and brackets are tolerated; mapped IPv4 is plain IPv4.
        let h = xff("[2001:db8::7]:443, 5.6.7.8:999");
        assert_eq!(client_ip(peer, &h, &proxies), "5.6.7.8".parse::<IpAddr>().unwrap());
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert_eq!(client_ip(mapped, &xff("2001:db8::7"), &proxies), "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, &HeaderMap::new(), &proxies), peer);
    }

    #[test]
    fn hop_by_hop_headers_are_removed_but_connection_cannot_name_more() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic x"),
            ("x-keep", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
        assert_eq!(h["x-secret"], "1");
    }
}
