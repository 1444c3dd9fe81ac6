//! Active health checks: every target of a service with `health.probe` is
//! sent `GET path` every `interval`. The first round runs before the node
//! listens (a target that fails it starts down); a reload starts new rounds
//! for the new config, and the old ones stop.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, header};

use super::NodePorts;
use crate::config::resilience::Probe;
use crate::config::{Service, Target};
use crate::pipeline::{Gateway, upstream};
use crate::ports::{HttpClient, Ports, UpstreamOptions};

/// One round over every probed target of `gateway`, all at once.
pub(crate) async fn round(gateway: &Arc<Gateway>, ports: &Arc<NodePorts>, first: bool) {
    let mut checks = tokio::task::JoinSet::new();
    for (s, service) in gateway.config.services.iter().enumerate() {
        if service.health.probe.is_none() {
            continue;
        }
        for t in 0..service.targets.len() {
            let (gateway, ports) = (gateway.clone(), ports.clone());
            checks.spawn(async move {
                let service = &gateway.config.services[s];
                let (Some(probe), target) = (&service.health.probe, &service.targets[t]) else { return };
                let passed = check(&ports, service, probe, target).await;
                let label = &target.label;
                match (gateway.upstreams[s].probed(t, passed.is_ok(), first, probe), passed) {
                    (Some(true), _) => ports.event(&format!("upstream target up (active health): {label}")),
                    (Some(false), Err(why)) => {
                        ports.event(&format!("upstream target down (active health): {label}: {why}"))
                    }
                    _ => {}
                }
            });
        }
    }
    while checks.join_next().await.is_some() {}
}

/// Probes `gateway`'s targets every interval while it is the node's config.
pub(crate) fn spawn(gateway: Arc<Gateway>, current: impl Fn() -> Arc<Gateway> + Send + 'static, ports: Arc<NodePorts>) {
    let Some(interval) =
        gateway.config.services.iter().filter_map(|s| s.health.probe.as_ref()).map(|p| p.interval).min()
    else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            if !Arc::ptr_eq(&current(), &gateway) {
                return;
            }
            round(&gateway, &ports, false).await;
        }
    });
}

/// One probe of a target, as its service speaks to it (HTTP/2, its TLS).
async fn check(ports: &NodePorts, service: &Service, probe: &Probe, target: &Target) -> Result<(), String> {
    let uri = format!("{}{}{}", target.origin, target.base_path, probe.path);
    let req = Request::get(uri.as_str())
        .header(header::HOST, target.host.clone())
        .header(header::USER_AGENT, "portcullis-health")
        .body(Bytes::new().into())
        .map_err(|e| format!("bad probe request {uri}: {e}"))?;
    let options = UpstreamOptions { connect_timeout: probe.timeout, ..upstream::options(service, probe.timeout, 0) };
    let resp = ports.http().send(req, &options).await.map_err(|e| e.to_string())?;
    if probe.statuses.contains(&resp.status()) { Ok(()) } else { Err(format!("answered {}", resp.status())) }
}
