//! Join tokens: what `wasmfleet init` prints and a new node needs to join the cluster.
//!
//! A token names the cluster, a few seed addresses, pins the cluster CA by the sha256
//! fingerprint of its certificate, and carries a 32-byte secret. Its text form is
//! `wft1.` + base64url (no padding) of the MessagePack encoding followed by a 4-byte
//! checksum (the first bytes of its sha256), so a mistyped or truncated token is reported as
//! such instead of failing later. The checksum is not a signature: whoever holds a token can
//! make another, and the token is as secret as the secret inside it.
//!
//! The joiner never sends the secret itself: it sends [`secret_proof`], an HMAC-SHA256 keyed
//! by the secret over its node id and a nonce. Use a nonce that the server chose (or TLS
//! channel-binding material) so a proof cannot be replayed elsewhere.

use std::fmt;
use std::net::SocketAddr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Prefix of the text form; the digit is the format version.
pub const TOKEN_PREFIX: &str = "wft1.";
/// Longest accepted token text, checked before decoding anything.
pub const MAX_TOKEN_LEN: usize = 4096;
const CHECKSUM_LEN: usize = 4;
const PROOF_DOMAIN: &[u8] = b"wasmfleet/join-proof/v1";

/// Why a token could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("join token is {len} bytes, more than the {max} allowed; was something else pasted?")]
    TooLong { len: usize, max: usize },
    #[error("join token must start with {TOKEN_PREFIX:?}; check that the whole token was copied")]
    WrongPrefix,
    #[error("join token is not valid base64url at byte {offset}; check that it was copied intact")]
    BadBase64 { offset: usize },
    #[error("join token checksum does not match; the token was altered or truncated")]
    Checksum,
    #[error("join token payload is malformed: {reason}")]
    BadPayload { reason: String },
    #[error("join token field {field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: &'static str },
}

/// Everything a node needs to join a cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub cluster_id: String,
    pub seeds: Vec<SocketAddr>,
    /// Lowercase hex sha256 of the cluster CA certificate DER.
    pub ca_fingerprint: String,
    pub secret: [u8; 32],
    /// Wall-clock expiry, milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("cluster_id", &self.cluster_id)
            .field("seeds", &self.seeds)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("secret", &"<redacted>")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl JoinToken {
    /// The text form: `wft1.` + base64url(msgpack ‖ checksum).
    pub fn encode(&self) -> String {
        // Serializing plain owned fields to a Vec cannot fail.
        let mut bytes = rmp_serde::to_vec(self).unwrap_or_default();
        let sum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&sum[..CHECKSUM_LEN]);
        format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Reads a token's text form (surrounding whitespace is ignored). Never panics.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        if text.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: text.len(), max: MAX_TOKEN_LEN });
        }
        let body = text.trim().strip_prefix(TOKEN_PREFIX).ok_or(TokenError::WrongPrefix)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|e| {
            let offset = match e {
                base64::DecodeError::InvalidByte(offset, _) | base64::DecodeError::InvalidLastSymbol(offset, _) => {
                    offset
                }
                _ => body.len(),
            };
            TokenError::BadBase64 { offset: offset + TOKEN_PREFIX.len() }
        })?;
        if bytes.len() < CHECKSUM_LEN {
            return Err(TokenError::Checksum);
        }
        let (payload, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if Sha256::digest(payload)[..CHECKSUM_LEN] != *sum {
            return Err(TokenError::Checksum);
        }
        let token: JoinToken =
            rmp_serde::from_slice(payload).map_err(|e| TokenError::BadPayload { reason: e.to_string() })?;
        token.validate()?;
        Ok(token)
    }

    /// Field rules, also run by [`JoinToken::parse`].
    pub fn validate(&self) -> Result<(), TokenError> {
        if crate::pki::parse_fingerprint(&self.ca_fingerprint).is_err() {
            return Err(TokenError::InvalidField {
                field: "ca_fingerprint",
                reason: "expected 64 lowercase hex characters",
            });
        }
        if self.seeds.is_empty() {
            return Err(TokenError::InvalidField { field: "seeds", reason: "no seed address" });
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > crate::pki::MAX_ID_LEN {
            return Err(TokenError::InvalidField { field: "cluster_id", reason: "must be 1-63 characters" });
        }
        Ok(())
    }

    /// True once `now_ms` (Unix milliseconds) has reached the expiry.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }

    /// Compares the secret in constant time.
    pub fn secret_matches(&self, other: &[u8; 32]) -> bool {
        constant_time_eq(&self.secret, other)
    }
}

/// A fresh random 32-byte secret for a token.
pub fn random_secret() -> [u8; 32] {
    rand::random()
}

