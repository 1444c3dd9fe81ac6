//! RS256/RS384/RS512 signatures at the edge (wasm32 only), installed as
//! `jsonwebtoken`'s verifier for those three algorithms; everything else is
//! the crate's RustCrypto provider.
//!
//! Why: the crate's RSA path (`rsa` 0.9) raises the signature to `e` with a
//! fixed 4-bit window over all 32 bits of `e`'s word, about 54 Montgomery
//! products on 32-bit limbs plus a long division per call: nearly all of a
//! new token's cost in wasmtime. The exponent is public, so plain
//! square-and-multiply over its bits is safe: 16 squarings and one product
//! for 65537, on `crypto-bigint`'s Montgomery arithmetic, several times
//! faster (`benches/README.md`, "New tokens at the edge"). The padding is
//! checked the way RFC 8017 §8.2.2 recommends: the expected encoding is
//! built and compared whole, so no parser of the decrypted block exists to
//! get wrong.

use std::cell::RefCell;
use std::sync::{Arc, Once};

use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, Odd};
use jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER as RUST_CRYPTO;
use jsonwebtoken::crypto::{CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use pkcs1::der::Decode;
use sha2::{Digest, Sha256, Sha384, Sha512};
use signature::Verifier;

/// The bounds `rsa` 0.9 put on public keys, kept so the edge accepts the
/// keys it accepted before.
const MAX_MODULUS_BITS: u32 = 4096;
const MAX_EXPONENT: u64 = (1 << 33) - 1;

/// DER `DigestInfo` prefixes (RFC 8017 §9.2, note 1).
const SHA256_INFO: &[u8] =
    &[0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20];
const SHA384_INFO: &[u8] =
    &[0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30];
const SHA512_INFO: &[u8] =
    &[0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40];

/// Makes this module `jsonwebtoken`'s provider, once per instance.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    static PROVIDER: CryptoProvider = CryptoProvider {
        signer_factory: RUST_CRYPTO.signer_factory,
        verifier_factory,
        key_utils: KeyUtils {
            rsa_pub_components_from_private_key: RUST_CRYPTO.key_utils.rsa_pub_components_from_private_key,
            rsa_pub_components_from_public_key: RUST_CRYPTO.key_utils.rsa_pub_components_from_public_key,
            ec_pub_components_from_private_key: RUST_CRYPTO.key_utils.ec_pub_components_from_private_key,
            ed_pub_components_from_private_key: RUST_CRYPTO.key_utils.ed_pub_components_from_private_key,
            compute_digest: RUST_CRYPTO.key_utils.compute_digest,
        },
    };
    // Err only if a provider is in place already; in the component nothing
    // asks for one before the first token is checked, which installs this.
    ONCE.call_once(|| _ = PROVIDER.install_default());
}

fn verifier_factory(alg: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    match alg {
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => Ok(Box::new(Pkcs1Verifier::new(*alg, key)?)),
        _ => (RUST_CRYPTO.verifier_factory)(alg, key),
    }
}

/// A public key ready for PKCS#1 v1.5 verification.
struct Pkcs1Verifier {
    alg: Algorithm,
    key: Arc<Prepared>,
}

/// A key's Montgomery constants, exponent and length: worth keeping (their
/// cost is in `benches/README.md`, "New tokens at the edge"), so an
/// instance keeps the last few it used.
struct Prepared {
    params: BoxedMontyParams,
    exponent: u64,
    /// The modulus's length in bytes (`k` in RFC 8017).
    k: usize,
}

/// How many prepared keys an instance keeps (a key set rarely has more).
const PREPARED_KEYS: usize = 16;

thread_local! {
    /// Prepared keys by their encoding (a JWK's `n` and `e`, or PEM's DER).
    static PREPARED: RefCell<Vec<(Vec<u8>, Arc<Prepared>)>> = const { RefCell::new(Vec::new()) };
}

impl Pkcs1Verifier {
    fn new(alg: Algorithm, key: &DecodingKey) -> Result<Self, Error> {
        // Unambiguous: a tag, then the DER, or `n`'s length, `n` and `e`.
        let id = match key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => [&[0][..], &(n.len() as u64).to_be_bytes(), n, e].concat(),
            DecodingKeyKind::SecretOrDer(der) => [&[1][..], der].concat(),
        };
        let kept = PREPARED.with_borrow(|keys| keys.iter().find(|(k, _)| *k == id).map(|(_, p)| p.clone()));
        let key = match kept {
            Some(key) => key,
            None => {
                let prepared = Arc::new(Prepared::new(key)?);
                PREPARED.with_borrow_mut(|keys| {
                    if keys.len() == PREPARED_KEYS {
                        keys.remove(0);
                    }
                    keys.push((id, prepared.clone()));
                });
                prepared
            }
        };
        Ok(Self { alg, key })
    }
}

