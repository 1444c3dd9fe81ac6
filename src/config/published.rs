//! What the registry publishes, in the forms every home reads
//! (`kv-schema/registry.md`): an API-key consumer's record, and the edge's
//! copy of the current config in the key-value store its components use.
//!
//! At the edge a config arrives pre-parsed (the digest a build embeds, see
//! `digest.rs`), so a WASI 0.2 instance that follows the registry compiles
//! it without parsing TOML; its errors still name the published file's
//! lines. A consumer is one key of its own, read when a key is presented:
//! an edge instance cannot hold the whole registry (a WASI 0.2 one lives
//! one request).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::auth::parse_sha256;
use super::ip_rules::consumer_networks;
use super::{Config, ConfigErrors, Variables, digest_write};
use crate::shared::identity::Identity;

/// The current edge version: `<version> <sha256>` (read once a second by a
/// WASI 0.3 instance).
pub const EDGE_CURRENT: &str = "pc1:{cfg}:edge:current";
/// The current edge config ([`EdgeConfig`]).
pub const EDGE_CONFIG: &str = "pc1:{cfg}:edge:config";
/// Followed by `<provider>/<key_sha256>`: one consumer's record (JSON).
pub const EDGE_CONSUMER: &str = "pc1:{cfg}:edge:key:";
const MAGIC: &str = "pc1c ";

/// The edge key of the consumer of `provider` whose key hashes to `key_sha256` (hex).
pub fn consumer_key(provider: &str, key_sha256: &str) -> String {
    format!("{EDGE_CONSUMER}{provider}/{key_sha256}")
}

/// One API-key consumer as the registry keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consumer {
    /// The config's `[auth.api_key.NAME]` whose keys it holds.
    pub provider: String,
    pub id: String,
    pub key_sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_allow: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_deny: Option<Vec<String>>,
    #[serde(default)]
    pub added_at: String,
}

impl Consumer {
    /// Its field in the registry's hash: `<provider>/<key_sha256>`.
    pub fn field(&self) -> String {
        format!("{}/{}", self.provider, self.key_sha256)
    }

    /// Its key in the edge's store.
    pub fn edge_key(&self) -> String {
        consumer_key(&self.provider, &self.key_sha256)
    }

    /// Its key hash and the identity it proves, as the config builds them.
    pub(crate) fn identity(&self) -> Result<([u8; 32], Arc<Identity>), String> {
        let digest = parse_sha256(&self.key_sha256).map_err(|e| format!("key_sha256: {e}"))?;
        let networks = consumer_networks(self.ip_allow.as_deref(), self.ip_deny.as_deref())?;
        let identity = Identity {
            provider: self.provider.clone(),
            subject: self.id.clone(),
            groups: self.groups.clone(),
            scopes: self.scopes.clone(),
            claims: serde_json::Map::new(),
            networks,
        };
        Ok((digest, Arc::new(identity)))
    }

    /// Refuses a record that would not work: an id, a well-formed hash and
    /// address ranges, and a provider that `providers` (the API-key
    /// providers of the config it is for, when there is one) has.
    pub fn check(&self, providers: Option<&[String]>) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("id: a consumer needs one".into());
        }
        if self.provider.contains('/') {
            return Err(format!("provider `{}`: no `/` in a provider's name", self.provider));
        }
        self.identity()?;
        match providers {
            Some(names) if !names.contains(&self.provider) => Err(format!(
                "provider `{}`: the current config has no such [auth.api_key] provider (it has: {})",
                self.provider,
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )),
            _ => Ok(()),
        }
    }

    /// A record as stored (JSON): its provider, key hash and identity.
    pub(crate) fn built(record: &[u8]) -> Result<(String, [u8; 32], Arc<Identity>), String> {
        let c: Consumer = serde_json::from_slice(record).map_err(|e| e.to_string())?;
        let (digest, identity) = c.identity()?;
        Ok((c.provider, digest, identity))
    }
}

/// The names of `config`'s API-key providers.
pub fn api_key_providers(config: &Config) -> Vec<String> {
    use super::auth::ProviderKind;
    let api_keys = config.auth.providers.iter().filter(|p| matches!(p.kind, ProviderKind::ApiKey(_)));
    api_keys.map(|p| p.name.to_string()).collect()
}

/// A published config as the edge reads it: `pc1c <version> <sha256>
/// <published_at>\n<file>\n<digest length>\n` then the digest, then the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    pub version: u64,
    pub sha256: String,
    pub published_at: String,
    pub file: String,
    digest: Vec<u8>,
    pub text: String,
}