/// Proof that the joiner `node_id` knows `secret`: HMAC-SHA256(secret, domain ‖ len ‖ node_id
/// ‖ len ‖ nonce), lengths as u32 big-endian so fields cannot be shifted into each other.
pub fn secret_proof(secret: &[u8; 32], node_id: &str, nonce: &[u8]) -> [u8; 32] {
    let mut message = Vec::with_capacity(PROOF_DOMAIN.len() + 8 + node_id.len() + nonce.len());
    message.extend_from_slice(PROOF_DOMAIN);
    for part in [node_id.as_bytes(), nonce] {
        message.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        message.extend_from_slice(part);
    }
    hmac_sha256(secret, &message)
}

/// Checks a [`secret_proof`] in constant time.
pub fn verify_secret_proof(secret: &[u8; 32], node_id: &str, nonce: &[u8], proof: &[u8; 32]) -> bool {
    constant_time_eq(&secret_proof(secret, node_id, nonce), proof)
}

fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new().chain_update(ipad).chain_update(message).finalize();
    Sha256::new().chain_update(opad).chain_update(inner).finalize().into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> JoinToken {
        JoinToken {
            cluster_id: "edge-eu".into(),
            seeds: vec!["10.0.0.1:7400".parse().unwrap(), "[fd00::2]:7400".parse().unwrap()],
            ca_fingerprint: "ab".repeat(32),
            secret: [7; 32],
            expires_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let text = t.encode();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert!(text.len() < 300, "token is {} chars", text.len());
        assert_eq!(JoinToken::parse(&text).unwrap(), t);
        assert_eq!(JoinToken::parse(&format!("  {text}\n")).unwrap(), t);
    }

    #[test]
    fn tampering_is_detected() {
        let text = sample().encode();
        for i in TOKEN_PREFIX.len()..text.len() {
            let mut bytes = text.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(JoinToken::parse(&tampered).is_err(), "byte {i} not detected");
        }
        assert!(JoinToken::parse(&text[..text.len() - 3]).is_err());
    }

    #[test]
    fn clear_errors() {
        assert_eq!(JoinToken::parse("xyz"), Err(TokenError::WrongPrefix));
        assert!(matches!(JoinToken::parse("wft1.@@@"), Err(TokenError::BadBase64 { .. })));
        assert!(matches!(JoinToken::parse(&"a".repeat(5000)), Err(TokenError::TooLong { .. })));
        // A valid checksum over a payload that is not a token.
        let mut junk = b"hello".to_vec();
        let sum = Sha256::digest(&junk);
        junk.extend_from_slice(&sum[..4]);
        let text = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(junk));
        assert!(matches!(JoinToken::parse(&text), Err(TokenError::BadPayload { .. })));
        let mut bad = sample();
        bad.ca_fingerprint = "nothex".into();
        assert!(matches!(
            JoinToken::parse(&bad.encode()),
            Err(TokenError::InvalidField { field: "ca_fingerprint", .. })
        ));
    }

    #[test]
    fn expiry() {
        let t = sample();
        assert!(!t.is_expired(t.expires_at_ms - 1));
        assert!(t.is_expired(t.expires_at_ms));
    }

    #[test]
    fn secrets_and_proofs() {
        let t = sample();
        assert!(t.secret_matches(&[7; 32]));
        assert!(!t.secret_matches(&[8; 32]));
        let p = secret_proof(&t.secret, "node-1", b"nonce");
        assert!(verify_secret_proof(&t.secret, "node-1", b"nonce", &p));
        assert!(!verify_secret_proof(&t.secret, "node-2", b"nonce", &p));
        assert!(!verify_secret_proof(&t.secret, "node-1", b"nonc3", &p));
        assert!(!verify_secret_proof(&[8; 32], "node-1", b"nonce", &p));
        // Field boundaries are unambiguous.
        assert_ne!(secret_proof(&t.secret, "ab", b"c"), secret_proof(&t.secret, "a", b"bc"));
        assert!(!format!("{t:?}").contains("7, 7"));
    }

    #[test]
    fn hmac_matches_rfc4231_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; check our fixed-size variant against a
        // zero-padded key, which HMAC treats identically.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        let mac = hmac_sha256(&key, b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(s in ".{0,600}") {
            let _ = JoinToken::parse(&s);
            let _ = JoinToken::parse(&format!("{TOKEN_PREFIX}{s}"));
        }

        #[test]
        fn random_payload_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut with_sum = bytes.clone();
            let sum = Sha256::digest(&bytes);
            with_sum.extend_from_slice(&sum[..4]);
            let _ = JoinToken::parse(&format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&with_sum)));
        }
    }
}
