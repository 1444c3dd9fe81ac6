//! `[auth.introspection.NAME]` compiled: opaque tokens checked at an
//! OAuth 2.0 introspection endpoint (RFC 7662), with the gateway's own
//! client authentication to it (`client_secret_basic`, `private_key_jwt`
//! or a bearer token).

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use jsonwebtoken::{Algorithm, AlgorithmFamily, EncodingKey, Header};
use toml::Spanned;

use super::Compiler;
use super::auth::TokenSource;
use super::raw::RawIntrospection;

/// Positive results are trusted at most this long: the revocation delay. Default.
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// Refusals (`active: false`) are remembered this long. Default.
const DEFAULT_NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// How long the endpoint gets to answer. Default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longer tokens are refused unread. Default.
const DEFAULT_MAX_TOKEN_SIZE: u64 = 4 << 10;

#[derive(Clone)]
pub(crate) struct IntrospectionProvider {
    pub(crate) endpoint: Uri,
    /// How the gateway proves who it is to the endpoint.
    pub(crate) client: ClientAuth,
    /// `iss` an answer must carry, if set. Default: any.
    pub(crate) issuer: Option<String>,
    /// One of these must be in `aud`, if any are set. Default: any.
    pub(crate) audiences: Vec<String>,
    pub(crate) sources: Vec<TokenSource>,
    pub(crate) forward_claims: Vec<(HeaderName, String)>,
    pub(crate) groups_claim: Option<String>,
    pub(crate) strip_credential: bool,
    pub(crate) max_token_size: usize,
    /// Active tokens are trusted until their `exp`, at most this long.
    pub(crate) cache_ttl: Duration,
    pub(crate) negative_ttl: Duration,
    pub(crate) timeout: Duration,
}

/// The gateway's client authentication at the endpoint.
#[derive(Clone)]
pub(crate) enum ClientAuth {
    /// `client_secret_basic` or a bearer token: the same `Authorization` on every call.
    Header(HeaderValue),
    /// `private_key_jwt` (RFC 7523 §2.2): an assertion signed for each call.
    Assertion(Arc<Assertion>),
}

/// What a client assertion is made of: `iss` and `sub` are the client id,
/// `aud` the endpoint (or the audience the IdP names).
pub(crate) struct Assertion {
    pub(crate) client_id: String,
    pub(crate) audience: String,
    /// `alg`, and `kid` when `private_key_id` is set.
    pub(crate) header: Header,
    pub(crate) key: EncodingKey,
}

