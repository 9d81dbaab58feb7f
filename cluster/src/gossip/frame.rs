//! Fragmentation of chitchat datagrams that no longer fit one UDP datagram once sealed.
//!
//! Chitchat fills a reply up to its own hard-coded MTU of 65 507 bytes (the IPv4 UDP maximum),
//! so a sealed datagram — [`SEAL_OVERHEAD`](crate::seal::SEAL_OVERHEAD) bytes larger — may not
//! fit. Such a datagram is split into at most [`MAX_FRAGMENTS`] frames, each sealed on its
//! own; the receiver reassembles them. Every sealed plaintext starts with a frame header:
//!
//! ```text
//! count (u8, 1..=4) | index (u8, < count) | message id (u64 BE, random; only when count > 1) | chunk
//! ```
//!
//! Almost every datagram is one frame, so its header is two bytes.
//!
//! The reassembly buffer is bounded ([`MAX_PENDING`] messages, [`PENDING_TIMEOUT_MS`] each)
//! and only ever holds frames that opened, i.e. came from a holder of the cluster key.
//! Pure core: no clock, no I/O.

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::seal::MAX_PLAINTEXT_LEN;

/// Bytes of the header of a fragment (a datagram split into several frames).
pub const FRAME_HEADER_LEN: usize = 1 + 1 + 8;
/// Bytes of the header of a datagram carried whole in one frame.
pub const SINGLE_FRAME_HEADER_LEN: usize = 2;
/// Largest chunk of a chitchat datagram carried by one frame.
pub const MAX_CHUNK_LEN: usize = MAX_PLAINTEXT_LEN - FRAME_HEADER_LEN;
/// Most frames one datagram may be split into.
pub const MAX_FRAGMENTS: usize = 4;
/// Largest datagram that can be framed.
pub const MAX_DATAGRAM_LEN: usize = MAX_CHUNK_LEN * MAX_FRAGMENTS;
/// Most partially received messages held at once.
pub const MAX_PENDING: usize = 16;
/// How long a partially received message is kept.
pub const PENDING_TIMEOUT_MS: u64 = 2_000;

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame shorter than its header")]
    TooShort,
    #[error("frame header out of range (count {count}, index {index})")]
    BadHeader { count: u8, index: u8 },
    #[error("datagram of {len} bytes is too large to frame")]
    TooLarge { len: usize },
}

/// Splits `datagram` into frames (one frame when it fits). `message_id` must be random; it is
/// written only when there is more than one frame.
pub fn split(datagram: &[u8], message_id: u64) -> Result<Vec<Vec<u8>>, FrameError> {
    if datagram.len() > MAX_DATAGRAM_LEN {
        return Err(FrameError::TooLarge { len: datagram.len() });
    }
    if datagram.len() <= MAX_CHUNK_LEN {
        let mut frame = Vec::with_capacity(SINGLE_FRAME_HEADER_LEN + datagram.len());
        frame.extend_from_slice(&[1, 0]);
        frame.extend_from_slice(datagram);
        return Ok(vec![frame]);
    }
    let count = datagram.len().div_ceil(MAX_CHUNK_LEN);
    // Even chunks, so both frames stay well under the limit.
    let chunk_len = datagram.len().div_ceil(count);
    Ok(datagram
        .chunks(chunk_len)
        .enumerate()
        .map(|(index, chunk)| {
            let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + chunk.len());
            frame.push(count as u8);
            frame.push(index as u8);
            frame.extend_from_slice(&message_id.to_be_bytes());
            frame.extend_from_slice(chunk);
            frame
        })
        .collect())
}

#[derive(Debug)]
struct Pending {
    first_seen_ms: u64,
    parts: Vec<Option<Vec<u8>>>,
}

/// Reassembles framed datagrams, per sender.
#[derive(Debug, Default)]
pub struct Reassembler {
    pending: HashMap<(SocketAddr, u64), Pending>,
}

