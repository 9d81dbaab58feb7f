//! Wire format of the mesh: length-prefixed frames on QUIC streams.
//!
//! Every frame is a u32 big-endian length followed by that many bytes, bounded by the
//! reader's `max_frame_bytes`. One call is one bidirectional stream: the client sends one
//! request frame, `RequestHeader` (MessagePack) followed by the body, and finishes the stream;
//! the server answers one response frame, a status byte followed by the body (the handler's
//! answer, or a UTF-8 error message). The first stream of every connection is a hello that
//! carries [`HELLO`] both ways, so a client learns whether the server accepted its certificate
//! before it uses the connection.

use bytes::Bytes;
use quinn::{RecvStream, SendStream, VarInt};
use serde::{Deserialize, Serialize};

/// Version in [`RequestHeader::version`].
pub const PROTOCOL_VERSION: u16 = 1;
/// Payload of the hello frame, both directions.
pub const HELLO: &[u8] = b"wasmfleet/1 hello";
/// Stream stop code: the request frame was larger than the server accepts.
pub const STOP_FRAME_TOO_LARGE: VarInt = VarInt::from_u32(1);
/// Stream stop code: a malformed request.
pub const STOP_BAD_REQUEST: VarInt = VarInt::from_u32(2);
/// Most bytes a request header may take.
pub const MAX_HEADER_BYTES: usize = 64;

/// The header in front of every request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    pub version: u16,
    /// Time the caller will wait, in milliseconds from when it sent the request.
    pub deadline_ms: u32,
    /// [`KIND_CALL`] (one request frame, one response frame) or [`KIND_STREAM`] (the first
    /// frame opens the stream; the [`StreamHandler`](super::StreamHandler) owns the rest).
    #[serde(default)]
    pub kind: u8,
    /// Which handler serves it: for [`KIND_STREAM`] a stream handler (below
    /// [`STREAM_CHANNELS`]); for [`KIND_CALL`] a call handler (below [`CALL_CHANNELS`]; 0 is
    /// the mesh's main handler, and what peers that predate channels send).
    #[serde(default)]
    pub channel: u8,
}

/// Number of stream channels a mesh serves, each with its own
/// [`StreamHandler`](super::StreamHandler).
pub const STREAM_CHANNELS: usize = 8;

/// Number of call channels a mesh serves, each with its own [`Handler`](super::Handler).
pub const CALL_CHANNELS: usize = 8;

/// [`RequestHeader::kind`]: a request/response call.
pub const KIND_CALL: u8 = 0;
/// [`RequestHeader::kind`]: an open stream handed to the stream handler.
pub const KIND_STREAM: u8 = 1;

/// First byte of a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Ok = 0,
    /// The handler returned an error; body is its message.
    HandlerError = 1,
    /// The handler did not finish before the deadline.
    DeadlineExceeded = 2,
    /// The request frame exceeded the server's limit.
    FrameTooLarge = 3,
    /// Malformed header or unsupported version; body says which.
    BadRequest = 4,
}

impl Status {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Ok,
            1 => Self::HandlerError,
            2 => Self::DeadlineExceeded,
            3 => Self::FrameTooLarge,
            4 => Self::BadRequest,
            _ => return None,
        })
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: u64, max: usize },
    #[error("stream ended inside a frame")]
    Truncated,
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("stream already closed")]
    Closed,
}

/// Writes one frame made of `parts` (concatenated) and finishes nothing.
pub async fn write_frame(send: &mut SendStream, parts: &[&[u8]], max: usize) -> Result<(), FrameError> {
    let buf = encode_frame(parts, &[], max)?;
    send.write_all(&buf).await?;
    Ok(())
}

/// One frame made of `parts`, followed by `trailing` raw bytes (outside the frame), in one
/// buffer: a single write wakes the connection once and usually leaves in one packet.
pub fn encode_frame(parts: &[&[u8]], trailing: &[u8], max: usize) -> Result<Vec<u8>, FrameError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > max || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    let mut buf = Vec::with_capacity(4 + len + trailing.len());
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    for part in parts {
        buf.extend_from_slice(part);
    }
    buf.extend_from_slice(trailing);
    Ok(buf)
}

/// Reads the length prefix of a frame and checks it against `max`.
pub async fn read_frame_len(recv: &mut RecvStream, max: usize) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    read_exact(recv, &mut len).await?;
    let len = u32::from_be_bytes(len);
    match usize::try_from(len) {
        Ok(len) if len <= max => Ok(len),
        _ => Err(FrameError::TooLarge { len: u64::from(len), max }),
    }
}

/// Reads one whole frame of at most `max` bytes.
pub async fn read_frame(recv: &mut RecvStream, max: usize) -> Result<Bytes, FrameError> {
    let len = read_frame_len(recv, max).await?;
    read_body(recv, len).await
}

/// Reads the `len` bytes of a frame whose prefix was read.
pub async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, FrameError> {
    let mut buf = vec![0u8; len];
    read_exact(recv, &mut buf).await?;
    Ok(Bytes::from(buf))
}

async fn read_exact(recv: &mut RecvStream, buf: &mut [u8]) -> Result<(), FrameError> {
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(_) => FrameError::Truncated,
        quinn::ReadExactError::ReadError(e) => FrameError::Read(e),
    })
}

/// Encodes a request header.
pub fn encode_header(header: &RequestHeader) -> Vec<u8> {
    // Two integers into a Vec: cannot fail.
    rmp_serde::to_vec(header).unwrap_or_default()
}

/// Splits a request payload into its header and body.
pub fn decode_request(payload: &Bytes) -> Result<(RequestHeader, Bytes), String> {
    let mut cursor = std::io::Cursor::new(&payload[..payload.len().min(MAX_HEADER_BYTES)]);
    let header: RequestHeader =
        rmp_serde::from_read(&mut cursor).map_err(|e| format!("malformed request header: {e}"))?;
    let used = usize::try_from(cursor.position()).map_err(|_| "header too long".to_owned())?;
    Ok((header, payload.slice(used..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_splits_from_body() {
        let header = RequestHeader { version: PROTOCOL_VERSION, deadline_ms: 70_000, kind: KIND_STREAM, channel: 3 };
        for body in [&b""[..], b"x", &[0xc1; 100]] {
            let mut payload = encode_header(&header);
            payload.extend_from_slice(body);
            let (h, b) = decode_request(&Bytes::from(payload)).unwrap();
            assert_eq!(h, header);
            assert_eq!(&b[..], body);
        }
    }

    #[test]
    fn header_without_kind_is_a_call() {
        let old = rmp_serde::to_vec(&(PROTOCOL_VERSION, 5_000u32)).unwrap();
        let (h, b) = decode_request(&Bytes::from(old)).unwrap();
        assert_eq!(h, RequestHeader { version: PROTOCOL_VERSION, deadline_ms: 5_000, kind: KIND_CALL, channel: 0 });
        assert!(b.is_empty());
    }

    #[test]
    fn garbage_header_is_an_error() {
        for bad in [&b""[..], b"\xc1", b"\x92\x01", &[0xff; 80]] {
            assert!(decode_request(&Bytes::copy_from_slice(bad)).is_err());
        }
    }
}
