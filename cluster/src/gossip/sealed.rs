//! [`SealedUdpTransport`]: a chitchat [`Transport`] whose datagrams are sealed with the
//! cluster's gossip key, built on chitchat's public API only (see the [module
//! docs](super) for why a relay is needed and how it works).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket};
use tracing::warn;

use super::frame::{self, Reassembler};
use super::stats::{Event, GossipStats, WarnLimiter};
use crate::seal::{GossipKey, MAX_PACKET_LEN, SealError, Sealer};

/// Most remote peers with a relay socket at once (least recently used are recycled).
pub const MAX_RELAYS: usize = 1_024;
/// How long `send` waits for the inner socket's datagram to reach the capture socket.
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(1);

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Opens sockets that seal every chitchat datagram with one key for one cluster.
#[derive(Clone)]
pub struct SealedUdpTransport {
    sealer: Arc<Sealer>,
    stats: Arc<GossipStats>,
}

impl std::fmt::Debug for SealedUdpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedUdpTransport").field("sealer", &self.sealer).finish_non_exhaustive()
    }
}

impl SealedUdpTransport {
    pub fn new(key: &GossipKey, cluster_id: &str) -> SealedUdpTransport {
        SealedUdpTransport { sealer: Arc::new(Sealer::new(key, cluster_id)), stats: Arc::new(GossipStats::default()) }
    }

    /// Counters shared by every socket this transport opens.
    pub fn stats(&self) -> Arc<GossipStats> {
        self.stats.clone()
    }

    /// Binds the public socket on `listen_addr` and the loopback machinery behind it.
    pub async fn open_sealed(&self, listen_addr: SocketAddr) -> anyhow::Result<SealedSocket> {
        let public = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("failed to bind to {listen_addr}/UDP for gossip"))?;
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let inner = UdpSocket::open(loopback).await?;
        let inner_addr = inner.local_addr()?;
        let capture = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("failed to bind the gossip capture socket on loopback")?;
        let capture_addr = capture.local_addr()?;
        Ok(SealedSocket {
            public,
            inner,
            inner_addr,
            capture,
            capture_addr,
            relays: Relays::default(),
            reassembler: Reassembler::default(),
            sealer: self.sealer.clone(),
            stats: self.stats.clone(),
            warn_limiter: WarnLimiter::default(),
            buf_public: vec![0; MAX_PACKET_LEN].into_boxed_slice(),
            buf_capture: vec![0; MAX_PACKET_LEN].into_boxed_slice(),
        })
    }
}

impl Transport for SealedUdpTransport {
    fn open<'life0, 'async_trait>(
        &'life0 self,
        listen_addr: SocketAddr,
    ) -> BoxFuture<'async_trait, anyhow::Result<Box<dyn Socket>>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let socket = self.open_sealed(listen_addr).await?;
            Ok(Box::new(socket) as Box<dyn Socket>)
        })
    }
}

/// One loopback socket standing for one remote peer towards the inner chitchat socket.
struct Relay {
    socket: tokio::net::UdpSocket,
    addr: SocketAddr,
    last_used: u64,
}

/// Bounded two-way map between remote peers and their relay sockets.
#[derive(Default)]
struct Relays {
    by_peer: HashMap<SocketAddr, Relay>,
    peer_by_relay: HashMap<SocketAddr, SocketAddr>,
    clock: u64,
}

impl Relays {
    fn peer_of(&self, relay_addr: SocketAddr) -> Option<SocketAddr> {
        self.peer_by_relay.get(&relay_addr).copied()
    }

    fn get_or_create(&mut self, peer: SocketAddr) -> io::Result<&Relay> {
        self.clock += 1;
        let clock = self.clock;
        if !self.by_peer.contains_key(&peer) {
            if self.by_peer.len() >= MAX_RELAYS {
                let oldest = self.by_peer.iter().min_by_key(|(_, relay)| relay.last_used).map(|(peer, _)| *peer);
                if let Some(oldest) = oldest
                    && let Some(relay) = self.by_peer.remove(&oldest)
                {
                    self.peer_by_relay.remove(&relay.addr);
                }
            }
            let std_socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
            std_socket.set_nonblocking(true)?;
            let socket = tokio::net::UdpSocket::from_std(std_socket)?;
            let addr = socket.local_addr()?;
            self.peer_by_relay.insert(addr, peer);
            self.by_peer.insert(peer, Relay { socket, addr, last_used: clock });
        }
        let relay = self.by_peer.get_mut(&peer).ok_or_else(|| io::Error::other("relay vanished"))?;
        relay.last_used = clock;
        Ok(relay)
    }
}