impl Reassembler {
    /// Handles one opened frame from `from`; returns the whole datagram once complete.
    pub fn handle_frame(&mut self, from: SocketAddr, frame: &[u8], now_ms: u64) -> Result<Option<Vec<u8>>, FrameError> {
        if frame.len() < SINGLE_FRAME_HEADER_LEN {
            return Err(FrameError::TooShort);
        }
        let (count, index) = (frame[0], frame[1]);
        if count == 0 || usize::from(count) > MAX_FRAGMENTS || index >= count {
            return Err(FrameError::BadHeader { count, index });
        }
        if count == 1 {
            return Ok(Some(frame[SINGLE_FRAME_HEADER_LEN..].to_vec()));
        }
        if frame.len() < FRAME_HEADER_LEN {
            return Err(FrameError::TooShort);
        }
        let chunk = &frame[FRAME_HEADER_LEN..];
        let mut id_bytes = [0u8; 8];
        id_bytes.copy_from_slice(&frame[2..10]);
        let key = (from, u64::from_be_bytes(id_bytes));
        self.pending.retain(|_, pending| now_ms.saturating_sub(pending.first_seen_ms) < PENDING_TIMEOUT_MS);
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_PENDING {
            let oldest = self.pending.iter().min_by_key(|(_, pending)| pending.first_seen_ms).map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.pending.remove(&oldest);
            }
        }
        let pending = self
            .pending
            .entry(key)
            .or_insert_with(|| Pending { first_seen_ms: now_ms, parts: vec![None; usize::from(count)] });
        if pending.parts.len() != usize::from(count) {
            return Err(FrameError::BadHeader { count, index });
        }
        pending.parts[usize::from(index)] = Some(chunk.to_vec());
        if pending.parts.iter().any(Option::is_none) {
            return Ok(None);
        }
        let parts = self.pending.remove(&key).map(|pending| pending.parts).unwrap_or_default();
        Ok(Some(parts.into_iter().flatten().flatten().collect()))
    }

    /// Messages currently partially received.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        ([127, 0, 0, 1], port).into()
    }

    #[test]
    fn small_datagram_is_one_frame() {
        let frames = split(b"abc", 99).unwrap();
        assert_eq!(frames, vec![b"\x01\x00abc".to_vec()]);
        let mut reassembler = Reassembler::default();
        assert_eq!(reassembler.handle_frame(peer(1), &frames[0], 0).unwrap(), Some(b"abc".to_vec()));
    }

    #[test]
    fn largest_chitchat_datagram_round_trips_in_two_frames() {
        let datagram: Vec<u8> = (0..65_507u32).map(|i| i as u8).collect();
        let frames = split(&datagram, 7).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(frames.iter().all(|frame| frame.len() <= MAX_PLAINTEXT_LEN));
        let mut reassembler = Reassembler::default();
        // Out of order, interleaved with another sender's frame.
        assert_eq!(reassembler.handle_frame(peer(1), &frames[1], 0).unwrap(), None);
        assert_eq!(reassembler.handle_frame(peer(2), &frames[0], 0).unwrap(), None);
        assert_eq!(reassembler.handle_frame(peer(1), &frames[0], 1).unwrap(), Some(datagram));
        assert_eq!(reassembler.pending_len(), 1);
    }

    #[test]
    fn bad_frames_and_bounds() {
        let mut reassembler = Reassembler::default();
        assert_eq!(reassembler.handle_frame(peer(1), &[1], 0), Err(FrameError::TooShort));
        assert_eq!(reassembler.handle_frame(peer(1), &[1, 0], 0), Ok(Some(Vec::new())));
        assert_eq!(reassembler.handle_frame(peer(1), &[2, 0, 0, 0], 0), Err(FrameError::TooShort));
        assert!(reassembler.handle_frame(peer(1), &[0; 10], 0).is_err());
        assert!(reassembler.handle_frame(peer(1), &[2, 2, 0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
        assert!(reassembler.handle_frame(peer(1), &[9, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
        assert!(split(&vec![0; MAX_DATAGRAM_LEN + 1], 1).is_err());
        for id in 0..100u64 {
            let mut frame = vec![2, 0];
            frame.extend_from_slice(&id.to_be_bytes());
            reassembler.handle_frame(peer(1), &frame, id).unwrap();
        }
        assert_eq!(reassembler.pending_len(), MAX_PENDING);
        reassembler.handle_frame(peer(1), &split(b"x", 0).unwrap()[0], 10_000).unwrap();
        let mut frame = vec![2, 0];
        frame.extend_from_slice(&5000u64.to_be_bytes());
        reassembler.handle_frame(peer(1), &frame, 10_000).unwrap();
        assert_eq!(reassembler.pending_len(), 1, "expired entries are dropped");
    }
}
