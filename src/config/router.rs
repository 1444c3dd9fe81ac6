//! The router the route phase looks requests up in: host → matchit path
//! tree → method, built once per config.
//!
//! Hosts are tried from most to least specific: the exact host, then
//! wildcard hosts (`*.example.com`, longest suffix first), then routes with no
//! host. The first table whose tree matches the path decides: its route for
//! the method, or 405 with `Allow` listing the methods it has.

use std::collections::BTreeMap;

use http::{HeaderValue, Method, StatusCode, header};
use thiserror::Error;

use crate::shared::problem::{Answer, Problem, Source};

/// Why routing found nothing to serve.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum RouteError {
    #[error("no route matches this request")]
    NotFound,
    #[error("this route does not allow the method")]
    MethodNotAllowed { allow: HeaderValue },
}

impl Answer for RouteError {
    fn problem(&self) -> Problem {
        match self {
            Self::NotFound => Problem::new(StatusCode::NOT_FOUND, "no-route", self.to_string(), Source::Client),
            Self::MethodNotAllowed { allow } => {
                Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", self.to_string(), Source::Client)
                    .header(header::ALLOW, allow.clone())
            }
        }
    }
}

/// The host a route answers for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum HostPattern {
    /// Any host.
    Any,
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// Any subdomain of this suffix; `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

impl HostPattern {
    /// Parses `api.example.com`, `*.example.com` or `*`.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().to_ascii_lowercase();
        if lower == "*" {
            return Ok(Self::Any);
        }
        let (name, wildcard) = match lower.strip_prefix("*.") {
            Some(rest) => (rest.to_string(), true),
            None => (lower, false),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "`{text}` is not a host name: use `api.example.com`, `*.example.com` or `*` (no port, no scheme)"
            ));
        }
        Ok(if wildcard { Self::Wildcard(format!(".{name}")) } else { Self::Exact(name) })
    }
}

impl HostPattern {
    /// Whether `host` (lower case, no port) is one this pattern names.
    pub(crate) fn matches(&self, host: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(name) => name == host,
            Self::Wildcard(suffix) => under(suffix, host),
        }
    }
}

/// `suffix` is a wildcard's stored form (`.example.com`); the host needs at least one more label.
fn under(suffix: &str, host: &str) -> bool {
    host.len() > suffix.len() && host.ends_with(suffix)
}

/// What the router needs to know about one route.
pub(crate) struct RouteSpec<'a> {
    /// The route's index in the file (`routes[i]`), for messages.
    pub(crate) file_index: usize,
    pub(crate) host: &'a HostPattern,
    pub(crate) path: &'a str,
    /// `None`: every method.
    pub(crate) methods: Option<&'a [Method]>,
}

/// A route that could not be added, by index into the specs given to [`Router::build`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BuildError {
    pub(crate) route: usize,
    pub(crate) message: String,
}

/// A route found for a request, with its path parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    pub(crate) route: usize,
    pub(crate) params: Vec<(String, String)>,
}

/// All routes, compiled for lookup.
#[derive(Default)]
pub(crate) struct Router {
    exact: BTreeMap<String, Table>,
    /// Longest suffix first, so `*.eu.example.com` wins over `*.example.com`.
    wildcard: Vec<(String, Table)>,
    any: Option<Table>,
    default_host: Option<String>,
}

#[derive(Default)]
struct Table {
    tree: matchit::Router<usize>,
    entries: Vec<Entry>,
}

/// The routes that share one path in one host table, split by method.
struct Entry {
    path: String,
    routes: Vec<(Option<Vec<Method>>, usize)>,
    allow: HeaderValue,
}

