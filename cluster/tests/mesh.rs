//! The QUIC mesh over real UDP sockets on 127.0.0.1 with port 0: mutual TLS, identity of the
//! caller, connection reuse, refusals, joining, limits, deadlines and dead peers; call
//! channels, and replication over its own channel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use wasmfleet_cluster::mesh::{Handler, Mesh, MeshConfig, MeshError, PeerInfo, join_call};
use wasmfleet_cluster::pki::{ClusterCa, NodeIdentity};

const CALL: Duration = Duration::from_secs(5);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Records who called; answers `"<caller>:<body>"`, sleeps on `slow`, fails on `fail`.
#[derive(Default)]
struct Recorder {
    calls: AtomicUsize,
    peers: Mutex<Vec<PeerInfo>>,
    /// Set when the server dropped a `slow` handler before it finished (deadline enforced).
    cancelled: Arc<AtomicBool>,
}

struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

impl Recorder {
    fn handler(self: &Arc<Self>) -> Arc<dyn Handler> {
        let me = self.clone();
        Arc::new(move |peer: PeerInfo, body: Bytes| {
            let me = me.clone();
            async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                me.peers.lock().unwrap().push(peer.clone());
                match &body[..] {
                    b"slow" => {
                        let guard = SetOnDrop(me.cancelled.clone());
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        std::mem::forget(guard);
                        Ok(Bytes::from_static(b"late"))
                    }
                    b"fail" => Err("asked to fail".to_owned()),
                    _ => {
                        let who = peer.node_id.unwrap_or_else(|| "anonymous".to_owned());
                        let mut out = format!("{who}:").into_bytes();
                        out.extend_from_slice(&body);
                        Ok(Bytes::from(out))
                    }
                }
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

struct Node {
    mesh: Mesh,
    addr: SocketAddr,
    recorder: Arc<Recorder>,
}

async fn start(identity: NodeIdentity, tweak: impl FnOnce(&mut MeshConfig)) -> Node {
    let mut config = MeshConfig::new(any_port(), identity);
    tweak(&mut config);
    let recorder = Arc::new(Recorder::default());
    let mesh = Mesh::bind(config, recorder.handler()).await.unwrap();
    let addr = mesh.local_addr().unwrap();
    Node { mesh, addr, recorder }
}

async fn pair() -> (ClusterCa, Node, Node) {
    let ca = ClusterCa::generate("test").unwrap();
    let a = start(ca.issue("node-a").unwrap(), |_| {}).await;
    let b = start(ca.issue("node-b").unwrap(), |_| {}).await;
    (ca, a, b)
}

/// Waits until `cond` holds, for at most `limit`.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

#[tokio::test]
async fn call_round_trips_and_handler_sees_caller() {
    let (_ca, a, b) = pair().await;
    let answer = a.mesh.call("node-b", b.addr, Bytes::from_static(b"ping"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"node-a:ping");
    assert!(a.mesh.is_connected("node-b"));
    let peers = b.recorder.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id.as_deref(), Some("node-a"));

    // And the other way round, on b's own connection.
    let answer = b.mesh.call("node-a", a.addr, Bytes::from_static(b"pong"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"node-b:pong");

    // Handler errors come back as Remote.
    let err = a.mesh.call("node-b", b.addr, Bytes::from_static(b"fail"), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Remote(ref m) if m == "asked to fail"), "{err:?}");
    a.mesh.close().await;
    b.mesh.close().await;
}

#[tokio::test]
async fn typed_call_msg() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Req {
        n: u32,
    }
    let ca = ClusterCa::generate("test").unwrap();
    let a = start(ca.issue("node-a").unwrap(), |_| {}).await;
    let doubler: Arc<dyn Handler> = Arc::new(|_peer: PeerInfo, body: Bytes| async move {
        let req: Req = rmp_serde::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(Bytes::from(rmp_serde::to_vec_named(&Req { n: req.n * 2 }).unwrap()))
    });
    let b = Mesh::bind(MeshConfig::new(any_port(), ca.issue("node-b").unwrap()), doubler).await.unwrap();
    let resp: Req = a.mesh.call_msg("node-b", b.local_addr().unwrap(), &Req { n: 21 }, CALL).await.unwrap();
    assert_eq!(resp, Req { n: 42 });
}

#[tokio::test]
async fn many_calls_reuse_one_connection() {
    let (_ca, a, b) = pair().await;
    for i in 0..150u32 {
        let body = Bytes::from(i.to_string());
        let answer = a.mesh.call("node-b", b.addr, body, CALL).await.unwrap();
        assert_eq!(answer, Bytes::from(format!("node-a:{i}")));
    }
    // 50 more, concurrently.
    let calls: Vec<_> = (0..50u32).map(|i| a.mesh.call("node-b", b.addr, Bytes::from(i.to_string()), CALL)).collect();
    for (i, result) in futures_join_all(calls).await.into_iter().enumerate() {
        assert_eq!(result.unwrap(), Bytes::from(format!("node-a:{i}")));
    }
    assert_eq!(b.recorder.calls(), 200);
    assert_eq!(a.mesh.open_connections(), 1);
    assert_eq!(b.mesh.open_connections(), 1);
}

/// Polls all futures to completion, in order of results (no extra crate for `join_all`).
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(|v| v.unwrap()).collect()
}

#[tokio::test]
async fn client_from_another_ca_is_refused() {
    let (_ca, _a, b) = pair().await;
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    // Same node id as a legitimate member, but issued by the wrong CA.
    let rogue = start(rogue_ca.issue("node-a").unwrap(), |_| {}).await;
    let err = rogue.mesh.call("node-b", b.addr, Bytes::from_static(b"hi"), CALL).await.unwrap_err();
    // b's certificate is also not trusted by the rogue: either side refuses.
    assert!(matches!(err, MeshError::Tls { .. }), "{err:?}");
    assert_eq!(b.recorder.calls(), 0);
    assert!(!rogue.mesh.is_connected("node-b"));
}

#[tokio::test]
async fn server_refuses_client_certificate_from_another_ca() {
    // The rogue trusts b's CA (it has the real CA certificate) but its own certificate is
    // signed by another CA: only the server's check can refuse it, after the client's TLS
    // handshake already completed. The hello must catch this.
    let (ca, _a, b) = pair().await;
    let rogue_ca = ClusterCa::generate("rogue").unwrap();
    let mut rogue_id = rogue_ca.issue("node-a").unwrap();
    rogue_id.ca_pem = ca.cert_pem().to_owned();
    let rogue = start(rogue_id, |_| {}).await;
    let err = rogue.mesh.call("node-b", b.addr, Bytes::from_static(b"hi"), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Tls { .. }), "{err:?}");
    assert_eq!(b.recorder.calls(), 0);
    assert!(!rogue.mesh.is_connected("node-b"));
}

#[tokio::test]
async fn wrong_expected_node_id_is_refused() {
    let (_ca, a, b) = pair().await;
    let err = a.mesh.call("node-c", b.addr, Bytes::from_static(b"hi"), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Tls { .. }), "{err:?}");
    assert_eq!(b.recorder.calls(), 0);
    assert!(!a.mesh.is_connected("node-c"));
    // Invalid ids are refused before any network use.
    let err = a.mesh.call("Not_An_Id", b.addr, Bytes::new(), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Pki(_)), "{err:?}");
}

