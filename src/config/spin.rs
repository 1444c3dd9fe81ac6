//! Cross-checks a config against a Spin manifest: the edge component can only
//! reach origins listed in its `allowed_outbound_hosts`, and Spin refuses the
//! rest at run time. `portcullis check` reports them before deployment.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::auth::{KeySource, ProviderKind};
use super::{Config, Variables, vars};

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    variables: BTreeMap<String, AppVariable>,
    #[serde(default)]
    component: BTreeMap<String, Component>,
}

#[derive(Deserialize)]
struct AppVariable {
    default: Option<String>,
}

#[derive(Deserialize)]
struct Component {
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
}

/// The component the gateway runs as in `spin.toml`.
pub(crate) const COMPONENT: &str = "portcullis";

fn parse(manifest: &str) -> Result<Manifest, String> {
    toml::from_str(manifest).map_err(|e| format!("not a Spin manifest: {}", e.message()))
}

impl Manifest {
    fn gateway(&self) -> Result<&Component, String> {
        match self.component.get(COMPONENT) {
            Some(c) => Ok(c),
            None if self.component.len() == 1 => self.component.values().next().ok_or_else(|| "no component".into()),
            None => Err(format!("no component `{COMPONENT}` in the manifest")),
        }
    }
}

/// Placeholders the config uses that the component's `[component.portcullis.variables]` lacks.
pub fn undeclared_variables(config_text: &str, manifest: &str) -> Result<Vec<String>, String> {
    let manifest = parse(manifest)?;
    let component = manifest.gateway()?;
    Ok(vars::referenced(config_text)
        .into_iter()
        .filter(|name| !component.variables.contains_key(name))
        .map(|name| {
            format!("the config uses {{{{ {name} }}}} but component `{COMPONENT}` declares no variable `{name}`")
        })
        .collect())
}

/// The component's variables as they resolve with the application's defaults
/// (variables without a default are left out).
pub fn default_variables(manifest: &str) -> Result<Variables, String> {
    let manifest = parse(manifest)?;
    let component = manifest.gateway()?;
    let mut defaults = Variables::new();
    for (name, var) in &manifest.variables {
        if let Some(d) = &var.default {
            defaults.insert(name.clone(), d.clone());
        }
    }
    let mut out = Variables::new();
    for (name, template) in &component.variables {
        if let Ok(value) = vars::substitute(template, &defaults) {
            out.insert(name.clone(), value);
        }
    }
    Ok(out)
}

/// What a config asks of the edge that the edge cannot do: errors (an
/// `mtls` provider: Spin terminates TLS, so the component never sees a
/// client certificate) and warnings (settings the edge ignores).
pub fn edge_problems(config: &Config) -> (Vec<String>, Vec<String>) {
    let errors = config
        .auth
        .providers
        .iter()
        .filter(|p| matches!(p.kind, ProviderKind::Mtls(_)))
        .map(|p| {
            format!(
                "auth.mtls.{}: the edge never sees a client certificate (Spin terminates TLS), so an mtls provider authenticates nobody there",
                p.name
            )
        })
        .collect();
    let mut warnings = Vec::new();
    if !config.listeners.is_empty() {
        warnings.push(
            "listeners: the edge has no listeners of its own (Spin owns its sockets and terminates TLS); they apply to the node only"
                .to_string(),
        );
    }
    for service in &config.services {
        if service.tls.is_some() {
            warnings.push(format!(
                "services.{}.tls: the node's alone; at the edge Spin makes the TLS connections: give its runtime config a [[client_tls]] entry for these origins",
                service.name
            ));
        }
        if service.http2 {
            warnings.push(format!(
                "services.{}.http2: the edge speaks to origins as Spin does (HTTP/2 only where Spin negotiates it over https), and answers gRPC calls UNIMPLEMENTED: it does not carry trailers",
                service.name
            ));
        }
    }
    for route in config.routes.iter().filter(|r| r.websocket.is_some()) {
        warnings.push(format!(
            "route `{}`: websocket: the edge cannot hold an upgraded connection (a Spin component answers one request and returns); it answers upgrades 501 `upgrade-unsupported`",
            route.name
        ));
    }
    for route in config.routes.iter().filter(|r| r.grpc_web) {
        warnings.push(format!(
            "route `{}`: grpc_web: the edge cannot bridge gRPC-Web to gRPC (Spin's outbound HTTP carries no trailers); it answers such calls UNIMPLEMENTED, its CORS preflights as the node does",
            route.name
        ));
    }
    for route in config.routes.iter().filter(|r| r.cache.as_ref().is_some_and(|c| !c.shared)) {
        warnings.push(format!(
            "route `{}`: cache.shared = false keeps answers in an instance's memory only: a WASI 0.2 instance serves one request, so it keeps nothing; WASI 0.3 instances each keep their own",
            route.name
        ));
    }
    for limit in config.rate_limits.iter().filter(|l| l.smoothing().is_some()) {
        warnings.push(format!(
            "limits.{}.max_waiting: bounds the requests waiting in one instance; a WASI 0.2 instance serves one request, so there only Spin's concurrency bounds them (WASI 0.3 instances share it)",
            limit.name
        ));
    }
    (errors, warnings)
}

