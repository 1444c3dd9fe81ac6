//! Address ranges for allow and deny lists (`ip_allow`, `ip_deny`),
//! merged and sorted when built, so a lookup is a binary search however
//! long the list.

use std::net::IpAddr;

use ipnet::IpNet;

/// One level's rules: an address in `deny` is refused; with `allow`, one
/// outside it is too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IpRules {
    pub(crate) allow: Option<Ranges>,
    pub(crate) deny: Ranges,
}

/// Disjoint, sorted, inclusive ranges over one address space (IPv4 as
/// IPv4-mapped IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ranges(Vec<(u128, u128)>);

impl IpRules {
    /// Whether a client at `ip` passes.
    pub(crate) fn admits(&self, ip: IpAddr) -> bool {
        let n = number(ip);
        !self.deny.contains(n) && self.allow.as_ref().is_none_or(|allow| allow.contains(n))
    }
}

impl Ranges {
    pub(crate) fn new(nets: &[IpNet]) -> Self {
        let mut spans: Vec<(u128, u128)> =
            nets.iter().map(|net| (number(net.network()), number(net.broadcast()))).collect();
        spans.sort_unstable();
        let mut merged: Vec<(u128, u128)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1.saturating_add(1) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        Self(merged)
    }

    /// The ranges as the fewest CIDR blocks that cover them exactly
    /// (IPv4 as IPv4): what builds them again.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // the node keeps registry consumers on disk
    pub(crate) fn to_strings(&self) -> Vec<String> {
        let mapped = u128::from(std::net::Ipv4Addr::UNSPECIFIED.to_ipv6_mapped());
        let mut out = Vec::new();
        for &(start, end) in &self.0 {
            let subnets = ipnet::Ipv6Subnets::new(start.into(), end.into(), 0);
            for net in subnets {
                let first = u128::from(net.network());
                match (first & !0xffff_ffff == mapped, net.prefix_len().checked_sub(96)) {
                    (true, Some(v4_len)) => {
                        let v4 = std::net::Ipv4Addr::from((first & 0xffff_ffff) as u32);
                        out.push(format!("{v4}/{v4_len}"));
                    }
                    _ => out.push(net.to_string()),
                }
            }
        }
        out
    }

    fn contains(&self, n: u128) -> bool {
        let after = self.0.partition_point(|&(start, _)| start <= n);
        after > 0 && self.0[after - 1].1 >= n
    }
}

/// An address as a number in IPv6's space; IPv4 (and IPv4-mapped IPv6) as
/// IPv4-mapped, so `10.0.0.0/8` and `::ffff:10.0.0.0/104` are one range.
fn number(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: Option<&[&str]>, deny: &[&str]) -> IpRules {
        let net = |n: &&str| n.parse::<IpNet>().unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()));
        let nets = |list: &[&str]| list.iter().map(net).collect::<Vec<_>>();
        IpRules { allow: allow.map(|a| Ranges::new(&nets(a))), deny: Ranges::new(&nets(deny)) }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_give_back_the_blocks_that_build_them() {
        let nets = ["10.0.0.0/8", "10.1.0.0/16", "192.168.1.0/24", "192.168.0.0/24", "2001:db8::/32", "203.0.113.7"];
        let parsed: Vec<IpNet> =
            nets.iter().map(|n| n.parse().unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()))).collect();
        let ranges = Ranges::new(&parsed);
        assert_eq!(ranges.to_strings(), ["10.0.0.0/8", "192.168.0.0/23", "203.0.113.7/32", "2001:db8::/32"]);
        let again: Vec<IpNet> = ranges.to_strings().iter().map(|n| n.parse().unwrap()).collect();
        assert_eq!(Ranges::new(&again), ranges);
    }

    #[test]
    fn deny_wins_and_allow_bounds() {
        let r = rules(Some(&["10.0.0.0/8", "2001:db8::/32"]), &["10.9.0.0/16", "2001:db8:bad::/48"]);
        assert!(r.admits(ip("10.1.2.3")));
        assert!(r.admits(ip("10.255.255.255")));
        assert!(!r.admits(ip("10.9.1.1")), "denied inside the allowed range");
        assert!(!r.admits(ip("11.0.0.0")));
        assert!(!r.admits(ip("9.255.255.255")));
        assert!(r.admits(ip("2001:db8::1")));
        assert!(!r.admits(ip("2001:db8:bad::1")));
        assert!(!r.admits(ip("2001:db9::1")));
        assert!(r.admits(ip("::ffff:10.1.2.3")), "an IPv4-mapped address is the IPv4 one");
    }

    #[test]
    fn deny_alone_admits_the_rest() {
        let r = rules(None, &["192.0.2.7", "198.51.100.0/24"]);
        assert!(!r.admits(ip("192.0.2.7")));
        assert!(r.admits(ip("192.0.2.8")) && r.admits(ip("192.0.2.6")));
        assert!(!r.admits(ip("198.51.100.200")));
        assert!(r.admits(ip("::1")));
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let nets: Vec<IpNet> =
            ["10.0.0.0/24", "10.0.1.0/24", "10.0.0.128/25", "10.0.3.0/24"].iter().map(|n| n.parse().unwrap()).collect();
        let r = Ranges::new(&nets);
        assert_eq!(r.0.len(), 2);
        assert!(r.contains(number(ip("10.0.1.255"))));
        assert!(!r.contains(number(ip("10.0.2.0"))));
        assert!(r.contains(number(ip("10.0.3.0"))));
        let all = Ranges::new(&["::/0".parse().unwrap()]);
        assert!(all.contains(number(ip("255.255.255.255"))) && all.contains(u128::MAX));
    }
}
