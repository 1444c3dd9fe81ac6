use super::*;
use crate::config::Config;
use crate::config::vars::Variables;

/// A service `s` with targets of these weights (`/t0`, `/t1`, … on one origin).
fn service(balance: &str, weights: &[u32]) -> Service {
    let targets: Vec<String> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ url = \"http://10.0.0.{}:80/t{i}\", weight = {w} }}", i % 250 + 1))
        .collect();
    let text = format!(
        "[services.s]\n{balance}\ntargets = [{}]\n\n[[routes]]\npath = \"/\"\nservice = \"s\"\n",
        targets.join(", ")
    );
    let config = Config::parse(&text, "t.toml", &Variables::new()).unwrap();
    config.services.into_iter().next().unwrap()
}

fn counts(picks: impl Iterator<Item = usize>, n: usize) -> Vec<usize> {
    let mut out = vec![0; n];
    picks.for_each(|i| out[i] += 1);
    out
}

#[test]
fn round_robin_is_an_exact_weighted_cycle_in_a_smooth_order() {
    let even = service("", &[1, 1, 1]);
    let b = Balancer::new(&even);
    let picks: Vec<usize> = (0..300).map(|_| b.pick(&even, None, 7, |_| true).unwrap().index).collect();
    assert_eq!(counts(picks.iter().copied(), 3), [100, 100, 100]);
    assert!(picks.windows(2).all(|w| w[0] != w[1]), "{picks:?}");

    let weighted = service("balance = \"round_robin\"", &[3, 1, 0]);
    let b = Balancer::new(&weighted);
    let picks: Vec<usize> = (0..400).map(|_| b.pick(&weighted, None, 12345, |_| true).unwrap().index).collect();
    for cycle in picks.chunks(4) {
        assert_eq!(counts(cycle.iter().copied(), 3), [3, 1, 0], "every cycle of 4: {picks:?}");
    }
    // Weights reduce by their common divisor: 30:10 cycles like 3:1.
    let big = service("", &[30, 10]);
    let b = Balancer::new(&big);
    assert_eq!(counts((0..4).map(|_| b.pick(&big, None, 0, |_| true).unwrap().index), 2), [3, 1]);
}

#[test]
fn a_short_lived_balancer_starts_its_cycle_at_random() {
    let s = service("", &[1, 1, 1, 1]);
    let firsts = counts((0..4000u64).map(|r| Balancer::new(&s).pick(&s, None, mix(r), |_| true).unwrap().index), 4);
    assert!(firsts.iter().all(|&c| (800..1200).contains(&c)), "{firsts:?}");
}

#[test]
fn random_follows_the_weights() {
    let s = service("balance = \"random\"", &[1, 3]);
    let b = Balancer::new(&s);
    let got = counts((0..20_000u64).map(|r| b.pick(&s, None, mix(r), |_| true).unwrap().index), 2);
    assert!((4_500..5_500).contains(&got[0]), "{got:?}");
}

#[test]
fn least_request_avoids_the_busy_target() {
    let s = service("balance = \"least_request\"", &[1, 1]);
    let b = Balancer::new(&s);
    let mut held = Vec::new();
    let mut r = 0;
    while held.len() < 3 {
        r += 1;
        let pick = b.pick(&s, None, mix(r), |_| true).unwrap();
        if pick.index == 0 {
            held.push(pick);
        }
    }
    // Two draws; the busy target wins only when both draws are it (1 in 4).
    let got = counts((1000..5000u64).map(|r| b.pick(&s, None, mix(r), |_| true).unwrap().index), 2);
    assert!((800..1200).contains(&got[0]), "{got:?}");
    drop(held);
    assert!(b.in_flight.iter().all(|n| n.load(Ordering::Relaxed) == 0), "every pick released its target");
    let idle = counts((0..4000u64).map(|r| b.pick(&s, None, mix(r), |_| true).unwrap().index), 2);
    assert!((1700..2300).contains(&idle[0]), "{idle:?}");
}