/// Lists each origin of `config` that `manifest` does not let the component reach.
pub fn missing_outbound_hosts(config: &Config, manifest: &str) -> Result<Vec<String>, String> {
    let manifest = parse(manifest)?;
    let component = manifest.gateway()?;
    let mut defaults = Variables::new();
    for (name, var) in &manifest.variables {
        if let Some(d) = &var.default {
            defaults.insert(name.clone(), d.clone());
        }
    }
    let patterns: Vec<Pattern> = component
        .allowed_outbound_hosts
        .iter()
        .filter_map(|p| vars::substitute(p, &defaults).ok())
        .filter_map(|p| Pattern::parse(&p))
        .collect();
    let mut wanted: Vec<(http::Uri, String)> = Vec::new();
    for service in &config.services {
        for target in &service.targets {
            if let Ok(uri) = target.origin.parse() {
                wanted.push((uri, format!("origin {} of services.{}", target.origin, service.name)));
            }
        }
    }
    for provider in &config.auth.providers {
        match &provider.kind {
            ProviderKind::Jwt(jwt) if let KeySource::Jwks(uri) = &jwt.keys => {
                wanted.push((uri.clone(), format!("jwks_uri {uri} of auth.jwt.{}", provider.name)));
            }
            ProviderKind::Introspection(opaque) => {
                let uri = &opaque.endpoint;
                wanted.push((uri.clone(), format!("endpoint {uri} of auth.introspection.{}", provider.name)));
            }
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for (uri, what) in wanted {
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = uri.host().unwrap_or_default().to_ascii_lowercase();
        if !patterns.iter().any(|p| p.allows(if https { "https" } else { "http" }, &host, port)) {
            missing.push(format!("{what} is not in allowed_outbound_hosts of component `{COMPONENT}`"));
        }
    }
    Ok(missing)
}

/// One `allowed_outbound_hosts` entry: `scheme://host[:port]`, where scheme,
/// host and port may be `*`, host may be `*.domain` and port a range `a..b`.
struct Pattern {
    scheme: String,
    host: String,
    ports: Ports,
}

enum Ports {
    Any,
    Range(u16, u16),
    Default,
}

impl Pattern {
    /// `None` for malformed entries.
    fn parse(text: &str) -> Option<Self> {
        let (scheme, rest) = text.split_once("://")?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        let ports = match port {
            None => Ports::Default,
            Some("*") => Ports::Any,
            Some(p) => match p.split_once("..") {
                Some((a, b)) => Ports::Range(a.parse().ok()?, b.parse::<u16>().ok()?.checked_sub(1)?),
                None => {
                    let n = p.parse().ok()?;
                    Ports::Range(n, n)
                }
            },
        };
        Some(Self { scheme: scheme.to_ascii_lowercase(), host: host.to_ascii_lowercase(), ports })
    }

    fn allows(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme == "*" || self.scheme == scheme;
        let host_ok = self.host == "*"
            || self.host == host
            || self.host.strip_prefix('*').is_some_and(|suffix| suffix.starts_with('.') && host.ends_with(suffix));
        let port_ok = match self.ports {
            Ports::Any => true,
            Ports::Range(a, b) => (a..=b).contains(&port),
            Ports::Default => port == if scheme == "https" { 443 } else { 80 },
        };
        scheme_ok && host_ok && port_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(urls: &[&str]) -> Config {
        let mut text = String::new();
        for (i, u) in urls.iter().enumerate() {
            text.push_str(&format!("[services.s{i}]\nurl = \"{u}\"\n"));
        }
        Config::parse(&text, "t.toml", &Default::default()).unwrap()
    }

    fn manifest(hosts: &[&str]) -> String {
        let list = hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "spin_manifest_version = 2\n[component.portcullis]\nsource = \"x.wasm\"\nallowed_outbound_hosts = [{list}]\n"
        )
    }

    #[test]
    fn origin_settings_the_edge_leaves_to_spin_are_warned_of() {
        let text = "[services.a]\nurl = \"https://a.internal\"\nhttp2 = true\n[services.a.tls]\nca = \"ca.pem\"\n\
                    [services.b]\nurl = \"http://b.internal\"\n[[routes]]\nname = \"chat\"\npath = \"/ws\"\nservice = \"b\"\nwebsocket = true\n\
                    [[routes]]\nname = \"web\"\npath = \"/pkg.Svc/{m}\"\nservice = \"a\"\ngrpc_web = true\n\
                    [[routes]]\nname = \"local\"\npath = \"/l\"\nservice = \"b\"\ncache = { shared = false }\n\
                    [[routes]]\nname = \"fleet\"\npath = \"/f\"\nservice = \"b\"\ncache = {}\n\
                    [limits.smooth]\nrate = \"1/s\"\nmax_delay = \"1s\"\n";
        let (errors, warnings) = edge_problems(&Config::parse(text, "t.toml", &Default::default()).unwrap());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(warnings.len(), 6, "{warnings:?}");
        assert!(warnings[5].starts_with("limits.smooth.max_waiting:") && warnings[5].contains("WASI 0.2"));
        assert!(
            warnings[4].starts_with("route `local`: cache.shared = false") && warnings[4].contains("keeps nothing")
        );
        assert!(warnings[3].starts_with("route `web`: grpc_web:") && warnings[3].contains("UNIMPLEMENTED"));
        assert!(warnings[2].starts_with("route `chat`: websocket:") && warnings[2].contains("501"));
        assert!(warnings[0].starts_with("services.a.tls:") && warnings[0].contains("client_tls"));
        assert!(warnings[1].starts_with("services.a.http2:") && warnings[1].contains("UNIMPLEMENTED"));
    }

    #[test]
    fn every_origin_must_be_allowed() {
        let c = config(&["http://127.0.0.1:9000", "https://api.example.com", "http://svc.internal:8080/base"]);
        let all = manifest(&["http://127.0.0.1:9000", "https://*.example.com", "http://svc.internal:*"]);
        assert_eq!(missing_outbound_hosts(&c, &all).unwrap(), Vec::<String>::new());

        let some = manifest(&["http://127.0.0.1:9001", "https://api.example.com:443"]);
        let missing = missing_outbound_hosts(&c, &some).unwrap();
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].contains("http://127.0.0.1:9000") && missing[0].contains("services.s0"));
        assert!(missing[1].contains("svc.internal:8080"));
    }

    #[test]
    fn wildcards_ranges_and_default_ports() {
        let c = config(&["http://127.0.0.1:3002", "https://example.com"]);
        assert!(missing_outbound_hosts(&c, &manifest(&["*://*:*"])).unwrap().is_empty());
        assert!(
            missing_outbound_hosts(&c, &manifest(&["http://127.0.0.1:3000..3005", "https://example.com"]))
                .unwrap()
                .is_empty()
        );
        // `*.example.com` does not cover `example.com` itself; `http://` does not cover https.
        let missing = missing_outbound_hosts(
            &c,
            &manifest(&["http://127.0.0.1:3002", "https://*.example.com", "http://example.com"]),
        )
        .unwrap();
        assert_eq!(missing.len(), 1);
        // Variables without a default cannot be resolved: they allow nothing.
        assert_eq!(missing_outbound_hosts(&c, &manifest(&["{{ origin }}"])).unwrap().len(), 2);
    }

    #[test]
    fn variables_resolve_with_the_manifests_defaults() {
        let m = r#"
[variables]
origin_port = { default = "9080" }
secret = { required = true }
[component.portcullis]
source = "x.wasm"
allowed_outbound_hosts = ["http://127.0.0.1:{{ origin_port }}"]
[component.portcullis.variables]
origin_port = "{{ origin_port }}"
jwt_secret = "{{ secret }}"
"#;
        let vars = default_variables(m).unwrap();
        assert_eq!(vars.get("origin_port"), Some("9080"));
        assert_eq!(vars.get("jwt_secret"), None);
        let c = config(&["http://127.0.0.1:9080"]);
        assert!(missing_outbound_hosts(&c, m).unwrap().is_empty());
        let text = "url = \"http://127.0.0.1:{{ origin_port }}\"\nx = \"{{ other }}\"";
        let missing = undeclared_variables(text, m).unwrap();
        assert_eq!(missing.len(), 1);
        assert!(missing[0].contains("no variable `other`"), "{missing:?}");
    }

    #[test]
    fn jwks_urls_need_allowing_too() {
        let text = "[services.s]\nurl = \"http://127.0.0.1:9000\"\n[auth.jwt.corp]\nissuer = \"i\"\naudiences = [\"a\"]\nalgorithms = [\"RS256\"]\njwks_uri = \"https://idp.example.com/.well-known/jwks.json\"\n";
        let c = Config::parse(text, "t.toml", &Default::default()).unwrap();
        let missing = missing_outbound_hosts(&c, &manifest(&["http://127.0.0.1:9000"])).unwrap();
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].contains("jwks_uri https://idp.example.com/.well-known/jwks.json of auth.jwt.corp"),
            "{missing:?}"
        );
        assert!(
            missing_outbound_hosts(&c, &manifest(&["http://127.0.0.1:9000", "https://idp.example.com"]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_manifests_are_reported() {
        let c = config(&["http://127.0.0.1:1"]);
        assert!(missing_outbound_hosts(&c, "not toml [").is_err());
        let two = "[component.a]\nsource='a'\n[component.b]\nsource='b'\n";
        assert!(missing_outbound_hosts(&c, two).unwrap_err().contains("no component `portcullis`"));
    }
}
