//! Any `exp` and `nbf` a signed token carries gets a verdict (property test).

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::*;

/// A JSON value a token's `exp` or `nbf` might hold.
fn claim_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        prop::num::f64::NORMAL.prop_map(|x| json!(x)),
        Just(json!(1e300)),
        Just(json!(-1e300)),
        Just(json!(f64::MAX)),
        (0i64..10_000).prop_map(|d| json!(T0 as i64 + d - 5_000)),
        ".{0,12}".prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(json!(null)),
        Just(json!([1, 2])),
    ]
}

proptest! {
    // The seeds of past failures stay in the file named after this module's old source file.
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/pipeline/authn/tests.txt"
        )))),
        ..ProptestConfig::default()
    })]

    /// Whatever `exp` and `nbf` a validly signed token carries, the
    /// answer is a verdict, never a panic, and the one the claims call for.
    #[test]
    fn any_exp_and_nbf_get_a_verdict(exp in claim_value(), nbf in prop::option::of(claim_value())) {
        let (_idp, ports) = setup(vec![jwk(RSA1, "k1")]);
        let mut claims = json!({"iss": "https://idp.test/", "aud": "api", "sub": "p", "exp": exp});
        if let Some(nbf) = &nbf {
            claims["nbf"] = nbf.clone();
        }
        let token = mint(RSA1, "k1", claims);
        let verdict = auth(&gateway(), &ports, &[("authorization", &bearer(&token))]);
        let now = T0 as f64;
        let number = |v: &serde_json::Value| v.as_f64();
        let expect_ok = !exp.is_null()
            && number(&exp).is_some_and(|e| now < e + 60.0)
            && nbf.as_ref().is_none_or(|n| !n.is_null() && number(n).is_some_and(|n| now + 60.0 >= n));
        prop_assert_eq!(verdict.is_ok(), expect_ok, "exp {} nbf {:?}: {:?}", exp, nbf, verdict.err());
    }
}
