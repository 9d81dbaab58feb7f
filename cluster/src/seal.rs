//! Authenticated encryption of gossip datagrams.
//!
//! Chitchat has no authentication or encryption of its own: anyone who can send UDP to the
//! gossip port and knows the cluster id could inject node states. Every gossip datagram is
//! therefore sealed with the cluster's [`GossipKey`] before it leaves the node, and opened (or
//! dropped) before chitchat sees it.
//!
//! Wire format of a sealed packet:
//!
//! ```text
//! version (1 byte, = 1) | nonce (24 bytes, random) | XChaCha20-Poly1305( timestamp_ms u64 BE | plaintext )
//! ```
//!
//! with the cluster id as associated data, so a packet sealed for another cluster never opens.
//! [`Sealer::open`] rejects packets whose timestamp is more than [`MAX_CLOCK_SKEW_MS`] away
//! from the receiver's clock, and packets whose nonce it has already accepted within that
//! window (replay). The replay memory is bounded ([`REPLAY_CACHE_CAPACITY`] entries); when it
//! is full the entry closest to expiry is evicted and a watermark makes every packet at least
//! that old count as stale, so eviction never re-opens a replay.
//!
//! The core reads no clock: `now_ms` (milliseconds since the Unix epoch) is passed in.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Version byte of the sealed packet format.
pub const SEAL_VERSION: u8 = 1;
/// Length of the XChaCha20 nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Length of the timestamp carried inside the ciphertext.
pub const TIMESTAMP_LEN: usize = 8;
/// Bytes a sealed packet adds to its plaintext.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TIMESTAMP_LEN + TAG_LEN;
/// Largest packet [`Sealer::open`] accepts (the largest UDP payload over IPv4).
pub const MAX_PACKET_LEN: usize = 65_507;
/// Largest plaintext whose sealed packet still fits in [`MAX_PACKET_LEN`].
pub const MAX_PLAINTEXT_LEN: usize = MAX_PACKET_LEN - SEAL_OVERHEAD;
/// How far a packet's timestamp may be from the receiver's clock, either way.
pub const MAX_CLOCK_SKEW_MS: u64 = 30_000;
/// Most nonces remembered for replay detection.
pub const REPLAY_CACHE_CAPACITY: usize = 64 * 1024;

/// The symmetric key that seals gossip (32 bytes, shared by every node of a cluster).
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(pub [u8; 32]);

impl GossipKey {
    /// A fresh random key.
    pub fn generate() -> GossipKey {
        GossipKey(rand::random())
    }

    /// Lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (surrounding whitespace is ignored).
    pub fn from_hex(text: &str) -> Result<GossipKey, SealError> {
        let text = text.trim();
        let bytes = hex::decode(text).map_err(|_| SealError::BadKey { reason: "not hexadecimal".to_string() })?;
        let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| SealError::BadKey {
            reason: format!("expected 32 bytes (64 hex characters), got {}", bytes.len()),
        })?;
        Ok(GossipKey(key))
    }
}

impl FromStr for GossipKey {
    type Err = SealError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        GossipKey::from_hex(text)
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret.
        f.write_str("GossipKey(..)")
    }
}

/// Why a packet could not be opened (or a key parsed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed packet too short: {len} bytes, at least {min} needed")]
    TooShort { len: usize, min: usize },
    #[error("sealed packet too long: {len} bytes, at most {max} allowed")]
    TooLong { len: usize, max: usize },
    #[error("unknown sealed packet version {version} (expected {SEAL_VERSION})")]
    BadVersion { version: u8 },
    #[error("sealed packet failed authentication (wrong key or cluster id, or tampered)")]
    Authentication,
    #[error("sealed packet timestamp {timestamp_ms} ms is outside ±{MAX_CLOCK_SKEW_MS} ms of now ({now_ms} ms)")]
    Stale { timestamp_ms: u64, now_ms: u64 },
    #[error("sealed packet replayed (nonce already seen)")]
    Replay,
    #[error("invalid gossip key: {reason}")]
    BadKey { reason: String },
}

impl SealError {
    /// A short stable label, for counters and rate-limited logs.
    pub fn reason(&self) -> &'static str {
        match self {
            SealError::TooShort { .. } | SealError::TooLong { .. } => "malformed",
            SealError::BadVersion { .. } => "bad_version",
            SealError::Authentication => "authentication",
            SealError::Stale { .. } => "stale",
            SealError::Replay => "replay",
            SealError::BadKey { .. } => "bad_key",
        }
    }
}

