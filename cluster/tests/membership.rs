//! Membership scenarios, written like scripts: nodes join, get partitioned, heal, restart,
//! delete keys and leave.
//!
//! - Over chitchat's in-memory `ChannelTransport` (real codec, `remove_link`/`add_link`).
//!   These run on a paused tokio clock (`start_paused`): time jumps whenever every task waits,
//!   so tens of virtual seconds of gossip take milliseconds, and timings are deterministic
//!   enough to assert detection bounds.
//! - Over real sealed UDP on 127.0.0.1:0 at the 175 ms LAN profile: convergence, a node with
//!   the wrong key kept out (and its packets counted as dropped), and a killed node seen dead
//!   within 2 s.
//!
//! Every wait is bounded and polls a condition; none sleeps blindly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use chitchat::transport::ChannelTransport;
use wasmfleet_cluster::membership::{Member, MemberState, Membership, MembershipConfig, spawn_membership};
use wasmfleet_cluster::seal::GossipKey;

const CHANNEL_INTERVAL: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(10);

fn channel_addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn channel_config(name: &str, port: u16, seed: Option<u16>) -> MembershipConfig {
    MembershipConfig {
        node_name: name.to_string(),
        cluster_id: "test-cluster".to_string(),
        gossip_listen: channel_addr(port),
        gossip_advertise: channel_addr(port),
        seeds: seed.map(|port| vec![channel_addr(port).to_string()]).unwrap_or_default(),
        gossip_interval: CHANNEL_INTERVAL,
        ..MembershipConfig::default()
    }
}

async fn start_channel(
    transport: &ChannelTransport,
    name: &str,
    port: u16,
    seed: Option<u16>,
    kv: &[(&str, &str)],
) -> Membership {
    let initial = kv.iter().map(|(key, value)| (key.to_string(), value.to_string())).collect();
    spawn_membership(channel_config(name, port, seed), initial, Some(Box::new(transport.clone())))
        .await
        .expect("membership starts")
}

fn member<'a>(members: &'a [Member], name: &str) -> Option<&'a Member> {
    members.iter().find(|member| member.name == name)
}

fn state_of(members: &[Member], name: &str) -> Option<MemberState> {
    member(members, name).map(|member| member.state)
}