impl Prepared {
    fn new(key: &DecodingKey) -> Result<Self, Error> {
        let bad = || Error::from(ErrorKind::InvalidRsaKey("not a usable RSA public key".into()));
        let (n, e) = match key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => (strip(n), strip(e)),
            DecodingKeyKind::SecretOrDer(der) => {
                let key = pkcs1::RsaPublicKey::from_der(der).map_err(|_| bad())?;
                (strip(key.modulus.as_bytes()), strip(key.public_exponent.as_bytes()))
            }
        };
        let exponent = (e.len() <= 8)
            .then(|| e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
            .filter(|e| (2..=MAX_EXPONENT).contains(e))
            .ok_or_else(bad)?;
        let modulus = BoxedUint::from_be_slice_vartime(n);
        if modulus.bit_width_vartime() > MAX_MODULUS_BITS {
            return Err(bad());
        }
        let modulus = Option::<Odd<BoxedUint>>::from(Odd::new(modulus)).ok_or_else(bad)?;
        Ok(Self { params: BoxedMontyParams::new_vartime(modulus), exponent, k: n.len() })
    }

    /// `s^e mod n`, as `k` bytes; `None` unless `s < n`.
    fn raise(&self, signature: &[u8]) -> Option<Vec<u8>> {
        let precision = self.params.bits_precision();
        let s = BoxedUint::from_be_slice(signature, precision).ok()?;
        if s >= *self.params.modulus().as_ref() {
            return None;
        }
        let base = BoxedMontyForm::new(s, &self.params);
        let mut acc = base.clone();
        for bit in (0..63 - self.exponent.leading_zeros()).rev() {
            acc = acc.square();
            if self.exponent >> bit & 1 == 1 {
                acc = acc.mul(&base);
            }
        }
        let bytes = acc.retrieve().to_be_bytes();
        let (high, low) = bytes.split_at(bytes.len() - self.k);
        high.iter().all(|b| *b == 0).then(|| low.to_vec())
    }
}

impl Pkcs1Verifier {
    /// EMSA-PKCS1-v1_5-ENCODE (RFC 8017 §9.2) of the message's digest.
    fn expected(&self, message: &[u8]) -> Option<Vec<u8>> {
        let (info, digest): (&[u8], Vec<u8>) = match self.alg {
            Algorithm::RS384 => (SHA384_INFO, Sha384::digest(message).to_vec()),
            Algorithm::RS512 => (SHA512_INFO, Sha512::digest(message).to_vec()),
            _ => (SHA256_INFO, Sha256::digest(message).to_vec()),
        };
        let t = info.len() + digest.len();
        let padding = self.key.k.checked_sub(t + 3).filter(|p| *p >= 8)?;
        let mut em = Vec::with_capacity(self.key.k);
        em.extend_from_slice(&[0x00, 0x01]);
        em.resize(2 + padding, 0xff);
        em.push(0x00);
        em.extend_from_slice(info);
        em.extend_from_slice(&digest);
        Some(em)
    }
}

/// Big-endian bytes without leading zeros (a JWK's `n` may carry one).
fn strip(bytes: &[u8]) -> &[u8] {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    &bytes[zeros..]
}

impl Verifier<Vec<u8>> for Pkcs1Verifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        // RFC 8017 §8.2.2 step 1: the signature is exactly k bytes.
        if signature.len() != self.key.k {
            return Err(signature::Error::new());
        }
        match (self.key.raise(signature), self.expected(message)) {
            (Some(em), Some(expected)) if em == expected => Ok(()),
            _ => Err(signature::Error::new()),
        }
    }
}

