//! API keys: the SHA-256 of the presented key names a consumer (the config
//! holds only hashes). A hash lookup is as fast as a cached token.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::{AuthError, Challenge, Identity};
use crate::config::auth::ApiKeyProvider;

pub(crate) fn verify(keys: &ApiKeyProvider, key: &str, challenge: &Challenge) -> Result<Arc<Identity>, AuthError> {
    let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
    match keys.consumers.get(&digest) {
        Some(consumer) => Ok(consumer.clone()),
        None => Err(AuthError::InvalidToken {
            reason: "unknown_key",
            description: "the API key is not valid".into(),
            challenge: challenge.clone(),
        }),
    }
}
