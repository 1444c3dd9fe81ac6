//! `[cors.NAME]` policies, named by services and routes (`cors = "NAME"`,
//! a route's over its service's), and a gRPC-Web route's
//! `grpc_web_origins` (a policy of its own): which pages may call, with
//! which methods and headers, and what they may read of the answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::raw::{RawCors, RawRoute};
use super::{Compiler, parse_method};

/// A compiled policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cors {
    pub(crate) name: Arc<str>,
    origins: Vec<OriginRule>,
    /// `"*"`: every origin (never with credentials).
    any_origin: bool,
    /// Methods a preflight may ask for; `None`: whatever the route takes.
    methods: Option<Vec<Method>>,
    allow_methods: Option<HeaderValue>,
    /// Request headers a preflight may ask for (lower case); `None`: any.
    headers: Option<Vec<HeaderName>>,
    allow_headers: Option<HeaderValue>,
    /// What pages may read: the policy's list and the gateway's own headers.
    pub(crate) expose: HeaderValue,
    /// Cookies and client certificates go with the calls.
    pub(crate) credentials: bool,
    pub(crate) max_age: HeaderValue,
    /// Calls (not only preflights) from other origins are 403.
    pub(crate) refuse_other_origins: bool,
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginRule {
    /// `https://app.example.com` (lower case, as browsers send it).
    Exact(String),
    /// `https://*.example.com`: any subdomain, at any depth, not the domain itself.
    Subdomains { scheme: String, suffix: String, port: Option<u16> },
}

/// What pages may always read: the gateway's own headers.
const GATEWAY_EXPOSED: &str = "x-request-id, retry-after, ratelimit, ratelimit-policy";
/// What pages calling a gRPC-Web route may read as well.
const GRPC_EXPOSED: &str = "grpc-status, grpc-message, grpc-status-details-bin";
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

impl Cors {
    /// Whether a page at `origin` may call.
    pub(crate) fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(origin) = origin.to_str() else { return false };
        self.any_origin || self.origins.iter().any(|rule| rule.matches(origin))
    }

    /// `Access-Control-Allow-Origin` for an allowed page.
    pub(crate) fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin { HeaderValue::from_static("*") } else { origin.clone() }
    }

    /// Whether answers differ by `Origin` (caches must keep them apart).
    pub(crate) fn varies(&self) -> bool {
        !self.any_origin
    }

    /// Whether a preflight may ask for `method`.
    pub(crate) fn allows_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|list| list.contains(method))
    }

    /// `Access-Control-Allow-Methods`: the policy's list, or the one asked.
    pub(crate) fn allow_methods(&self, asked: &Method) -> HeaderValue {
        self.allow_methods
            .clone()
            .unwrap_or_else(|| HeaderValue::from_str(asked.as_str()).unwrap_or(HeaderValue::from_static("GET")))
    }

    /// The first header a preflight asks for that the policy does not allow.
    pub(crate) fn refused_header<'a>(&self, asked: &'a str) -> Option<&'a str> {
        let allowed = self.headers.as_ref()?;
        asked
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .find(|name| !allowed.iter().any(|a| a.as_str().eq_ignore_ascii_case(name)))
    }

    /// `Access-Control-Allow-Headers`: the policy's list, or those asked.
    pub(crate) fn allow_headers(&self, asked: Option<&HeaderValue>) -> Option<HeaderValue> {
        self.allow_headers.clone().or_else(|| asked.cloned())
    }

    /// Whether a preflight's answer repeats what it asked (methods or headers).
    pub(crate) fn reflects(&self) -> bool {
        self.methods.is_none() || self.headers.is_none()
    }

    /// The policy for a gRPC-Web route: pages read gRPC's status too.
    pub(crate) fn for_grpc_web(&self) -> Cors {
        let mut policy = self.clone();
        let listed = self.expose.to_str().unwrap_or_default();
        if listed != "*" {
            policy.expose = HeaderValue::from_str(&format!("{GRPC_EXPOSED}, {listed}")).unwrap_or(self.expose.clone());
        }
        policy
    }
}

