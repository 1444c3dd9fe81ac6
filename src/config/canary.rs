//! A route's `canary`: a share of its callers — the same callers every time
//! — goes to another service; a header or a group can force either
//! variant. It is rolled back fleet-wide when it fails more (or is slower)
//! than the stable service, and can be promoted in steps after soak
//! periods that pass the same test (the behaviour is `pipeline::canary`'s).

use std::time::Duration;

use http::HeaderName;
use sha2::{Digest, Sha256};
use toml::Spanned;

use super::auth::RouteAuth;
use super::caller_key::{CallerKey, route_has_provider};
use super::raw::RawCanary;
use super::{Compiler, Known, parse_header_name};

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Canary {
    pub(crate) service: usize,
    /// The canary's share in basis points (0 to 10 000), step by step; one
    /// step without `promote`.
    pub(crate) steps: Vec<u32>,
    /// How long a step must pass the rollback test before the next.
    pub(crate) soak: Duration,
    pub(crate) sticky_on: CallerKey,
    /// A request header whose value `canary` or `stable` forces the variant.
    pub(crate) header: Option<HeaderName>,
    /// Callers in any of these groups get the canary.
    pub(crate) groups: Vec<String>,
    /// A response header naming the variant that served.
    pub(crate) variant_header: Option<HeaderName>,
    pub(crate) rollback: Rollback,
    /// Names these settings in the store record, so that a record written
    /// for other settings (an earlier rollout) is not honoured.
    pub(crate) fingerprint: String,
}

/// When the canary is rolled back: its error rate above the stable one's by
/// more than `max_error_rate_increase` points, or its p95 latency above the
/// stable one's by more than `max_p95_increase`, over `window` and once it
/// served `min_requests`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rollback {
    /// Percentage points. Default: 5.
    pub(crate) max_error_rate_increase: u32,
    pub(crate) max_p95_increase: Option<Duration>,
    /// Default: 50.
    pub(crate) min_requests: u32,
    /// 1 s to 10 min. Default: 60 s.
    pub(crate) window: Duration,
    /// How often an instance reads the fleet's record. Default: 1 s.
    pub(crate) sync: Duration,
}

/// Names a canary's settings in its store record: 16 hex digits of a
/// SHA-256 over the route, the canary service, steps, soak and rollback.
fn fingerprint(route_name: &str, service: &str, steps: &[u32], soak: Duration, rollback: &Rollback) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("{route_name}\n{service}\n{steps:?}\n{soak:?}\n{rollback:?}"));
    let mut fingerprint = String::new();
    crate::shared::hex::push_hex(&mut fingerprint, &hash.finalize()[..8]);
    fingerprint
}

/// `"5%"`, `"0.5%"`, `"100%"` as basis points.
fn share(text: &str) -> Result<u32, String> {
    let bad = || format!("`{text}`: a share such as \"5%\" or \"0.5%\" (0% to 100%)");
    let number = text.strip_suffix('%').ok_or_else(bad)?.trim();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.len() > 2 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u32 = whole.parse().map_err(|_| bad())?;
    let fraction: u32 = if fraction.is_empty() { 0 } else { format!("{fraction:0<2}").parse().map_err(|_| bad())? };
    let points = whole.checked_mul(100).and_then(|w| w.checked_add(fraction)).ok_or_else(bad)?;
    if points > 10_000 { Err(bad()) } else { Ok(points) }
}