fn placement(s: &Service, callers: u32) -> Vec<String> {
    let b = Balancer::new(s);
    (0..callers)
        .map(|c| {
            let i = b.pick(s, Some(format!("header:caller-{c}").as_bytes()), 0, |_| true).unwrap().index;
            s.targets[i].base_path.clone()
        })
        .collect()
}

#[test]
fn consistent_hash_keeps_a_caller_and_follows_the_weights() {
    let s = service("balance = \"consistent_hash\"\nhash_on = \"header:x-user\"", &[1, 1, 2]);
    let first = placement(&s, 20_000);
    assert_eq!(first, placement(&s, 20_000), "the same caller, the same target, in any balancer");
    let share = |t: &str| first.iter().filter(|p| *p == t).count() as f64 / 20_000.0;
    for (t, want) in [("/t0", 0.25), ("/t1", 0.25), ("/t2", 0.5)] {
        assert!((share(t) - want).abs() < 0.03, "{t}: {} of the callers", share(t));
    }
}

#[test]
fn consistent_hash_moves_about_one_nth_of_callers_when_one_of_n_targets_changes() {
    let hashed = "balance = \"consistent_hash\"\nhash_on = \"client_ip\"";
    let five = placement(&service(hashed, &[1; 5]), 20_000);
    let mut four_targets = service(hashed, &[1; 5]);
    four_targets.targets.remove(2);
    let four = placement(&four_targets, 20_000);
    let six = placement(&service(hashed, &[1; 6]), 20_000);
    let moved = |a: &[String], b: &[String]| a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / 20_000.0;
    let removed = moved(&five, &four);
    let added = moved(&five, &six);
    eprintln!("moved: {removed:.3} when one of 5 targets goes, {added:.3} when a 6th comes");
    assert!((0.18..0.26).contains(&removed), "removing one of 5 moved {removed}");
    assert!((0.15..0.22).contains(&added), "adding a 6th moved {added}");
    let kept = five.iter().zip(&four).filter(|(a, _)| *a != "/t2").all(|(a, b)| a == b);
    let strays = five.iter().zip(&four).filter(|(a, b)| *a != "/t2" && a != b).count();
    assert!(kept || strays < 20_000 / 50, "{strays} callers of the remaining targets moved");
}

#[test]
fn a_target_that_may_not_serve_is_passed_over_by_every_policy() {
    for policy in ["", "balance = \"least_request\"", "balance = \"random\""] {
        let s = service(policy, &[1, 1, 1]);
        let b = Balancer::new(&s);
        let got = counts((0..3000u64).map(|r| b.pick(&s, None, mix(r), |i| i != 1).unwrap().index), 3);
        assert_eq!(got[1], 0, "{policy}: {got:?}");
        assert!(got[0] > 1000 && got[2] > 1000, "{policy}: {got:?}");
        assert!(b.pick(&s, None, 1, |_| false).is_none(), "{policy}: nothing usable, no pick");
    }
    // A consistent hash moves only the callers of the target that may not
    // serve, each to the same second choice every time.
    let s = service("balance = \"consistent_hash\"\nhash_on = \"client_ip\"", &[1, 1, 1]);
    let b = Balancer::new(&s);
    for c in 0..2000 {
        let caller = format!("ip:10.0.{}.{}", c / 250, c % 250);
        let first = b.pick(&s, Some(caller.as_bytes()), 0, |_| true).unwrap().index;
        let second = b.pick(&s, Some(caller.as_bytes()), 1, |i| i != 0).unwrap().index;
        assert_ne!(second, 0);
        if first != 0 {
            assert_eq!(first, second, "{caller} moved though its target may serve");
        }
        assert_eq!(second, b.pick(&s, Some(caller.as_bytes()), 2, |i| i != 0).unwrap().index, "{caller}");
    }
}