impl Router {
    /// Builds the lookup tables; every conflict is reported, not just the first.
    pub(crate) fn build(specs: &[RouteSpec<'_>], default_host: Option<String>) -> Result<Self, Vec<BuildError>> {
        let mut router = Router { default_host, ..Router::default() };
        let mut errors = Vec::new();
        for (index, spec) in specs.iter().enumerate() {
            let table = match spec.host {
                HostPattern::Any => router.any.get_or_insert_with(Table::default),
                HostPattern::Exact(h) => router.exact.entry(h.clone()).or_default(),
                HostPattern::Wildcard(s) => {
                    let pos = match router.wildcard.iter().position(|(k, _)| k == s) {
                        Some(pos) => pos,
                        None => {
                            router.wildcard.push((s.clone(), Table::default()));
                            router.wildcard.len() - 1
                        }
                    };
                    &mut router.wildcard[pos].1
                }
            };
            let file_index = |i: usize| specs[i].file_index;
            if let Err(message) = table.add(spec, index, &file_index) {
                errors.push(BuildError { route: index, message });
            }
        }
        router.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        if errors.is_empty() { Ok(router) } else { Err(errors) }
    }

    /// Finds the route for a lower-case host (no port), a normalised path and a method.
    pub(crate) fn find(&self, host: &str, path: &str, method: &Method) -> Result<RouteMatch, RouteError> {
        let known = self.exact.contains_key(host) || self.wildcard.iter().any(|(s, _)| under(s, host));
        let host = match &self.default_host {
            Some(default) if !known => default.as_str(),
            _ => host,
        };
        let exact = self.exact.get(host);
        let wildcards = self.wildcard.iter().filter(|(suffix, _)| under(suffix, host)).map(|(_, t)| t);
        for table in exact.into_iter().chain(wildcards).chain(self.any.as_ref()) {
            if let Some(found) = table.find(path, method) {
                return found;
            }
        }
        Err(RouteError::NotFound)
    }
}

impl Table {
    /// `file_index` names other routes in messages as the file does.
    fn add(&mut self, spec: &RouteSpec<'_>, index: usize, file_index: &dyn Fn(usize) -> usize) -> Result<(), String> {
        let methods = spec.methods.map(<[Method]>::to_vec);
        if let Some(entry) = self.entries.iter_mut().find(|e| e.path == spec.path) {
            for (other_methods, other) in &entry.routes {
                if overlap(other_methods.as_deref(), methods.as_deref()) {
                    return Err(format!(
                        "conflicts with routes[{}]: same host, same path `{}` and overlapping methods",
                        file_index(*other),
                        spec.path
                    ));
                }
            }
            entry.routes.push((methods, index));
            entry.allow = allow_header(&entry.routes);
            return Ok(());
        }
        let slot = self.entries.len();
        self.tree.insert(spec.path, slot).map_err(|e| match e {
            matchit::InsertError::Conflict { with } => {
                let other =
                    self.entries.iter().find(|e| e.path == with).and_then(|e| e.routes.first()).map(|r| file_index(r.1));
                match other {
                    Some(other) => format!(
                        "path `{}` conflicts with `{with}` of routes[{other}] (to split one path by method, write it the same way, with the same parameter names)",
                        spec.path
                    ),
                    None => format!("path `{}` conflicts with `{with}`", spec.path),
                }
            }
            other => format!("path `{}`: {other}", spec.path),
        })?;
        let routes = vec![(methods, index)];
        let allow = allow_header(&routes);
        self.entries.push(Entry { path: spec.path.to_string(), routes, allow });
        Ok(())
    }

    fn find(&self, path: &str, method: &Method) -> Option<Result<RouteMatch, RouteError>> {
        let matched = self.tree.at(path).ok()?;
        let entry = &self.entries[*matched.value];
        let route = entry.routes.iter().find(|(methods, _)| allows(methods.as_deref(), method));
        Some(match route {
            Some((_, index)) => Ok(RouteMatch {
                route: *index,
                params: matched.params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            }),
            None => Err(RouteError::MethodNotAllowed { allow: entry.allow.clone() }),
        })
    }
}

/// A route that allows GET also answers HEAD.
fn allows(methods: Option<&[Method]>, method: &Method) -> bool {
    match methods {
        None => true,
        Some(list) => list.contains(method) || (method == Method::HEAD && list.contains(&Method::GET)),
    }
}

fn overlap(a: Option<&[Method]>, b: Option<&[Method]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| allows(Some(b), m)) || b.iter().any(|m| allows(Some(a), m)),
        _ => true,
    }
}