#[tokio::test]
async fn join_call_pins_the_ca_fingerprint() {
    let (ca, _a, b) = pair().await;
    let answer = join_call(any_port(), b.addr, &ca.fingerprint(), Bytes::from_static(b"join"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"anonymous:join");
    let peers = b.recorder.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].node_id, None);

    let other = ClusterCa::generate("other").unwrap();
    let err = join_call(any_port(), b.addr, &other.fingerprint(), Bytes::from_static(b"join"), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Tls { .. }), "{err:?}");
    assert_eq!(b.recorder.calls(), 1);

    // A malformed fingerprint is refused locally.
    let err = join_call(any_port(), b.addr, "zz", Bytes::new(), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Pki(_)), "{err:?}");
}

#[tokio::test]
async fn joiners_are_refused_when_not_accepted() {
    let ca = ClusterCa::generate("test").unwrap();
    let b = start(ca.issue("node-b").unwrap(), |c| c.accept_joiners = false).await;
    let err = join_call(any_port(), b.addr, &ca.fingerprint(), Bytes::from_static(b"join"), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::Tls { .. }), "{err:?}");
    assert_eq!(b.recorder.calls(), 0);
}

#[tokio::test]
async fn oversized_frame_is_rejected_and_server_survives() {
    let ca = ClusterCa::generate("test").unwrap();
    let a = start(ca.issue("node-a").unwrap(), |_| {}).await;
    let b = start(ca.issue("node-b").unwrap(), |c| c.max_frame_bytes = 4096).await;
    for size in [5_000, 1024 * 1024] {
        let err = a.mesh.call("node-b", b.addr, Bytes::from(vec![7u8; size]), CALL).await.unwrap_err();
        assert!(matches!(err, MeshError::Rejected { .. }), "{size}: {err:?}");
    }
    assert_eq!(b.recorder.calls(), 0);
    // The connection and the server are still fine.
    let answer = a.mesh.call("node-b", b.addr, Bytes::from_static(b"ok"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"node-a:ok");
    // The caller's own limit is checked before sending.
    let err = b.mesh.call("node-a", a.addr, Bytes::from(vec![0u8; 8192]), CALL).await.unwrap_err();
    assert!(matches!(err, MeshError::FrameTooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn slow_handler_yields_timeout() {
    let (_ca, a, b) = pair().await;
    let started = Instant::now();
    let err = a.mesh.call("node-b", b.addr, Bytes::from_static(b"slow"), Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, MeshError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The server enforced the deadline too: it dropped the handler's future.
    assert!(wait_until(Duration::from_secs(1), || b.recorder.cancelled.load(Ordering::SeqCst)).await);
    // The connection is still usable.
    let answer = a.mesh.call("node-b", b.addr, Bytes::from_static(b"quick"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"node-a:quick");
}

#[tokio::test]
async fn closed_peer_fails_calls_quickly() {
    let (_ca, a, b) = pair().await;
    a.mesh.call("node-b", b.addr, Bytes::from_static(b"x"), CALL).await.unwrap();
    assert!(a.mesh.is_connected("node-b"));
    let b_addr = b.addr;
    drop(b);
    assert!(wait_until(Duration::from_secs(2), || !a.mesh.is_connected("node-b")).await);
    // Reconnecting to a dead address fails within about idle_timeout + keep-alive, well
    // before the call's own timeout.
    let started = Instant::now();
    let err = a.mesh.call("node-b", b_addr, Bytes::from_static(b"x"), Duration::from_secs(10)).await.unwrap_err();
    assert!(!matches!(err, MeshError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_millis(2500), "{:?}", started.elapsed());
}

/// A UDP relay between one client and one server that can silently drop everything, like a
/// peer killed with SIGKILL or a cut cable.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> Relay {
        let front = tokio::net::UdpSocket::bind(any_port()).await.unwrap();
        let back = tokio::net::UdpSocket::bind(any_port()).await.unwrap();
        back.connect(server).await.unwrap();
        let addr = front.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let dropping = cut.clone();
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            let mut up = vec![0u8; 65536];
            let mut down = vec![0u8; 65536];
            loop {
                tokio::select! {
                    Ok((n, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        if !dropping.load(Ordering::SeqCst) {
                            let _ = back.send(&up[..n]).await;
                        }
                    }
                    Ok(n) = back.recv(&mut down) => {
                        if let (Some(to), false) = (client, dropping.load(Ordering::SeqCst)) {
                            let _ = front.send_to(&down[..n], to).await;
                        }
                    }
                }
            }
        });
        Relay { addr, cut, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn silently_dead_peer_is_noticed_after_idle_timeout() {
    let (_ca, a, b) = pair().await;
    let relay = Relay::start(b.addr).await;
    a.mesh.call("node-b", relay.addr, Bytes::from_static(b"x"), CALL).await.unwrap();
    assert!(a.mesh.is_connected("node-b"));
    relay.cut.store(true, Ordering::SeqCst);
    let cut_at = Instant::now();
    // A call in flight fails when the connection times out, not at its own deadline.
    let err = a.mesh.call("node-b", relay.addr, Bytes::from_static(b"x"), Duration::from_secs(10)).await.unwrap_err();
    let noticed = cut_at.elapsed();
    assert!(!matches!(err, MeshError::Timeout { .. }), "{err:?}");
    assert!(!a.mesh.is_connected("node-b"));
    // idle 1 s + keep-alive 200 ms, with slack for a loaded machine.
    assert!(noticed >= Duration::from_millis(800), "{noticed:?}");
    assert!(noticed < Duration::from_millis(2500), "{noticed:?}");
}

/// Echoes the opening frame, then everything the caller streams, uppercased, as it arrives.
struct Upper;

impl wasmfleet_cluster::mesh::StreamHandler for Upper {
    fn handle_stream(
        &self,
        peer: PeerInfo,
        head: Bytes,
        _deadline: Duration,
        mut send: wasmfleet_cluster::mesh::SendStream,
        mut recv: wasmfleet_cluster::mesh::RecvStream,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async move {
            let who = peer.node_id.unwrap_or_default();
            send.write_all(format!("{who}:").as_bytes()).await.unwrap();
            send.write_all(&head).await.unwrap();
            while let Some(chunk) = recv.read_chunk(1024, true).await.unwrap() {
                send.write_all(&chunk.bytes.to_ascii_uppercase()).await.unwrap();
            }
            send.finish().unwrap();
        })
    }
}

#[tokio::test]
async fn streams_carry_bodies_both_ways_and_need_a_handler() {
    let (_ca, a, b) = pair().await;
    // No stream handler on b yet: refused with a clear answer.
    let refused = |channel| {
        let a = &a;
        let b_addr = b.addr;
        async move {
            let (mut send, mut recv) = a.mesh.open_stream(channel, "node-b", b_addr, b"head|", CALL).await.unwrap();
            let _ = send.finish();
            let answer = recv.read_to_end(1024).await.unwrap();
            String::from_utf8_lossy(&answer).contains("streams are not served here")
        }
    };
    assert!(refused(2).await);

    b.mesh.set_stream_handler(2, Arc::new(Upper));
    // Other channels (including ones past the last) stay refused.
    assert!(refused(1).await);
    assert!(refused(200).await);
    let (mut send, mut recv) = a.mesh.open_stream(2, "node-b", b.addr, b"head|", CALL).await.unwrap();
    // The answer starts before the request is finished: bodies stream.
    send.write_all(b"first ").await.unwrap();
    let mut got = Vec::new();
    while !got.ends_with(b"FIRST ") {
        let chunk = tokio::time::timeout(CALL, recv.read_chunk(1024, true)).await.unwrap().unwrap().unwrap();
        got.extend_from_slice(&chunk.bytes);
    }
    send.write_all(&vec![b'x'; 200_000]).await.unwrap();
    send.finish().unwrap();
    got.extend(recv.read_to_end(1 << 20).await.unwrap());
    assert!(got.starts_with(b"node-a:head|FIRST "));
    assert_eq!(got.len(), "node-a:head|FIRST ".len() + 200_000);
    assert!(got.ends_with(b"XXXX"));
    a.mesh.close().await;
    b.mesh.close().await;
}

#[tokio::test]
async fn call_channels_reach_their_own_handler_once_set() {
    let (_ca, a, b) = pair().await;
    let refused = a.mesh.call_on(3, "node-b", b.addr, Bytes::from_static(b"x"), CALL).await.unwrap_err();
    assert!(
        matches!(&refused, MeshError::Rejected { reason } if reason.contains("call channel 3 is not served here")),
        "{refused:?}"
    );
    let past_the_last = a.mesh.call_on(200, "node-b", b.addr, Bytes::from_static(b"x"), CALL).await.unwrap_err();
    assert!(matches!(past_the_last, MeshError::Rejected { .. }), "{past_the_last:?}");
    let reverse: Arc<dyn Handler> = Arc::new(|peer: PeerInfo, body: Bytes| async move {
        let mut out = body.to_vec();
        out.reverse();
        Ok(Bytes::from(format!("{}:{}", peer.node_id.unwrap_or_default(), String::from_utf8_lossy(&out))))
    });
    b.mesh.set_call_handler(3, reverse);
    let answer = a.mesh.call_on(3, "node-b", b.addr, Bytes::from_static(b"abc"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"node-a:cba");
    // Channel 0 is still the main handler, on the same connection.
    let answer = a.mesh.call_on(0, "node-b", b.addr, Bytes::from_static(b"abc"), CALL).await.unwrap();
    assert_eq!(&answer[..], b"node-a:abc");
    assert_eq!(b.recorder.calls(), 1);
    assert_eq!(a.mesh.open_connections(), 1);
    a.mesh.close().await;
    b.mesh.close().await;
}

#[tokio::test]
async fn replication_runs_over_the_mesh() {
    use wasmfleet_cluster::Version;
    use wasmfleet_cluster::replication::{
        Entry, MemoryStorage, Merge, MeshPeer, MeshTransport, Replicator, ReplicatorConfig, serve_replication,
    };

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Val {
        Text(u32),
    }
    impl Merge for Val {}

    let (_ca, a, b) = pair().await;
    let (a_mesh, b_mesh) = (Arc::new(a.mesh), Arc::new(b.mesh));
    let replicator = |mesh: &Arc<Mesh>| {
        let r = Arc::new(Replicator::new(
            Arc::new(MemoryStorage::<Val>::new()),
            Arc::new(MeshTransport::new(mesh.clone())),
            ReplicatorConfig::default(),
        ));
        serve_replication(mesh, &r);
        r
    };
    let (ra, rb) = (replicator(&a_mesh), replicator(&b_mesh));
    let to_b = MeshPeer { node_id: "node-b".into(), addr: b.addr };
    let to_a = MeshPeer { node_id: "node-a".into(), addr: a.addr };
    let v = |wall_ms| Version { wall_ms, counter: 0, node: 1 };

    // A write pushed from a is durable on b when it is acknowledged.
    ra.storage().write(Entry::live("k", v(1), Val::Text(7))).unwrap();
    let copies = ra.replicate(&["k".into()], std::slice::from_ref(&to_b)).await.unwrap();
    assert_eq!(copies.copies, 2);
    assert_eq!(copies.acknowledged_by, std::slice::from_ref(&to_b));
    assert_eq!(rb.storage().get("k").and_then(|e| e.value), Some(Val::Text(7)));

    // Anti-entropy: b pulls what a wrote meanwhile, because a's digest differs.
    ra.storage().write(Entry::tombstone("k", v(2))).unwrap();
    ra.storage().write(Entry::live("other", v(3), Val::Text(1))).unwrap();
    let digest = wasmfleet_cluster::replication::Storage::digest(ra.storage().as_ref()).unwrap();
    let round = rb.anti_entropy(&[(to_a.clone(), Some(digest))]).await.unwrap();
    assert_eq!(round.pulled, [(to_a, 2)]);
    assert_eq!(ra.storage().snapshot(), rb.storage().snapshot());

    // Nothing reaches the replication channel once the replicator is gone.
    drop(ra);
    let err = rb.pull_from(&MeshPeer { node_id: "node-a".into(), addr: a.addr }).await.unwrap_err();
    assert!(err.to_string().contains("replication has stopped"), "{err}");
    a_mesh.close().await;
    b_mesh.close().await;
}