impl Compiler<'_> {
    pub(super) fn introspection_provider(
        &mut self,
        name: &str,
        raw: &Spanned<RawIntrospection>,
    ) -> Option<IntrospectionProvider> {
        let key = format!("auth.introspection.{name}");
        let r = raw.get_ref();
        let before = self.errors.len();
        let endpoint = self.http_url(&format!("{key}.endpoint"), &r.endpoint);
        let client = self.introspection_client(&key, raw, endpoint.as_ref());
        let sources = self.token_sources(&key, &r.token_from);
        let forward_claims = self.forward_claims(&key, &r.forward_claims);
        let max_token_size =
            self.size(r.max_token_size.clone(), &format!("{key}.max_token_size"), DEFAULT_MAX_TOKEN_SIZE);
        let cache_ttl = self.duration(&r.cache_ttl, &format!("{key}.cache_ttl"), DEFAULT_CACHE_TTL);
        let negative_ttl =
            self.duration(&r.negative_cache_ttl, &format!("{key}.negative_cache_ttl"), DEFAULT_NEGATIVE_TTL);
        let timeout = self.duration(&r.timeout, &format!("{key}.timeout"), DEFAULT_TIMEOUT);
        let (endpoint, client) = (endpoint?, client?);
        (self.errors.len() == before).then(|| IntrospectionProvider {
            endpoint,
            client,
            issuer: r.issuer.as_ref().map(|i| i.get_ref().clone()),
            audiences: r.audiences.iter().map(|a| a.get_ref().clone()).collect(),
            sources,
            forward_claims,
            groups_claim: r.groups_claim.as_ref().map(|g| g.get_ref().clone()),
            strip_credential: r.strip_credential.unwrap_or(true),
            max_token_size: usize::try_from(max_token_size).unwrap_or(usize::MAX),
            cache_ttl,
            negative_ttl,
            timeout,
        })
    }

    /// The gateway's credential at the endpoint: `client_id` with
    /// `client_secret` (HTTP Basic, RFC 6749 §2.3.1), `client_id` with a
    /// `private_key` (`private_key_jwt`), or `bearer_token`.
    fn introspection_client(
        &mut self,
        key: &str,
        raw: &Spanned<RawIntrospection>,
        endpoint: Option<&Uri>,
    ) -> Option<ClientAuth> {
        let r = raw.get_ref();
        let value = match (&r.client_id, &r.client_secret, &r.private_key, &r.bearer_token) {
            (Some(id), Some(secret), None, None) => {
                let id = self.value(id, &format!("{key}.client_id"))?;
                let secret = self.value(secret, &format!("{key}.client_secret"))?;
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(&id), encode(&secret));
                format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair))
            }
            (Some(id), None, Some(pem), None) => return self.client_assertion(key, r, id, pem, endpoint),
            (None, None, None, Some(token)) => format!("Bearer {}", self.value(token, &format!("{key}.bearer_token"))?),
            _ => {
                let message = "the gateway authenticates to the endpoint with `client_id` and `client_secret`, `client_id` and `private_key`, or a `bearer_token`";
                self.error(raw.span(), key, message);
                return None;
            }
        };
        for (name, v) in [
            ("private_key_id", &r.private_key_id),
            ("assertion_algorithm", &r.assertion_algorithm),
            ("assertion_audience", &r.assertion_audience),
        ] {
            if let Some(v) = v {
                self.error(v.span(), format!("{key}.{name}"), "belongs to a `private_key`");
            }
        }
        let parsed = HeaderValue::from_str(&value).map_err(|_| "is not a valid header value".to_string());
        self.check(raw.span(), key, parsed).map(ClientAuth::Header)
    }

    /// `private_key_jwt` (RFC 7523 §2.2): the key, its algorithm (from the
    /// key unless `assertion_algorithm` says), and the assertion's audience
    /// (the endpoint unless `assertion_audience` says).
    fn client_assertion(
        &mut self,
        key: &str,
        r: &RawIntrospection,
        id: &Spanned<String>,
        pem: &Spanned<String>,
        endpoint: Option<&Uri>,
    ) -> Option<ClientAuth> {
        let client_id = self.value(id, &format!("{key}.client_id"));
        let pem_text = self.value(pem, &format!("{key}.private_key"));
        let signing = pem_text.and_then(|t| self.check(pem.span(), &format!("{key}.private_key"), signing_key(&t)));
        let alg = match (&r.assertion_algorithm, &signing) {
            (Some(a), Some((k, _))) => {
                let chosen = assertion_algorithm(a.get_ref(), k.family());
                self.check(a.span(), &format!("{key}.assertion_algorithm"), chosen)
            }
            (None, Some((_, alg))) => Some(*alg),
            (_, None) => None,
        };
        let audience = match &r.assertion_audience {
            Some(a) => self.value(a, &format!("{key}.assertion_audience")),
            None => endpoint.map(Uri::to_string),
        };
        let key_id = match &r.private_key_id {
            Some(k) => Some(self.value(k, &format!("{key}.private_key_id"))?),
            None => None,
        };
        let (client_id, (encoding, _), alg, audience) = (client_id?, signing?, alg?, audience?);
        let mut header = Header::new(alg);
        header.kid = key_id;
        Some(ClientAuth::Assertion(Arc::new(Assertion { client_id, audience, header, key: encoding })))
    }
}

/// A private key in PEM (PKCS#8, or PKCS#1 for RSA) and the algorithm its
/// kind implies: RS256, ES256 or ES384 by the curve, EdDSA.
fn signing_key(pem: &str) -> Result<(EncodingKey, Algorithm), String> {
    let bad = || "not a PEM private key (PKCS#8 RSA, EC P-256/P-384 or Ed25519, or PKCS#1 RSA)".to_string();
    if let Ok(k) = EncodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = EncodingKey::from_ed_pem(pem.as_bytes()) {
        return Ok((k, Algorithm::EdDSA));
    }
    let k = EncodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| bad())?;
    // The curve is named by its OID in the key's DER.
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).map_err(|_| bad())?;
    let names = |oid: &[u8]| der.windows(oid.len()).any(|w| w == oid);
    match (names(P256_OID), names(P384_OID)) {
        (true, false) => Ok((k, Algorithm::ES256)),
        (false, true) => Ok((k, Algorithm::ES384)),
        _ => Err("an EC key on a curve other than P-256 or P-384".into()),
    }
}

/// DER of the OIDs `prime256v1` (1.2.840.10045.3.1.7) and `secp384r1` (1.3.132.0.34).
const P256_OID: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384_OID: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// An RSA key may sign RS or PS at any of three sizes; the others' keys
/// sign one algorithm, the one their kind implies.
fn assertion_algorithm(text: &str, family: AlgorithmFamily) -> Result<Algorithm, String> {
    let alg: Algorithm = text.parse().map_err(|_| format!("`{text}` is not a JWT signing algorithm"))?;
    let rsa = matches!(
        alg,
        Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512
    );
    match family {
        AlgorithmFamily::Rsa if rsa => Ok(alg),
        AlgorithmFamily::Rsa => Err(format!("an RSA key signs RS256/384/512 or PS256/384/512, not {text}")),
        _ => Err("only an RSA key has a choice of algorithm; leave `assertion_algorithm` out".into()),
    }
}