/// A socket whose datagrams are sealed on the wire. What chitchat sees (peer addresses in
/// `send` and `recv`) are always the real remote addresses.
pub struct SealedSocket {
    /// The node's gossip socket, facing the network.
    public: tokio::net::UdpSocket,
    /// Chitchat's own UDP socket on loopback: it (de)serialises envelopes for us.
    inner: UdpSocket,
    inner_addr: SocketAddr,
    /// Loopback socket the inner socket sends every outgoing envelope to.
    capture: tokio::net::UdpSocket,
    capture_addr: SocketAddr,
    relays: Relays,
    reassembler: Reassembler,
    sealer: Arc<Sealer>,
    stats: Arc<GossipStats>,
    warn_limiter: WarnLimiter,
    buf_public: Box<[u8]>,
    buf_capture: Box<[u8]>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

fn is_transient_io_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::OutOfMemory
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

enum Incoming {
    Inner(anyhow::Result<RecvOutcome>),
    Public(io::Result<(usize, SocketAddr)>),
}

impl SealedSocket {
    /// Address of the inner chitchat socket on loopback (for tests and diagnostics).
    pub fn inner_addr(&self) -> SocketAddr {
        self.inner_addr
    }

    fn warn_drop(&mut self, reason: &'static str, from: SocketAddr, error: &dyn std::fmt::Display) {
        if self.warn_limiter.allow(reason, Instant::now()) {
            warn!(
                from = %from,
                reason,
                error = %error,
                "dropped gossip packet (counted; next warning for this reason in 10 s at the earliest)"
            );
        }
    }

    async fn send_sealed(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        // Discard anything a cancelled send left behind, so what we read next is ours.
        while self.capture.try_recv_from(&mut self.buf_capture).is_ok() {}
        self.inner.send(self.capture_addr, envelope).await?;
        let deadline = tokio::time::Instant::now() + CAPTURE_TIMEOUT;
        let len = loop {
            match tokio::time::timeout_at(deadline, self.capture.recv_from(&mut self.buf_capture)).await {
                Ok(Ok((len, from))) if from == self.inner_addr => break len,
                Ok(Ok(_)) => continue,
                Ok(Err(err)) => {
                    self.stats.record(Event::SendError);
                    self.warn_drop("capture", to, &err);
                    return Ok(SendOutcome { num_bytes_sent: 0 });
                }
                Err(_elapsed) => {
                    self.stats.record(Event::SendError);
                    self.warn_drop("capture", to, &"outgoing datagram not captured in time");
                    return Ok(SendOutcome { num_bytes_sent: 0 });
                }
            }
        };
        let frames = match frame::split(&self.buf_capture[..len], rand::random()) {
            Ok(frames) => frames,
            Err(err) => {
                self.stats.record(Event::Oversize);
                self.warn_drop("oversize", to, &err);
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let mut num_bytes_sent = 0;
        for frame in frames {
            let packet = self.sealer.seal(&frame, now_ms());
            match self.public.send_to(&packet, to).await {
                Ok(sent) => {
                    num_bytes_sent += sent;
                    self.stats.record(Event::Sent { bytes: sent });
                }
                Err(err) => {
                    // Like chitchat's own socket, a failed send to one peer is not fatal; we
                    // count it rather than fail the gossip round.
                    self.stats.record(Event::SendError);
                    self.warn_drop("send", to, &err);
                    break;
                }
            }
        }
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv_opened(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let incoming = tokio::select! {
                biased;
                result = self.inner.recv() => Incoming::Inner(result),
                result = self.public.recv_from(&mut self.buf_public) => Incoming::Public(result),
            };
            match incoming {
                Incoming::Inner(result) => {
                    let outcome = result?;
                    match self.relays.peer_of(outcome.from_addr) {
                        Some(peer) => {
                            return Ok(RecvOutcome { from_addr: peer, ..outcome });
                        }
                        None => {
                            self.stats.record(Event::UnknownRelay);
                            let from = outcome.from_addr;
                            self.warn_drop("unknown_relay", from, &"not one of our relays");
                        }
                    }
                }
                Incoming::Public(Ok((len, from))) => self.handle_public(len, from).await,
                Incoming::Public(Err(err)) if is_transient_io_error(&err) => continue,
                Incoming::Public(Err(err)) => {
                    return Err(err).context("fatal UDP recv error on the gossip socket");
                }
            }
        }
    }

    /// Opens one datagram from the network and hands the chitchat datagram inside (once whole)
    /// to the inner socket, from the relay standing for its sender.
    async fn handle_public(&mut self, len: usize, from: SocketAddr) {
        let now = now_ms();
        let frame = match self.sealer.open(&self.buf_public[..len], now) {
            Ok(frame) => frame,
            Err(err) => {
                self.stats.record(match err {
                    SealError::Authentication => Event::Authentication,
                    SealError::Stale { .. } => Event::Stale,
                    SealError::Replay => Event::Replay,
                    _ => Event::Malformed,
                });
                self.warn_drop(err.reason(), from, &err);
                return;
            }
        };
        self.stats.record(Event::Received { bytes: len });
        let datagram = match self.reassembler.handle_frame(from, &frame, now) {
            Ok(Some(datagram)) => datagram,
            Ok(None) => return,
            Err(err) => {
                self.stats.record(Event::Frame);
                self.warn_drop("frame", from, &err);
                return;
            }
        };
        let inner_addr = self.inner_addr;
        let relay = match self.relays.get_or_create(from) {
            Ok(relay) => relay,
            Err(err) => {
                self.stats.record(Event::SendError);
                self.warn_drop("relay", from, &err);
                return;
            }
        };
        if let Err(err) = relay.socket.send_to(&datagram, inner_addr).await {
            self.stats.record(Event::SendError);
            self.warn_drop("relay", from, &err);
        }
    }
}

impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.public.local_addr().context("failed to get the gossip socket address")
    }

