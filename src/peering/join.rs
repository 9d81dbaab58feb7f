//! Becoming a member: this node's cluster identity loaded, a new cluster created, or a
//! cluster joined with a token ([`prepare`], [`join`]); and, on the member a joiner asks,
//! checking its proof and granting it an identity ([`Shared::admit`]).

use super::*;

/// Loads this node's cluster identity, or creates a new cluster, or joins one with a token.
pub(super) async fn prepare(
    data_dir: &Path,
    node_id: &str,
    opts: &ClusterOptions,
) -> Result<(ClusterFile, ClusterCa, NodeIdentity)> {
    let dir = cluster_dir(data_dir);
    let file_path = dir.join("cluster.json");
    if file_path.exists() {
        let file: ClusterFile = serde_json::from_slice(&std::fs::read(&file_path)?)
            .with_context(|| format!("reading {}", file_path.display()))?;
        if file.node_id != node_id {
            bail!(
                "this data dir belongs to node `{}` of cluster {}; start with --node-name {} or use another --data-dir",
                file.node_id,
                file.cluster_id,
                file.node_id
            );
        }
        let ca = ClusterCa::from_pem(
            &std::fs::read_to_string(dir.join("ca.crt"))?,
            &std::fs::read_to_string(dir.join("ca.key"))?,
        )?;
        let identity = NodeIdentity::load(&dir)?;
        return Ok((file, ca, identity));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let (file, ca, identity) = match (&opts.token, opts.join.is_empty()) {
        (None, true) => {
            let cluster_id = format!("wf-{}", hex::encode(rand::random::<[u8; 6]>()));
            let ca = ClusterCa::generate(&cluster_id)?;
            let identity = ca.issue(node_id)?;
            let file = ClusterFile {
                cluster_id,
                node_id: node_id.to_string(),
                gossip_key: GossipKey::generate().to_hex(),
                gossip_seeds: Vec::new(),
            };
            (file, ca, identity)
        }
        (None, false) => bail!("--join needs --token (create one on a member with `wasmfleet token create`)"),
        (Some(token), _) => join(node_id, token, &opts.join).await?,
    };
    write_private(&dir.join("ca.key"), ca.key_pem().as_bytes())?;
    write_private(&dir.join("ca.crt"), ca.cert_pem().as_bytes())?;
    identity.save(&dir)?;
    write_private(&file_path, &serde_json::to_vec_pretty(&file)?)?;
    Ok((file, ca, identity))
}

pub(super) async fn join(
    node_id: &str,
    token_text: &str,
    seeds: &[SocketAddr],
) -> Result<(ClusterFile, ClusterCa, NodeIdentity)> {
    let token = JoinToken::parse(token_text.trim()).map_err(|e| anyhow!("invalid join token: {e}"))?;
    if token.is_expired(now_ms()) {
        bail!("the join token expired; create a new one with `wasmfleet token create`");
    }
    let mut targets: Vec<SocketAddr> = seeds.to_vec();
    targets.extend(token.seeds.iter().copied().filter(|s| !seeds.contains(s)));
    let nonce: [u8; 16] = rand::random();
    let proof = secret_proof(&token.secret, node_id, &nonce);
    let req = rmp_serde::to_vec_named(&Rpc::Join {
        node_id: node_id.to_string(),
        nonce: nonce.to_vec(),
        proof: proof.to_vec(),
    })?;
    let mut last_err = anyhow!("no seed to join through");
    for seed in targets {
        let local: SocketAddr = if seed.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        match join_call(local, seed, &token.ca_fingerprint, Bytes::from(req.clone()), Duration::from_secs(5)).await {
            Ok(bytes) => {
                let Reply::Joined(grant) = rmp_serde::from_slice(&bytes)? else {
                    bail!("unexpected answer from {seed}")
                };
                let ca = ClusterCa::from_pem(&grant.ca_cert, &grant.ca_key)?;
                if ca.fingerprint() != token.ca_fingerprint {
                    bail!("{seed} sent a CA that does not match the token's fingerprint");
                }
                let identity = NodeIdentity {
                    node_id: node_id.to_string(),
                    cert_pem: grant.node_cert,
                    key_pem: grant.node_key,
                    ca_pem: grant.ca_cert.clone(),
                };
                identity.check()?;
                let file = ClusterFile {
                    cluster_id: grant.cluster_id,
                    node_id: node_id.to_string(),
                    gossip_key: grant.gossip_key,
                    gossip_seeds: grant.gossip_seeds,
                };
                return Ok((file, ca, identity));
            }
            Err(e) => last_err = anyhow!("joining through {seed}: {e}"),
        }
    }
    Err(last_err)
}

impl Shared {
    /// Checks a joiner's proof against the tokens this node issued and grants it an identity.
    pub(super) fn admit(&self, node_id: &str, nonce: &[u8], proof: &[u8]) -> Result<JoinGrant> {
        let proof: [u8; 32] = proof.try_into().map_err(|_| anyhow!("join refused: malformed proof"))?;
        if nonce.len() < 16 {
            bail!("join refused: nonce too short");
        }
        let now = now_ms();
        let valid = self.tokens.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|t| {
            let mut secret = [0u8; 32];
            t.expires_at_ms > now
                && hex::decode_to_slice(&t.secret, &mut secret).is_ok()
                && verify_secret_proof(&secret, node_id, nonce, &proof)
        });
        if !valid {
            tracing::warn!(node = %node_id, "join refused: no valid token");
            bail!(
                "join refused: the token is not valid here (wrong, expired, or issued by another node of another cluster)"
            );
        }
        let identity = self.ca.issue(node_id)?;
        let gossip = self.gossip_advertise.lock().unwrap_or_else(|e| e.into_inner()).map(|a| a.to_string());
        tracing::info!(node = %node_id, "admitted a new node");
        Ok(JoinGrant {
            cluster_id: self.cluster_id.clone(),
            ca_cert: self.ca.cert_pem().to_string(),
            ca_key: self.ca.key_pem().to_string(),
            node_cert: identity.cert_pem,
            node_key: identity.key_pem,
            gossip_key: self.gossip_key.to_hex(),
            gossip_seeds: gossip.into_iter().collect(),
        })
    }
}