/// Seals and opens gossip packets for one cluster with one key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    cluster_id: Vec<u8>,
    replay: Mutex<ReplayCache>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer").field("cluster_id", &String::from_utf8_lossy(&self.cluster_id)).finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(key: &GossipKey, cluster_id: &str) -> Sealer {
        Sealer::with_replay_capacity(key, cluster_id, REPLAY_CACHE_CAPACITY)
    }

    /// As [`Sealer::new`] with a chosen replay-cache capacity (at least 1).
    pub fn with_replay_capacity(key: &GossipKey, cluster_id: &str, capacity: usize) -> Sealer {
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key.0)),
            cluster_id: cluster_id.as_bytes().to_vec(),
            replay: Mutex::new(ReplayCache::new(capacity.max(1))),
        }
    }

    /// Seals `plaintext` stamped with `now_ms`. The result is `plaintext.len() + SEAL_OVERHEAD`
    /// bytes; callers keep `plaintext` within [`MAX_PLAINTEXT_LEN`] for it to fit a datagram.
    pub fn seal(&self, plaintext: &[u8], now_ms: u64) -> Vec<u8> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let mut inner = Vec::with_capacity(TIMESTAMP_LEN + plaintext.len());
        inner.extend_from_slice(&now_ms.to_be_bytes());
        inner.extend_from_slice(plaintext);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: &inner, aad: &self.cluster_id })
            // Encryption fails only for messages over ~256 GiB.
            .expect("xchacha20poly1305 encryption of a bounded message");
        let mut packet = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        packet.push(SEAL_VERSION);
        packet.extend_from_slice(&nonce);
        packet.extend_from_slice(&ciphertext);
        packet
    }

    /// Opens a packet sealed by [`Sealer::seal`] with the same key and cluster id, checking
    /// its freshness against `now_ms` and that it was not accepted before.
    pub fn open(&self, packet: &[u8], now_ms: u64) -> Result<Vec<u8>, SealError> {
        if packet.len() < SEAL_OVERHEAD {
            return Err(SealError::TooShort { len: packet.len(), min: SEAL_OVERHEAD });
        }
        if packet.len() > MAX_PACKET_LEN {
            return Err(SealError::TooLong { len: packet.len(), max: MAX_PACKET_LEN });
        }
        if packet[0] != SEAL_VERSION {
            return Err(SealError::BadVersion { version: packet[0] });
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&packet[1..1 + NONCE_LEN]);
        let inner = self
            .cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &packet[1 + NONCE_LEN..], aad: &self.cluster_id })
            .map_err(|_| SealError::Authentication)?;
        let (timestamp, plaintext) = inner.split_at(TIMESTAMP_LEN);
        let mut timestamp_bytes = [0u8; TIMESTAMP_LEN];
        timestamp_bytes.copy_from_slice(timestamp);
        let timestamp_ms = u64::from_be_bytes(timestamp_bytes);
        if timestamp_ms.abs_diff(now_ms) > MAX_CLOCK_SKEW_MS {
            return Err(SealError::Stale { timestamp_ms, now_ms });
        }
        let mut replay = self.replay.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        replay.check_and_insert(nonce, timestamp_ms, now_ms)?;
        Ok(plaintext.to_vec())
    }

    /// Nonces currently remembered for replay detection.
    pub fn replay_cache_len(&self) -> usize {
        self.replay.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }
}

/// Nonces of accepted packets, each kept until its packet would be stale anyway.
#[derive(Debug)]
struct ReplayCache {
    capacity: usize,
    seen: HashSet<[u8; NONCE_LEN]>,
    /// (expiry_ms, nonce), ordered by expiry for eviction.
    by_expiry: BTreeSet<(u64, [u8; NONCE_LEN])>,
    /// Packets whose expiry is at or below this were evicted early: treat them as stale.
    evicted_watermark_ms: u64,
}

impl ReplayCache {
    fn new(capacity: usize) -> ReplayCache {
        ReplayCache { capacity, seen: HashSet::new(), by_expiry: BTreeSet::new(), evicted_watermark_ms: 0 }
    }

    fn len(&self) -> usize {
        self.seen.len()
    }