fn allow_header(routes: &[(Option<Vec<Method>>, usize)]) -> HeaderValue {
    let mut names: Vec<&str> = Vec::new();
    for m in routes.iter().filter_map(|(m, _)| m.as_deref()).flatten() {
        for name in [m.as_str()].into_iter().chain((m == Method::GET).then_some("HEAD")) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    // Method names are tokens, so the joined list is always a valid header value.
    HeaderValue::from_str(&names.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        file_index: usize,
        host: &'a HostPattern,
        path: &'a str,
        methods: Option<&'a [Method]>,
    ) -> RouteSpec<'a> {
        RouteSpec { file_index, host, path, methods }
    }

    #[test]
    fn host_patterns_parse() {
        assert_eq!(HostPattern::parse("API.Example.com").unwrap(), HostPattern::Exact("api.example.com".into()));
        assert_eq!(HostPattern::parse("*.example.com").unwrap(), HostPattern::Wildcard(".example.com".into()));
        assert_eq!(HostPattern::parse("*").unwrap(), HostPattern::Any);
        for bad in ["", "http://x.com", "x.com:80", "a..b", "-a.com", "*.", "a.*.com", "x y"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_beats_wildcard_beats_any() {
        let exact = HostPattern::Exact("api.example.com".into());
        let wild = HostPattern::Wildcard(".example.com".into());
        let deeper = HostPattern::Wildcard(".eu.example.com".into());
        let any = HostPattern::Any;
        let get = [Method::GET];
        let r = Router::build(
            &[
                spec(0, &any, "/x", None),
                spec(1, &wild, "/x", None),
                spec(2, &exact, "/x", Some(&get)),
                spec(3, &deeper, "/x", None),
            ],
            None,
        )
        .unwrap();
        assert_eq!(r.find("api.example.com", "/x", &Method::GET).unwrap().route, 2);
        assert_eq!(r.find("www.example.com", "/x", &Method::GET).unwrap().route, 1);
        assert_eq!(r.find("a.eu.example.com", "/x", &Method::GET).unwrap().route, 3);
        assert_eq!(r.find("example.com", "/x", &Method::GET).unwrap().route, 0);
        assert_eq!(r.find("other.org", "/x", &Method::GET).unwrap().route, 0);
        // The exact table matches the path, so its method list decides.
        let err = r.find("api.example.com", "/x", &Method::POST).unwrap_err();
        assert_eq!(err, RouteError::MethodNotAllowed { allow: HeaderValue::from_static("GET, HEAD") });
    }

    #[test]
    fn params_methods_and_not_found() {
        let any = HostPattern::Any;
        let get = [Method::GET];
        let post = [Method::POST];
        let r = Router::build(
            &[
                spec(0, &any, "/users/{id}", Some(&get)),
                spec(1, &any, "/users/{id}", Some(&post)),
                spec(2, &any, "/files/{*rest}", None),
            ],
            None,
        )
        .unwrap();
        let m = r.find("h", "/users/42", &Method::POST).unwrap();
        assert_eq!((m.route, m.params), (1, vec![("id".to_string(), "42".to_string())]));
        assert_eq!(r.find("h", "/users/42", &Method::HEAD).unwrap().route, 0);
        assert_eq!(
            r.find("h", "/users/42", &Method::DELETE).unwrap_err(),
            RouteError::MethodNotAllowed { allow: HeaderValue::from_static("GET, HEAD, POST") }
        );
        assert_eq!(r.find("h", "/files/a/b", &Method::PUT).unwrap().params, [("rest".to_string(), "a/b".to_string())]);
        assert_eq!(r.find("h", "/nope", &Method::GET).unwrap_err(), RouteError::NotFound);
    }

    #[test]
    fn default_host_stands_in_for_unknown_hosts() {
        let main = HostPattern::Exact("api.example.com".into());
        let other = HostPattern::Exact("admin.example.com".into());
        let r =
            Router::build(&[spec(0, &main, "/a", None), spec(1, &other, "/b", None)], Some("api.example.com".into()))
                .unwrap();
        assert_eq!(r.find("unknown.test", "/a", &Method::GET).unwrap().route, 0);
        assert_eq!(r.find("", "/a", &Method::GET).unwrap().route, 0);
        // A known host is never redirected to the default.
        assert_eq!(r.find("admin.example.com", "/a", &Method::GET).unwrap_err(), RouteError::NotFound);
    }

    #[test]
    fn conflicts_are_all_reported() {
        let any = HostPattern::Any;
        let get = [Method::GET];
        let both = [Method::GET, Method::POST];
        let errors = Router::build(
            &[
                spec(0, &any, "/a", Some(&get)),
                spec(1, &any, "/a", Some(&both)),
                spec(2, &any, "/u/{id}", None),
                spec(3, &any, "/u/{name}", None),
                spec(4, &any, "/ok", None),
                spec(5, &any, "/f/{*rest}/x", None),
            ],
            None,
        )
        .err()
        .expect("conflicts are errors");
        let routes: Vec<usize> = errors.iter().map(|e| e.route).collect();
        assert_eq!(routes, vec![1, 3, 5]);
        assert!(errors[0].message.contains("routes[0]"), "{}", errors[0].message);
        assert!(errors[1].message.contains("routes[2]"), "{}", errors[1].message);
    }
}
