//! Sealed gossip: a chitchat transport whose UDP datagrams are authenticated and encrypted
//! with the cluster's gossip key ([`crate::seal`]).
//!
//! Chitchat 0.13's `Socket` trait carries decoded `ChitchatEnvelope`s, and envelope
//! (de)serialisation is crate-private (`pub(crate)`; `Digest` and `Delta` are private types),
//! so a wrapping transport cannot get at the bytes directly. [`SealedUdpTransport`] therefore
//! drives chitchat's own public `UdpSocket` on loopback and relays its bytes:
//!
//! ```text
//!   chitchat ──send(peer, env)──▶ SealedSocket ──inner.send(capture)──▶ capture (127.0.0.1)
//!                                    │ read bytes, frame, seal ──▶ public socket ──▶ peer
//!   peer ──▶ public socket ──open, reassemble──▶ relay[peer] (127.0.0.1) ──▶ inner socket
//!   chitchat ◀──recv(): from = peer (mapped back from relay[peer]) ── inner.recv()
//! ```
//!
//! - Outgoing: `send` is called with the real peer address; the envelope is serialised by
//!   the inner socket into one capture socket, read back, sealed and sent from the public
//!   socket. `send` is sequential, so the capture socket needs no per-peer tagging.
//! - Incoming: an opened datagram is injected into the inner socket from the loopback relay
//!   socket that stands for its sender (one per peer, created only for peers whose packets
//!   opened, at most [`MAX_RELAYS`], least recently used recycled); the inner socket decodes
//!   it and `recv` maps the relay address back to the real peer. Chitchat never sees a relay
//!   address, and a datagram the inner socket rejects cannot misattribute the next one.
//! - Chitchat fills datagrams up to 65 507 bytes, so a sealed datagram can exceed the UDP
//!   limit; [`frame`] splits such datagrams in two sealed frames and reassembles them.
//! - Packets that fail to open are dropped, counted in [`GossipStats`] and logged at most once
//!   per 10 s per reason.

pub mod frame;
mod sealed;
mod stats;

pub use sealed::{MAX_RELAYS, SealedSocket, SealedUdpTransport};
pub use stats::{GossipStats, GossipStatsSnapshot, WARN_INTERVAL};