impl OriginRule {
    fn matches(&self, origin: &str) -> bool {
        match self {
            Self::Exact(exact) => exact.eq_ignore_ascii_case(origin),
            Self::Subdomains { scheme, suffix, port } => {
                let Some((s, rest)) = origin.split_once("://") else { return false };
                let Ok(authority) = rest.parse::<http::uri::Authority>() else { return false };
                let host = authority.host();
                s.eq_ignore_ascii_case(scheme)
                    && authority.as_str().len() == rest.len()
                    && !rest.contains(['@', '/'])
                    && authority.port_u16() == *port
                    && host.len() > suffix.len()
                    && host.get(host.len() - suffix.len()..).is_some_and(|end| end.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// One origin as configured: `scheme://host[:port]`, `scheme://*.domain[:port]`.
fn parse_origin(text: &str) -> Result<OriginRule, String> {
    let bad = || {
        format!(
            "`{text}` is not an origin: a scheme and a host, e.g. \"https://app.example.com\", \"https://*.example.com\" or \"*\""
        )
    };
    if text == "null" {
        return Err("`null` is the origin of sandboxed pages and local files: any of them could call".to_string());
    }
    let lower = text.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.contains(['/', '@', '?', '#']) {
        return Err(bad());
    }
    let (pattern, concrete) = match rest.strip_prefix("*.") {
        Some(domain) => (true, format!("x.{domain}")),
        None => (false, rest.to_string()),
    };
    let authority = concrete.parse::<http::uri::Authority>().map_err(|_| bad())?;
    if authority.host().is_empty() || authority.host().contains('*') || authority.as_str().ends_with(':') {
        return Err(bad());
    }
    Ok(match pattern {
        false => OriginRule::Exact(lower),
        true => OriginRule::Subdomains {
            scheme: scheme.to_string(),
            suffix: authority.host()[1..].to_string(),
            port: authority.port_u16(),
        },
    })
}

/// A list of names joined for a header (tokens: always a valid value).
fn joined<'a>(names: impl Iterator<Item = &'a str>) -> HeaderValue {
    let text: Vec<&str> = names.collect();
    HeaderValue::from_str(&text.join(", ")).unwrap_or(HeaderValue::from_static(""))
}

impl Compiler<'_> {
    /// Every `[cors.NAME]` that compiles.
    pub(super) fn cors_policies(&mut self, raw: &BTreeMap<String, Spanned<RawCors>>) -> Vec<Arc<Cors>> {
        raw.iter().filter_map(|(name, p)| self.cors_policy(name, p.get_ref()).map(Arc::new)).collect()
    }

    fn cors_policy(&mut self, name: &str, raw: &RawCors) -> Option<Cors> {
        let key = |field: &str| format!("cors.{name}.{field}");
        let errors_before = self.errors.len();
        let (origins, any_origin) = self.origins(raw.origins.get_ref(), &key("origins"));
        if raw.origins.get_ref().is_empty() {
            self.error(raw.origins.span(), key("origins"), "name at least one origin (or \"*\" for any)");
        }
        let credentials = raw.credentials.as_ref().is_some_and(|c| *c.get_ref());
        if let Some(c) = raw.credentials.as_ref().filter(|_| credentials && any_origin) {
            let message = "with credentials, \"*\" would let every site read its visitors' answers: list the origins";
            self.error(c.span(), key("credentials"), message);
        }
        let methods = raw.methods.as_ref().map(|list| {
            let parsed = list.iter().enumerate().filter_map(|(i, m)| {
                let k = format!("{}[{i}]", key("methods"));
                self.check(m.span(), &k, parse_method(m.get_ref()))
            });
            parsed.collect::<Vec<_>>()
        });
        let headers = raw.headers.as_ref().and_then(|list| self.cors_headers(list, &key("headers")));
        let mut exposed: Vec<String> = Vec::new();
        for (i, h) in raw.expose_headers.iter().enumerate() {
            let k = format!("{}[{i}]", key("expose_headers"));
            match h.get_ref().as_str() {
                "*" if credentials => self.error(h.span(), k, "\"*\" means nothing with credentials: list the headers"),
                "*" => exposed = vec!["*".to_string()],
                n => match HeaderName::from_bytes(n.as_bytes()) {
                    Ok(name) if exposed.first().is_none_or(|e| e != "*") => exposed.push(name.as_str().to_string()),
                    Ok(_) => {}
                    Err(_) => self.error(h.span(), k, format!("`{n}` is not a header name")),
                },
            }
        }
        let expose = match exposed.first().map(String::as_str) {
            Some("*") => HeaderValue::from_static("*"),
            _ => joined(GATEWAY_EXPOSED.split(", ").chain(exposed.iter().map(String::as_str))),
        };
        let max_age = self.duration(&raw.max_age, &key("max_age"), DEFAULT_MAX_AGE);
        (self.errors.len() == errors_before).then(|| Cors {
            name: name.into(),
            origins,
            any_origin,
            allow_methods: methods.as_ref().map(|m| joined(m.iter().map(Method::as_str))),
            methods,
            allow_headers: headers.as_ref().map(|h| joined(h.iter().map(HeaderName::as_str))),
            headers,
            expose,
            credentials,
            max_age: HeaderValue::from(max_age.as_secs()),
            refuse_other_origins: raw.refuse_other_origins.unwrap_or(false),
        })
    }

    fn origins(&mut self, list: &[Spanned<String>], key: &str) -> (Vec<OriginRule>, bool) {
        let mut rules = Vec::new();
        let mut any = false;
        for (i, origin) in list.iter().enumerate() {
            let k = format!("{key}[{i}]");
            let Some(value) = self.value(origin, &k) else { continue };
            if value == "*" {
                any = true;
            } else if let Some(rule) = self.check(origin.span(), &k, parse_origin(&value)) {
                rules.push(rule);
            }
        }
        (rules, any)
    }

    /// `headers`: names, or `["*"]` for whatever a preflight asks (`None`).
    fn cors_headers(&mut self, list: &[Spanned<String>], key: &str) -> Option<Vec<HeaderName>> {
        if list.iter().any(|h| h.get_ref() == "*") {
            if list.len() > 1 {
                self.error(list[0].span(), key, "\"*\" allows every header: give it alone, or list names");
            }
            return None;
        }
        let names = list.iter().enumerate().filter_map(|(i, h)| {
            let parsed = HeaderName::from_bytes(h.get_ref().as_bytes())
                .map_err(|_| format!("`{}` is not a header name", h.get_ref()));
            self.check(h.span(), &format!("{key}[{i}]"), parsed)
        });
        Some(names.collect())
    }

    /// A service's `cors`, resolved among the policies.
    pub(super) fn service_cors(
        &mut self,
        key: &str,
        name: Option<&Spanned<String>>,
        policies: &[Arc<Cors>],
        broken: &[String],
    ) -> Option<Arc<Cors>> {
        let name = name?;
        let index =
            self.resolve(name, format!("{key}.cors"), "CORS policy", policies.iter().map(|p| &*p.name), broken)?;
        Some(policies[index].clone())
    }

    /// A route's own policy: its `cors`, or its `grpc_web_origins`.
    pub(super) fn route_cors(
        &mut self,
        key: &impl Fn(&str) -> String,
        raw: &RawRoute,
        policies: &[Arc<Cors>],
        broken: &[String],
    ) -> Option<Arc<Cors>> {
        let grpc_web = raw.grpc_web.as_ref().is_some_and(|w| *w.get_ref());
        match (&raw.cors, &raw.grpc_web_origins) {
            (Some(c), Some(_)) => {
                self.error(c.span(), key("cors"), "give either `cors` or `grpc_web_origins`, not both");
                None
            }
            (Some(name), None) => {
                let names = policies.iter().map(|p| &*p.name);
                let index = self.resolve(name, key("cors"), "CORS policy", names, broken)?;
                Some(policies[index].clone())
            }
            (None, Some(list)) if grpc_web => {
                let (origins, any_origin) = self.origins(list.get_ref(), &key("grpc_web_origins"));
                Some(Arc::new(Cors {
                    name: "grpc_web_origins".into(),
                    origins,
                    any_origin,
                    methods: Some(vec![Method::POST]),
                    allow_methods: Some(HeaderValue::from_static("POST")),
                    headers: None,
                    allow_headers: None,
                    expose: HeaderValue::from_static(GATEWAY_EXPOSED),
                    credentials: false,
                    max_age: HeaderValue::from_static("86400"),
                    refuse_other_origins: true,
                }))
            }
            (None, _) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> OriginRule {
        parse_origin(text).unwrap()
    }

    #[test]
    fn exact_origins_match_without_case() {
        let r = rule("https://App.Example.com");
        assert!(r.matches("https://app.example.com"));
        assert!(r.matches("HTTPS://APP.EXAMPLE.COM"));
        assert!(!r.matches("http://app.example.com"));
        assert!(!r.matches("https://app.example.com:8443"));
        assert!(!r.matches("https://app.example.com.evil.test"));
    }

    #[test]
    fn patterns_match_subdomains_at_any_depth_but_not_the_domain() {
        let r = rule("https://*.example.com");
        assert!(r.matches("https://a.example.com"));
        assert!(r.matches("https://a.b.example.com"));
        assert!(!r.matches("https://example.com"));
        assert!(!r.matches("https://evilexample.com"));
        assert!(!r.matches("http://a.example.com"));
        assert!(!r.matches("https://a.example.com:444"));
        assert!(!r.matches("https://user@a.example.com"));
        assert!(!r.matches("https://evil.test/.example.com"));
        let r = rule("http://*.local.test:8080");
        assert!(r.matches("http://x.local.test:8080"));
        assert!(!r.matches("http://x.local.test"));
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for bad in [
            "app.example.com",
            "https://",
            "https://a.test/",
            "https://a.test/x",
            "ftp://a.test",
            "https://*",
            "https://a.*.test",
            "https://u@a.test",
            "https://a.test:",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        assert!(parse_origin("null").unwrap_err().contains("sandboxed"));
    }
}