impl EdgeConfig {
    /// The record for a config `text` (which must be TOML: it is digested).
    pub fn new(version: u64, sha256: &str, published_at: &str, file: &str, text: &str) -> Result<Self, String> {
        for (name, value) in [("sha256", sha256), ("published_at", published_at)] {
            if value.is_empty() || value.contains(char::is_whitespace) {
                return Err(format!("{name} `{value}` is empty or has spaces"));
            }
        }
        Ok(Self {
            version,
            sha256: sha256.to_string(),
            published_at: published_at.to_string(),
            file: file.replace('\n', " "),
            digest: digest_write::digest(text)?,
            text: text.to_string(),
        })
    }

    /// The record after its version number (`pc1c <version> ` comes first):
    /// what the registry's script completes once it has numbered it.
    pub fn after_version(&self) -> Vec<u8> {
        let head = format!("{} {}\n{}\n{}\n", self.sha256, self.published_at, self.file, self.digest.len());
        let mut out = Vec::with_capacity(head.len() + self.digest.len() + self.text.len());
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(self.text.as_bytes());
        out
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC}{} ", self.version).into_bytes();
        out.extend(self.after_version());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let bad = |why: &str| format!("{EDGE_CONFIG} is not an edge config record: {why}");
        let rest = bytes.strip_prefix(MAGIC.as_bytes()).ok_or_else(|| bad("no `pc1c` head"))?;
        let mut lines = rest.splitn(4, |&b| b == b'\n');
        let mut line = |what: &str| {
            let l = lines.next().ok_or_else(|| bad(&format!("no {what}")))?;
            std::str::from_utf8(l).map_err(|_| bad(&format!("the {what} is not UTF-8")))
        };
        let head = line("head")?;
        let file = line("file name")?.to_string();
        let digest_len: usize = line("digest length")?.parse().map_err(|_| bad("the digest length"))?;
        let body = lines.next().ok_or_else(|| bad("no digest"))?;
        let (digest, text) = body.split_at_checked(digest_len).ok_or_else(|| bad("a short digest"))?;
        let text = std::str::from_utf8(text).map_err(|_| bad("the config is not UTF-8"))?;
        let mut words = head.split(' ');
        let (Some(version), Some(sha256), Some(published_at), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(bad("the head is not `<version> <sha256> <published_at>`"));
        };
        Ok(Self {
            version: version.parse().map_err(|_| bad("the version"))?,
            sha256: sha256.to_string(),
            published_at: published_at.to_string(),
            file,
            digest: digest.to_vec(),
            text: text.to_string(),
        })
    }

    /// What [`EDGE_CURRENT`] holds while this version is current.
    pub fn pointer(&self) -> String {
        pointer(self.version, &self.sha256)
    }

    /// How errors name it: the file it came from, and the version.
    pub fn label(&self) -> String {
        format!("{} (version {})", self.file, self.version)
    }

    /// The placeholders the config uses.
    pub fn variable_names(&self) -> Vec<String> {
        super::vars::referenced(&self.text)
    }

    /// Compiles it from its digest with these variables.
    pub fn compile(&self, vars: &Variables) -> Result<Config, ConfigErrors> {
        Config::from_digest(&self.digest, &self.text, &self.label(), vars)
    }
}

/// [`EDGE_CURRENT`]'s value for a version.
pub fn pointer(version: u64, sha256: &str) -> String {
    format!("{version} {sha256}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[gateway]\nname = \"x\"\n";

    #[test]
    fn an_edge_record_reads_back_whole() {
        let record = EdgeConfig::new(7, "ab12", "2026-12-06T00:00:00Z", "routes/gateway.toml", TEXT).expect("record");
        let bytes = record.encode();
        assert!(bytes.starts_with(b"pc1c 7 ab12 2026-12-06T00:00:00Z\nroutes/gateway.toml\n"));
        assert_eq!(EdgeConfig::decode(&bytes), Ok(record.clone()));
        assert_eq!(record.pointer(), "7 ab12");
    }

    #[test]
    fn a_damaged_edge_record_is_refused_with_why() {
        let record = EdgeConfig::new(7, "ab12", "t", "f", TEXT).expect("record").encode();
        for (bytes, why) in [
            (&b"pc1e 7"[..], "no `pc1c` head"),
            (&record[..record.len() - TEXT.len() - 5], "a short digest"),
            (b"pc1c 7 ab12\nf\n0\n", "the head is not"),
            (b"pc1c x ab12 t\nf\n0\n", "the version"),
            (b"pc1c 7 ab12 t\nf\n", "the digest length"),
            (b"pc1c 7 ab12 t\nf\n0", "no digest"),
        ] {
            let e = EdgeConfig::decode(bytes).expect_err("damaged");
            assert!(e.contains(why), "{e}");
        }
        assert!(EdgeConfig::new(1, "a b", "t", "f", TEXT).is_err());
        assert!(EdgeConfig::new(1, "a", "t", "f", "not = = toml").is_err());
    }
}