/// Polls `node`'s member list until `condition` holds; panics with the last list after
/// `timeout`. Returns the list and the time it took.
async fn eventually(
    node: &Membership,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&[Member]) -> bool,
) -> (Vec<Member>, Duration) {
    let start = Instant::now();
    loop {
        let members = node.members().await;
        if condition(&members) {
            return (members, start.elapsed());
        }
        if start.elapsed() > timeout {
            panic!("{} did not see {what} within {timeout:?}; members: {members:#?}", node.node_name());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_alive(names: &[&str]) -> impl Fn(&[Member]) -> bool {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    move |members| names.iter().all(|name| state_of(members, name) == Some(MemberState::Alive))
}

/// Three nodes joined through n1 (ports 10001..=10003).
async fn three_nodes(transport: &ChannelTransport) -> [Membership; 3] {
    let n1 = start_channel(transport, "n1", 10_001, None, &[("role", "seed")]).await;
    let n2 = start_channel(transport, "n2", 10_002, Some(10_001), &[("role", "edge")]).await;
    let n3 = start_channel(transport, "n3", 10_003, Some(10_001), &[("zone", "b")]).await;
    for node in [&n1, &n2, &n3] {
        eventually(node, "everyone alive", WAIT, all_alive(&["n1", "n2", "n3"])).await;
    }
    [n1, n2, n3]
}

#[tokio::test(start_paused = true)]
async fn three_nodes_join_through_one_seed_and_share_key_values() {
    let transport = ChannelTransport::with_mtu(65_507);
    let [n1, n2, n3] = three_nodes(&transport).await;
    for node in [&n1, &n2, &n3] {
        let (members, _) = eventually(node, "every key-value", WAIT, |members| {
            member(members, "n1").and_then(|m| m.kv.get("role")).map(String::as_str) == Some("seed")
                && member(members, "n2").and_then(|m| m.kv.get("role")).map(String::as_str) == Some("edge")
                && member(members, "n3").and_then(|m| m.kv.get("zone")).map(String::as_str) == Some("b")
        })
        .await;
        assert_eq!(members.len(), 3);
        assert_eq!(
            member(&members, "n2").unwrap().gossip_addr,
            channel_addr(10_002),
            "chitchat knows the real address"
        );
    }
    // The watch channel follows too.
    let watched = n1.watch().borrow().clone();
    assert_eq!(watched.len(), 3);
    // Oversized values are refused rather than silently blocking replication.
    assert!(n1.set("big", &"x".repeat(20_000)).await.is_err());
    for node in [n1, n2, n3] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn partition_kills_the_cut_node_and_healing_restores_it() {
    let transport = ChannelTransport::with_mtu(65_507);
    let [n1, n2, n3] = three_nodes(&transport).await;
    let a3 = channel_addr(10_003);
    transport.remove_link(a3, channel_addr(10_001)).await;
    transport.remove_link(a3, channel_addr(10_002)).await;
    let cut = Instant::now();
    for node in [&n1, &n2] {
        eventually(node, "n3 dead", WAIT, |members| {
            state_of(members, "n3") == Some(MemberState::Dead)
                && state_of(members, "n1") == Some(MemberState::Alive)
                && state_of(members, "n2") == Some(MemberState::Alive)
        })
        .await;
    }
    // Virtual time: phi 5 at a 100 ms interval declares the cut node dead in well under 2 s.
    let detected = cut.elapsed();
    assert!(detected < Duration::from_secs(2), "n3 seen dead after {detected:?}");
    eventually(&n3, "n1 and n2 dead", WAIT, |members| {
        state_of(members, "n1") == Some(MemberState::Dead) && state_of(members, "n2") == Some(MemberState::Dead)
    })
    .await;
    // The watch channel reports the death as well (deaths come from the periodic refresh).
    let mut watch = n1.watch();
    tokio::time::timeout(WAIT, watch.wait_for(|members| state_of(members, "n3") == Some(MemberState::Dead)))
        .await
        .expect("watch reports n3 dead")
        .unwrap();

    transport.add_link(a3, channel_addr(10_001)).await;
    transport.add_link(a3, channel_addr(10_002)).await;
    for node in [&n1, &n2, &n3] {
        eventually(node, "everyone alive again", WAIT, all_alive(&["n1", "n2", "n3"])).await;
    }
    for node in [n1, n2, n3] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn restarted_node_replaces_its_old_generation_without_stale_keys() {
    let transport = ChannelTransport::with_mtu(65_507);
    let [n1, n2, n3] = three_nodes(&transport).await;
    n3.set("old", "1").await.unwrap();
    eventually(&n1, "n3's old key", WAIT, |members| member(members, "n3").is_some_and(|m| m.kv.contains_key("old")))
        .await;
    let old_generation = n3.generation();
    n3.shutdown().await.unwrap();

    let n3 = start_channel(&transport, "n3", 10_003, Some(10_001), &[("new", "1")]).await;
    assert!(n3.generation() > old_generation, "generation changes on every start");
    for node in [&n1, &n2, &n3] {
        let (members, _) = eventually(node, "the new n3", WAIT, |members| {
            member(members, "n3").is_some_and(|m| {
                m.generation == n3.generation() && m.state == MemberState::Alive && m.kv.contains_key("new")
            })
        })
        .await;
        assert_eq!(members.iter().filter(|m| m.name == "n3").count(), 1);
        assert!(!member(&members, "n3").unwrap().kv.contains_key("old"));
    }
    // A few more rounds: the old keys never flow back into the new incarnation.
    let mut watch = n3.watch();
    let _ = tokio::time::timeout(
        CHANNEL_INTERVAL * 10,
        watch.wait_for(|members| member(members, "n3").is_some_and(|m| m.kv.contains_key("old"))),
    )
    .await
    .expect_err("stale key came back");
    for node in [n1, n2, n3] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn deleted_key_disappears_everywhere() {
    let transport = ChannelTransport::with_mtu(65_507);
    let [n1, n2, n3] = three_nodes(&transport).await;
    n2.set("load", "42").await.unwrap();
    for node in [&n1, &n2, &n3] {
        eventually(node, "n2's load", WAIT, |members| {
            member(members, "n2").and_then(|m| m.kv.get("load")).map(String::as_str) == Some("42")
        })
        .await;
    }
    n2.delete("load").await;
    n2.delete("never-set").await;
    for node in [&n1, &n2, &n3] {
        eventually(node, "n2's load deleted", WAIT, |members| {
            member(members, "n2").is_some_and(|m| !m.kv.contains_key("load"))
        })
        .await;
    }
    for node in [n1, n2, n3] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn leaving_node_shows_as_leaving_before_it_goes() {
    let transport = ChannelTransport::with_mtu(65_507);
    let [n1, n2, n3] = three_nodes(&transport).await;
    let mut watch = n1.watch();
    let leaving = tokio::spawn(n3.leave());
    tokio::time::timeout(WAIT, watch.wait_for(|members| state_of(members, "n3") == Some(MemberState::Leaving)))
        .await
        .expect("n1 sees n3 leaving")
        .unwrap();
    eventually(&n2, "n3 leaving or gone", WAIT, |members| {
        matches!(state_of(members, "n3"), Some(MemberState::Leaving | MemberState::Dead))
    })
    .await;
    leaving.await.unwrap().unwrap();
    for node in [&n1, &n2] {
        eventually(node, "n3 dead after leaving", WAIT, |members| state_of(members, "n3") == Some(MemberState::Dead))
            .await;
    }
    for node in [n1, n2] {
        node.shutdown().await.unwrap();
    }
}

// --- Real sealed UDP -------------------------------------------------------------------------

fn udp_config(name: &str, key: &GossipKey, seeds: &[SocketAddr]) -> MembershipConfig {
    MembershipConfig {
        node_name: name.to_string(),
        cluster_id: "udp-cluster".to_string(),
        gossip_listen: ([127, 0, 0, 1], 0).into(),
        gossip_advertise: ([127, 0, 0, 1], 0).into(),
        seeds: seeds.iter().map(SocketAddr::to_string).collect(),
        gossip_interval: Duration::from_millis(200),
        key: Some(key.clone()),
        ..MembershipConfig::default()
    }
}

async fn start_udp(name: &str, key: &GossipKey, seeds: &[SocketAddr]) -> Membership {
    let node = spawn_membership(udp_config(name, key, seeds), vec![("name".to_string(), name.to_string())], None)
        .await
        .expect("membership starts");
    assert_ne!(node.gossip_addr().port(), 0, "advertised port is the bound one");
    node
}

#[tokio::test]
async fn sealed_udp_converges_keeps_out_a_wrong_key_and_detects_death() {
    let key = GossipKey::generate();
    let n1 = start_udp("n1", &key, &[]).await;
    let n2 = start_udp("n2", &key, &[n1.gossip_addr()]).await;
    let n3 = start_udp("n3", &key, &[n1.gossip_addr()]).await;
    for node in [&n1, &n2, &n3] {
        let (members, _) = eventually(node, "everyone alive", WAIT, |members| {
            all_alive(&["n1", "n2", "n3"])(members) && members.iter().all(|m| m.kv.get("name") == Some(&m.name))
        })
        .await;
        for (name, addr) in [("n1", n1.gossip_addr()), ("n2", n2.gossip_addr()), ("n3", n3.gossip_addr())] {
            assert_eq!(member(&members, name).unwrap().gossip_addr, addr);
        }
    }

    // Same cluster id, other key, seeded with everyone.
    let intruder =
        start_udp("intruder", &GossipKey::generate(), &[n1.gossip_addr(), n2.gossip_addr(), n3.gossip_addr()]).await;
    let honest_drops = |nodes: &[&Membership]| -> u64 {
        nodes.iter().map(|node| node.gossip_stats().unwrap().dropped_authentication).sum()
    };
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(2) || honest_drops(&[&n1, &n2, &n3]) == 0 {
        assert!(start.elapsed() < WAIT, "the intruder's packets were never counted");
        for node in [&n1, &n2, &n3] {
            let members = node.members().await;
            assert!(member(&members, "intruder").is_none(), "intruder got in: {members:#?}");
            assert_eq!(members.len(), 3);
        }
        let seen_by_intruder = intruder.members().await;
        assert_eq!(seen_by_intruder.len(), 1, "intruder saw: {seen_by_intruder:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(honest_drops(&[&n1, &n2, &n3]) > 0);
    assert_eq!(intruder.gossip_stats().unwrap().received_datagrams, 0);
    assert!(n1.gossip_stats().unwrap().received_datagrams > 0);
    intruder.shutdown().await.unwrap();

    // Kill n3 without leaving: the survivors see it dead within 2 s at 175 ms / phi 5.
    n3.shutdown().await.unwrap();
    let (_, took_n1) =
        eventually(&n1, "n3 dead", WAIT, |members| state_of(members, "n3") == Some(MemberState::Dead)).await;
    let (_, took_n2) =
        eventually(&n2, "n3 dead", WAIT, |members| state_of(members, "n3") == Some(MemberState::Dead)).await;
    let worst = took_n1.max(took_n2);
    assert!(worst <= Duration::from_secs(2), "death detected in {worst:?}, more than 2 s");
    for node in [n1, n2] {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn plain_udp_without_a_key_still_works() {
    let mut config = udp_config("p1", &GossipKey::generate(), &[]);
    config.key = None;
    let p1 = spawn_membership(config.clone(), Vec::new(), None).await.unwrap();
    config.node_name = "p2".to_string();
    config.seeds = vec![p1.gossip_addr().to_string()];
    let p2 = spawn_membership(config, Vec::new(), None).await.unwrap();
    eventually(&p1, "p2", WAIT, all_alive(&["p1", "p2"])).await;
    assert!(p1.gossip_stats().is_none());
    let termination = p1.termination();
    p1.shutdown().await.unwrap();
    tokio::time::timeout(WAIT, termination).await.unwrap().unwrap();
    p2.shutdown().await.unwrap();
}

/// Chitchat fills a datagram up to 65 507 bytes; sealed, it no longer fits one UDP datagram
/// and must be fragmented. A state of ~90 KB of incompressible values (chitchat compresses
/// deltas with zstd) only replicates if that works.
#[tokio::test]
async fn sealed_udp_replicates_a_state_larger_than_one_datagram() {
    use base64::Engine as _;
    let key = GossipKey::generate();
    let values: Vec<String> = (0..8)
        .map(|_| {
            let noise: Vec<u8> = (0..11_250).map(|_| rand::random::<u8>()).collect();
            base64::engine::general_purpose::STANDARD.encode(noise)
        })
        .collect();
    let n1 = start_udp("n1", &key, &[]).await;
    for (i, value) in values.iter().enumerate() {
        n1.set(&format!("blob-{i}"), value).await.unwrap();
    }
    let n2 = start_udp("n2", &key, &[n1.gossip_addr()]).await;
    eventually(&n2, "all of n1's values", WAIT, |members| {
        member(members, "n1")
            .is_some_and(|m| values.iter().enumerate().all(|(i, value)| m.kv.get(&format!("blob-{i}")) == Some(value)))
    })
    .await;
    let stats = n2.gossip_stats().unwrap();
    assert_eq!(stats.dropped_frame, 0);
    assert!(stats.received_bytes > 8 * 11_250, "{stats:?}");
    // At least one datagram needed two frames: more datagrams than messages were sent.
    let sent_by_n1 = n1.gossip_stats().unwrap();
    assert!(sent_by_n1.sent_bytes > 65_507, "{sent_by_n1:?}");
    for node in [n1, n2] {
        node.shutdown().await.unwrap();
    }
}