impl Compiler<'_> {
    pub(super) fn canary(
        &mut self,
        key: &str,
        route_name: &str,
        stable: Option<usize>,
        auth: Option<&RouteAuth>,
        raw: &Spanned<RawCanary>,
        known: &Known<'_>,
    ) -> Option<Canary> {
        let c = raw.get_ref();
        let k = |field: &str| format!("{key}.{field}");
        let errors_before = self.errors.len();
        let names = known.services.iter().map(|s| &*s.name);
        let service = self.resolve(&c.service, k("service"), "service", names, &known.broken.services);
        if service.is_some() && service == stable {
            self.error(c.service.span(), k("service"), "the canary must be another service than the route's");
        }
        let (steps, soak) = self.canary_steps(key, raw);
        let sticky_on = self.canary_sticky_on(key, c, auth, known);
        let header = c.header.as_ref().and_then(|h| self.check(h.span(), &k("header"), parse_header_name(h.get_ref())));
        let variant_header = c
            .variant_header
            .as_ref()
            .and_then(|h| self.check(h.span(), &k("variant_header"), parse_header_name(h.get_ref())));
        if let Some(first) = c.groups.first()
            && auth.is_none()
        {
            self.error(first.span(), k("groups"), "groups come from authenticated callers: give the route `auth`");
        }
        let groups = c.groups.iter().map(|g| g.get_ref().clone()).collect();
        let rollback = self.rollback(&k("rollback"), c.rollback.as_ref());
        let fingerprint = fingerprint(route_name, c.service.get_ref(), &steps, soak, &rollback);
        (self.errors.len() == errors_before).then_some(Canary {
            service: service?,
            steps,
            soak,
            sticky_on,
            header,
            groups,
            variant_header,
            rollback,
            fingerprint,
        })
    }

    /// The shares, step by step (`share`, or `promote.steps` rising), and
    /// how long each step soaks (forever without `promote`).
    fn canary_steps(&mut self, key: &str, raw: &Spanned<RawCanary>) -> (Vec<u32>, Duration) {
        let c = raw.get_ref();
        let k = |field: &str| format!("{key}.{field}");
        let steps: Vec<u32> = match (&c.share, &c.promote) {
            (Some(s), None) => self.check(s.span(), &k("share"), share(s.get_ref())).into_iter().collect(),
            (None, Some(p)) => {
                let steps: Vec<u32> = p
                    .get_ref()
                    .steps
                    .iter()
                    .enumerate()
                    .filter_map(|(i, s)| self.check(s.span(), &format!("{key}.promote.steps[{i}]"), share(s.get_ref())))
                    .collect();
                if steps.is_empty() || steps.windows(2).any(|w| w[0] >= w[1]) {
                    self.error(p.span(), k("promote.steps"), "give rising shares, e.g. [\"5%\", \"25%\", \"100%\"]");
                }
                steps
            }
            (Some(s), Some(_)) => {
                self.error(
                    s.span(),
                    k("share"),
                    "give `share` or `promote.steps` (whose first step is the share), not both",
                );
                Vec::new()
            }
            (None, None) => {
                self.error(raw.span(), k("share"), "say how many callers get the canary: `share = \"5%\"`");
                Vec::new()
            }
        };
        let soak = match &c.promote {
            Some(p) => self.duration(&Some(p.get_ref().soak.clone()), &k("promote.soak"), Duration::from_secs(600)),
            None => Duration::MAX,
        };
        (steps, soak)
    }

    /// What keeps a caller on its variant; one the route's callers can
    /// never have (a consumer or subject without such a provider) is an error.
    fn canary_sticky_on(&mut self, key: &str, c: &RawCanary, auth: Option<&RouteAuth>, known: &Known<'_>) -> CallerKey {
        let k = format!("{key}.sticky_on");
        let Some(s) = &c.sticky_on else { return CallerKey::ClientIp };
        let sticky_on = self.check(s.span(), &k, CallerKey::parse(s.get_ref())).unwrap_or(CallerKey::ClientIp);
        if let Some((api_key, needed)) = sticky_on.needs_provider()
            && !route_has_provider(auth, known.auth, api_key)
        {
            self.error(s.span(), k, format!("this route never has it: give the route `auth` with {needed}"));
        }
        sticky_on
    }

    fn rollback(&mut self, key: &str, raw: Option<&Spanned<super::raw::RawRollback>>) -> Rollback {
        let mut r = Rollback {
            max_error_rate_increase: 5,
            max_p95_increase: None,
            min_requests: 50,
            window: Duration::from_secs(60),
            sync: Duration::from_secs(1),
        };
        let Some(raw) = raw.map(Spanned::get_ref) else { return r };
        let k = |field: &str| format!("{key}.{field}");
        if let Some(m) = &raw.max_error_rate_increase {
            let parsed = share(m.get_ref()).map(|points| points / 100);
            r.max_error_rate_increase = self.check(m.span(), &k("max_error_rate_increase"), parsed).unwrap_or(5);
        }
        if raw.max_p95_increase.is_some() {
            r.max_p95_increase = Some(self.duration(&raw.max_p95_increase, &k("max_p95_increase"), Duration::MAX));
        }
        if let Some(m) = &raw.min_requests {
            match *m.get_ref() {
                0 => self.error(m.span(), k("min_requests"), "must be at least 1"),
                n => r.min_requests = n,
            }
        }
        r.window = self.duration(&raw.window, &k("window"), r.window);
        if let Some(w) = raw.window.as_ref().filter(|_| r.window > Duration::from_secs(600)) {
            self.error(w.span(), k("window"), "from 1s to 10m");
        }
        r.sync = self.duration(&raw.sync, &k("sync"), r.sync);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_are_basis_points() {
        assert_eq!(share("5%"), Ok(500));
        assert_eq!(share("0.5%"), Ok(50));
        assert_eq!(share("12.25%"), Ok(1225));
        assert_eq!(share("100%"), Ok(10_000));
        for bad in ["5", "101%", "0.125%", "-1%", "x%", "1.x%"] {
            assert!(share(bad).is_err(), "{bad}");
        }
    }
}
