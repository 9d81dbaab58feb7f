//! Replication messages on the wire: one version byte ([`WIRE_VERSION`]), then the message in
//! MessagePack (named fields, so fields can be added with `#[serde(default)]`).
//!
//! | request | answer |
//! |---|---|
//! | `Summary` | `Summary`: every key and version the peer holds |
//! | `Pull { keys }` | `Entries`: those of `keys` the peer holds |
//! | `Push { entries }` | `Ack { won }`: merged durably, `won` keys changed |
//!
//! Everything decoded comes from a peer: messages are bounded in bytes before decoding and in
//! items after ([`WireLimits`]); nothing in here panics on malformed input.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::entry::{Entry, Key};
use super::summary::Summary;

/// The version byte in front of every message. A receiver refuses other versions.
pub const WIRE_VERSION: u8 = 1;

/// A replication request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request<V> {
    /// Every key and version the peer holds.
    Summary,
    /// The entries of these keys.
    Pull { keys: Vec<Key> },
    /// Merge these entries (a write's fan-out); answered once they are durable.
    Push { entries: Vec<Entry<V>> },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response<V> {
    Summary(Summary),
    Entries(Vec<Entry<V>>),
    /// The pushed entries are durable; `won` of them changed the peer's state.
    Ack {
        won: u64,
    },
}

impl<V> Request<V> {
    /// Its name, for errors.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Summary => "Summary",
            Request::Pull { .. } => "Pull",
            Request::Push { .. } => "Push",
        }
    }

    /// Items it carries (keys or entries), for [`WireLimits::max_items`].
    fn items(&self) -> usize {
        match self {
            Request::Summary => 0,
            Request::Pull { keys } => keys.len(),
            Request::Push { entries } => entries.len(),
        }
    }
}

impl<V> Response<V> {
    fn items(&self) -> usize {
        match self {
            Response::Summary(s) => s.len(),
            Response::Entries(e) => e.len(),
            Response::Ack { .. } => 0,
        }
    }
}

/// Bounds on what a node decodes from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest message, in bytes (default 16 MiB, the mesh's frame limit).
    pub max_message_bytes: usize,
    /// Most keys in a pull or summary, or entries in a push or answer (default 1 Mi).
    pub max_items: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits { max_message_bytes: 16 * 1024 * 1024, max_items: 1 << 20 }
    }
}

/// Why a message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty message")]
    Empty,
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("message carries {count} items, more than the limit of {max}")]
    TooManyItems { count: usize, max: usize },
    #[error("unsupported replication wire version {got} (this node speaks {WIRE_VERSION})")]
    Version { got: u8 },
    #[error("undecodable message: {reason}")]
    Decode { reason: String },
    #[error("could not encode a message: {reason}")]
    Encode { reason: String },
}

/// Encodes a message with its version byte.
pub fn encode<T: Serialize>(message: &T) -> Result<Bytes, WireError> {
    let mut out = vec![WIRE_VERSION];
    rmp_serde::encode::write_named(&mut out, message).map_err(|e| WireError::Encode { reason: e.to_string() })?;
    Ok(Bytes::from(out))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], limits: &WireLimits) -> Result<T, WireError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(WireError::TooLarge { len: bytes.len(), max: limits.max_message_bytes });
    }
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::Version { got: version });
    }
    rmp_serde::from_slice(body).map_err(|e| WireError::Decode { reason: e.to_string() })
}

fn bounded(count: usize, limits: &WireLimits) -> Result<(), WireError> {
    if count > limits.max_items {
        return Err(WireError::TooManyItems { count, max: limits.max_items });
    }
    Ok(())
}

/// Decodes a request from a peer, within `limits`.
pub fn decode_request<V: DeserializeOwned>(bytes: &[u8], limits: &WireLimits) -> Result<Request<V>, WireError> {
    let request: Request<V> = decode(bytes, limits)?;
    bounded(request.items(), limits)?;
    Ok(request)
}

/// Decodes a peer's answer, within `limits`.
pub fn decode_response<V: DeserializeOwned>(bytes: &[u8], limits: &WireLimits) -> Result<Response<V>, WireError> {
    let response: Response<V> = decode(bytes, limits)?;
    bounded(response.items(), limits)?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Version;

    fn v(wall_ms: u64) -> Version {
        Version { wall_ms, counter: 1, node: 2 }
    }

    #[test]
    fn messages_round_trip() {
        let limits = WireLimits::default();
        let requests: Vec<Request<String>> = vec![
            Request::Summary,
            Request::Pull { keys: vec!["a".into(), "b".into()] },
            Request::Push { entries: vec![Entry::live("a", v(1), "x".to_string()), Entry::tombstone("b", v(2))] },
        ];
        for r in requests {
            assert_eq!(decode_request::<String>(&encode(&r).unwrap(), &limits).unwrap(), r);
        }
        let responses: Vec<Response<String>> = vec![
            Response::Summary(vec![("b".to_string(), v(2)), ("a".to_string(), v(1))].into()),
            Response::Entries(vec![Entry::live("a", v(1), "x".to_string())]),
            Response::Ack { won: 3 },
        ];
        for r in responses {
            assert_eq!(decode_response::<String>(&encode(&r).unwrap(), &limits).unwrap(), r);
        }
    }

    #[test]
    fn malformed_or_oversized_input_is_an_error() {
        let limits = WireLimits { max_message_bytes: 64, max_items: 2 };
        assert_eq!(decode_request::<String>(&[], &limits), Err(WireError::Empty));
        assert_eq!(decode_request::<String>(&[9, 0x90], &limits), Err(WireError::Version { got: 9 }));
        assert!(matches!(decode_request::<String>(&[WIRE_VERSION, 0xc1], &limits), Err(WireError::Decode { .. })));
        assert!(matches!(decode_request::<String>(&[WIRE_VERSION; 65], &limits), Err(WireError::TooLarge { .. })));
        let three = encode(&Request::<String>::Pull { keys: vec!["a".into(), "b".into(), "c".into()] }).unwrap();
        assert_eq!(decode_request::<String>(&three, &limits), Err(WireError::TooManyItems { count: 3, max: 2 }));
        // A huge claimed length with no bytes behind it fails without allocating it.
        let mut lying = encode(&Request::<String>::Pull { keys: vec![] }).unwrap().to_vec();
        let array = lying.iter().rposition(|&b| b == 0x90).unwrap();
        lying.splice(array..=array, [0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decode_request::<String>(&lying, &WireLimits::default()), Err(WireError::Decode { .. })));
    }
}