impl JwtVerifier for Pkcs1Verifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{EncodingKey, Header};
    use signature::Signer;

    use super::*;

    /// A key pair's private half, and its public half from a JWK and from PEM.
    fn keys(pem: &str, public: &str) -> (EncodingKey, DecodingKey, DecodingKey) {
        let enc = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&enc, Algorithm::RS256).unwrap();
        (enc, DecodingKey::from_jwk(&jwk).unwrap(), DecodingKey::from_rsa_pem(public.as_bytes()).unwrap())
    }

    fn fixtures() -> [(EncodingKey, DecodingKey, DecodingKey); 2] {
        [
            keys(
                include_str!("../../../tests/fixtures/keys/rsa1.pem"),
                include_str!("../../../tests/fixtures/keys/rsa1.pub.pem"),
            ),
            keys(
                include_str!("../../../tests/fixtures/keys/rsa2.pem"),
                include_str!("../../../tests/fixtures/keys/rsa2.pub.pem"),
            ),
        ]
    }

    fn ours(alg: Algorithm, key: &DecodingKey, message: &[u8], signature: &[u8]) -> bool {
        Pkcs1Verifier::new(alg, key).unwrap().verify(message, &signature.to_vec()).is_ok()
    }

    fn theirs(alg: Algorithm, key: &DecodingKey, message: &[u8], signature: &[u8]) -> bool {
        let verifier = (RUST_CRYPTO.verifier_factory)(&alg, key).unwrap();
        verifier.verify(message, &signature.to_vec()).is_ok()
    }

    #[test]
    fn agrees_with_the_crates_verifier_on_good_and_bad_signatures() {
        let message = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0";
        for (n, (enc, from_jwk, from_pem)) in fixtures().iter().enumerate() {
            for alg in [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512] {
                let good = (RUST_CRYPTO.signer_factory)(&alg, enc).unwrap().try_sign(message).unwrap();
                let mut flipped = good.clone();
                flipped[100] ^= 1;
                let other = if alg == Algorithm::RS256 { Algorithm::RS512 } else { Algorithm::RS256 };
                // Another message, a flipped bit, a short, long or zero
                // signature, and the same signature under another hash.
                let bad: [(&[u8], &[u8], Algorithm); 6] = [
                    (b"another message", &good, alg),
                    (message, &flipped, alg),
                    (message, &good[1..], alg),
                    (message, &[&good[..], &[0]].concat(), alg),
                    (message, &[0; 256], alg),
                    (message, &good, other),
                ];
                for key in [from_jwk, from_pem] {
                    assert!(ours(alg, key, message, &good), "key {n} {alg:?}");
                    assert!(theirs(alg, key, message, &good));
                    for (i, (m, s, a)) in bad.iter().enumerate() {
                        assert!(!ours(*a, key, m, s), "key {n} {alg:?} case {i}");
                        assert!(!theirs(*a, key, m, s), "key {n} {alg:?} case {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_signature_not_below_the_modulus_is_refused() {
        let [(_, key, _), _] = fixtures();
        let DecodingKeyKind::RsaModulusExponent { n, .. } = key.kind() else { panic!("a JWK key") };
        // s = n is ≡ 0 (mod n): it must be refused, not raised.
        let verifier = Pkcs1Verifier::new(Algorithm::RS256, &key).unwrap();
        assert!(verifier.key.raise(strip(n)).is_none());
        assert!(verifier.verify(b"m", &strip(n).to_vec()).is_err());
    }

    #[test]
    fn a_prepared_key_serves_only_its_own_key_and_few_are_kept() {
        let [(enc1, key1, pem1), (_, key2, pem2)] = fixtures();
        let signature = (RUST_CRYPTO.signer_factory)(&Algorithm::RS256, &enc1).unwrap().try_sign(b"m").unwrap();
        for _ in 0..2 {
            assert!(ours(Algorithm::RS256, &key1, b"m", &signature));
            assert!(ours(Algorithm::RS256, &pem1, b"m", &signature));
            assert!(!ours(Algorithm::RS256, &key2, b"m", &signature));
            assert!(!ours(Algorithm::RS256, &pem2, b"m", &signature));
        }
        // Distinct odd moduli: only the last PREPARED_KEYS stay.
        for last in (1..=99u8).step_by(2) {
            let mut n = vec![0x81; 256];
            n[255] = last;
            Pkcs1Verifier::new(Algorithm::RS256, &DecodingKey::from_rsa_raw_components(&n, &[1, 0, 1])).unwrap();
        }
        assert_eq!(PREPARED.with_borrow(Vec::len), PREPARED_KEYS);
    }

    #[test]
    fn unusable_keys_are_refused() {
        let even = DecodingKey::from_rsa_raw_components(&[0x80; 256], &[1, 0, 1]);
        let tiny_exponent = DecodingKey::from_rsa_raw_components(&[0x81; 256], &[1]);
        let huge_exponent = DecodingKey::from_rsa_raw_components(&[0x81; 256], &[2, 0, 0, 0, 1]);
        let huge_modulus = DecodingKey::from_rsa_raw_components(&[0x81; 513], &[1, 0, 1]);
        let not_der = DecodingKey::from_rsa_der(b"not DER");
        for key in [even, tiny_exponent, huge_exponent, huge_modulus, not_der] {
            assert!(Pkcs1Verifier::new(Algorithm::RS256, &key).is_err());
        }
    }

    #[test]
    fn installed_it_checks_the_tokens_jsonwebtoken_decodes() {
        install();
        let [(enc, key, _), (_, other, _)] = fixtures();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &serde_json::json!({"sub": "x"}), &enc).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).is_ok());
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, &other, &validation).is_err());
    }
}