    fn send<'life0, 'async_trait>(
        &'life0 mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> BoxFuture<'async_trait, anyhow::Result<SendOutcome>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send_sealed(to, envelope))
    }

    /// Cancel-safe: an opened datagram is either still in the public socket or already
    /// queued on the inner socket, tagged by its relay.
    fn recv<'life0, 'async_trait>(&'life0 mut self) -> BoxFuture<'async_trait, anyhow::Result<RecvOutcome>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.recv_opened())
    }
}

#[cfg(test)]
mod tests {
    use chitchat::{ChitchatMessage, ProtocolVersion};

    use super::*;

    fn bad_cluster() -> ChitchatEnvelope {
        ChitchatEnvelope { version: ProtocolVersion::V1, message: ChitchatMessage::BadCluster }
    }

    async fn pair(key_a: &GossipKey, key_b: &GossipKey) -> (SealedSocket, SealedSocket) {
        let loopback: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
        let a = SealedUdpTransport::new(key_a, "c").open_sealed(loopback).await.unwrap();
        let b = SealedUdpTransport::new(key_b, "c").open_sealed(loopback).await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn envelopes_cross_sealed_with_real_addresses() {
        let key = GossipKey::generate();
        let (mut a, mut b) = pair(&key, &key).await;
        let (addr_a, addr_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let sent = a.send(addr_b, bad_cluster()).await.unwrap();
        assert!(sent.num_bytes_sent > 0);
        let received = tokio::time::timeout(Duration::from_secs(5), b.recv()).await.unwrap().unwrap();
        assert_eq!(received.from_addr, addr_a);
        assert_eq!(received.envelope, bad_cluster());
        // And back: the reply goes to the real address chitchat was given.
        b.send(received.from_addr, bad_cluster()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), a.recv()).await.unwrap().unwrap();
        assert_eq!(back.from_addr, addr_b);
        assert_eq!(a.stats.snapshot().received_datagrams, 1);
    }

    #[tokio::test]
    async fn wrong_key_and_plaintext_are_dropped_and_counted() {
        let (mut a, mut b) = pair(&GossipKey([1; 32]), &GossipKey([2; 32])).await;
        let addr_b = b.local_addr().unwrap();
        a.send(addr_b, bad_cluster()).await.unwrap();
        // Unsealed junk and a datagram sent straight to the inner socket are dropped too.
        let junk = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        junk.send_to(b"junk", addr_b).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), b.recv()).await.is_err());
        let stats = b.stats.snapshot();
        assert_eq!(stats.dropped_authentication, 1);
        assert_eq!(stats.dropped_malformed, 1);
        assert_eq!(stats.received_datagrams, 0);
    }
}