    fn check_and_insert(&mut self, nonce: [u8; NONCE_LEN], timestamp_ms: u64, now_ms: u64) -> Result<(), SealError> {
        // Forget nonces whose packets are now stale: a replay of them fails the time check.
        while let Some(&(expiry_ms, old)) = self.by_expiry.first() {
            if expiry_ms >= now_ms {
                break;
            }
            self.by_expiry.pop_first();
            self.seen.remove(&old);
        }
        let expiry_ms = timestamp_ms.saturating_add(MAX_CLOCK_SKEW_MS);
        if expiry_ms <= self.evicted_watermark_ms {
            return Err(SealError::Stale { timestamp_ms, now_ms });
        }
        if self.seen.contains(&nonce) {
            return Err(SealError::Replay);
        }
        while self.seen.len() >= self.capacity {
            let Some((evicted_expiry_ms, old)) = self.by_expiry.pop_first() else {
                break;
            };
            self.seen.remove(&old);
            self.evicted_watermark_ms = self.evicted_watermark_ms.max(evicted_expiry_ms);
            if expiry_ms <= self.evicted_watermark_ms {
                return Err(SealError::Stale { timestamp_ms, now_ms });
            }
        }
        self.seen.insert(nonce);
        self.by_expiry.insert((expiry_ms, nonce));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn sealer() -> Sealer {
        Sealer::new(&GossipKey([7; 32]), "cluster-a")
    }

    #[test]
    fn round_trip() {
        let sealer = sealer();
        let packet = sealer.seal(b"hello gossip", NOW);
        assert_eq!(packet.len(), b"hello gossip".len() + SEAL_OVERHEAD);
        assert_eq!(packet[0], SEAL_VERSION);
        assert_eq!(sealer.open(&packet, NOW + 10).unwrap(), b"hello gossip");
        let empty = sealer.seal(b"", NOW);
        assert_eq!(sealer.open(&empty, NOW).unwrap(), b"");
    }

    #[test]
    fn key_hex_round_trip() {
        let key = GossipKey::generate();
        let parsed: GossipKey = key.to_hex().parse().unwrap();
        assert_eq!(parsed, key);
        assert_eq!(format!("{key:?}"), "GossipKey(..)");
        assert!(GossipKey::from_hex("zz").is_err());
        assert!(GossipKey::from_hex("abcd").is_err());
        assert_ne!(GossipKey::generate(), key);
    }

    #[test]
    fn wrong_key_or_cluster_is_rejected() {
        let packet = sealer().seal(b"x", NOW);
        let other_key = Sealer::new(&GossipKey([8; 32]), "cluster-a");
        assert_eq!(other_key.open(&packet, NOW), Err(SealError::Authentication));
        let other_cluster = Sealer::new(&GossipKey([7; 32]), "cluster-b");
        assert_eq!(other_cluster.open(&packet, NOW), Err(SealError::Authentication));
    }

    #[test]
    fn tampering_and_truncation_are_rejected() {
        let sealer = sealer();
        let packet = sealer.seal(b"some plaintext", NOW);
        for byte in 1..packet.len() {
            let mut flipped = packet.clone();
            flipped[byte] ^= 0x01;
            assert_eq!(sealer.open(&flipped, NOW), Err(SealError::Authentication));
        }
        let mut bad_version = packet.clone();
        bad_version[0] = 2;
        assert_eq!(sealer.open(&bad_version, NOW), Err(SealError::BadVersion { version: 2 }));
        assert!(matches!(sealer.open(&packet[..SEAL_OVERHEAD - 1], NOW), Err(SealError::TooShort { .. })));
        assert_eq!(sealer.open(&packet[..packet.len() - 1], NOW), Err(SealError::Authentication));
        assert!(matches!(sealer.open(&vec![SEAL_VERSION; MAX_PACKET_LEN + 1], NOW), Err(SealError::TooLong { .. })));
        // The genuine packet still opens afterwards: failures leave no trace.
        assert!(sealer.open(&packet, NOW).is_ok());
    }

    #[test]
    fn replay_is_rejected() {
        let sealer = sealer();
        let packet = sealer.seal(b"once", NOW);
        assert!(sealer.open(&packet, NOW).is_ok());
        assert_eq!(sealer.open(&packet, NOW + 1_000), Err(SealError::Replay));
        // Once the packet is stale the nonce is forgotten, and the time check rejects it.
        assert!(matches!(sealer.open(&packet, NOW + MAX_CLOCK_SKEW_MS + 1), Err(SealError::Stale { .. })));
        // Accepting a later packet evicts the expired nonce.
        let later = NOW + MAX_CLOCK_SKEW_MS + 1;
        assert!(sealer.open(&sealer.seal(b"later", later), later).is_ok());
        assert_eq!(sealer.replay_cache_len(), 1);
    }

    #[test]
    fn stale_and_future_are_rejected() {
        let sealer = sealer();
        let packet = sealer.seal(b"x", NOW);
        assert!(matches!(sealer.open(&packet, NOW + MAX_CLOCK_SKEW_MS + 1), Err(SealError::Stale { .. })));
        assert!(matches!(sealer.open(&packet, NOW - MAX_CLOCK_SKEW_MS - 1), Err(SealError::Stale { .. })));
        assert!(sealer.open(&packet, NOW + MAX_CLOCK_SKEW_MS).is_ok());
    }

    #[test]
    fn replay_cache_is_bounded_and_stays_safe_when_full() {
        let sealer = Sealer::with_replay_capacity(&GossipKey([7; 32]), "cluster-a", 4);
        let packets: Vec<Vec<u8>> = (0..6).map(|i| sealer.seal(b"p", NOW + i)).collect();
        for packet in &packets {
            assert!(sealer.open(packet, NOW + 10).is_ok());
        }
        assert_eq!(sealer.replay_cache_len(), 4);
        // Evicted packets cannot be replayed: they are older than the watermark.
        for packet in &packets {
            assert!(sealer.open(packet, NOW + 10).is_err());
        }
        // A packet newer than every evicted one is still accepted.
        assert!(sealer.open(&sealer.seal(b"p", NOW + 100), NOW + 100).is_ok());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_open(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let sealer = sealer();
            let mut packet = bytes.clone();
            prop_assert!(sealer.open(&packet, NOW).is_err());
            if !packet.is_empty() {
                packet[0] = SEAL_VERSION;
            }
            prop_assert!(sealer.open(&packet, NOW).is_err());
        }
    }
}
