//! The cluster's certificate authority and node identities, and the rustls configurations
//! built from them.
//!
//! `wasmfleet init` creates a [`ClusterCa`]; every node gets a [`NodeIdentity`]: a leaf
//! certificate whose only DNS subject-alternative name is the node id, signed by the CA. All
//! QUIC between nodes is mutual TLS under that CA ([`server_config`], [`client_config`]); a
//! node that has no certificate yet reaches a seed with [`join_client_config`], which pins the
//! CA by the sha256 fingerprint carried in the join token.
//!
//! Certificates are parsed with a small DER reader of our own (the module `der` below): it
//! reads only what we need (the subject, the public key, the DNS names) and rejects anything
//! malformed without panicking, since peer certificates are untrusted input.
//!
//! Map: [`PkiError`]; [`ClusterCa`] (generate, load, issue); [`NodeIdentity`] (load, save,
//! check); node ids and fingerprints; the rustls configurations (server, server accepting
//! joiners, client, join client pinning the CA); the pinned-CA verifier; the DER reader.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// ALPN protocol spoken on every wasmfleet QUIC connection.
pub const ALPN: &[u8] = b"wasmfleet/1";

/// Longest node id (and cluster id): one DNS label.
pub const MAX_ID_LEN: usize = 63;

/// File names of a saved [`NodeIdentity`].
pub const NODE_CERT_FILE: &str = "node.crt";
/// Private key file, written with mode 0600.
pub const NODE_KEY_FILE: &str = "node.key";
/// The cluster CA certificate (public).
pub const CA_CERT_FILE: &str = "ca.crt";

/// What went wrong creating, loading or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(
        "invalid node id {node_id:?}: {reason} (use 1-63 of a-z, 0-9, '-', not starting or ending with '-', at least one letter)"
    )]
    InvalidNodeId { node_id: String, reason: &'static str },
    #[error(
        "invalid cluster id {cluster_id:?}: {reason} (use 1-63 of a-z, 0-9, '-', not starting or ending with '-', at least one letter)"
    )]
    InvalidClusterId { cluster_id: String, reason: &'static str },
    #[error("could not generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("could not read {what} PEM: {reason}")]
    Pem { what: &'static str, reason: String },
    #[error("malformed certificate ({what}): {reason}")]
    MalformedCertificate { what: &'static str, reason: &'static str },
    #[error("the {what} private key does not belong to its certificate")]
    KeyMismatch { what: &'static str },
    #[error("certificate has no usable node id: {reason}")]
    NoNodeId { reason: String },
    #[error("invalid CA fingerprint {fingerprint:?}: expected 64 lowercase hex characters")]
    InvalidFingerprint { fingerprint: String },
    #[error("could not build TLS configuration: {reason}")]
    Tls { reason: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The cluster's certificate authority: a self-signed CA certificate and its private key.
#[derive(Clone)]
pub struct ClusterCa {
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Creates a new CA for the cluster `cluster_id` (same syntax as a node id).
    pub fn generate(cluster_id: &str) -> Result<Self, PkiError> {
        validate_label(cluster_id)
            .map_err(|reason| PkiError::InvalidClusterId { cluster_id: cluster_id.to_owned(), reason })?;
        let key = KeyPair::generate().map_err(|source| PkiError::Generate { what: "CA key", source })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = ca_name(cluster_id);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(|source| PkiError::Generate { what: "CA certificate", source })?;
        Ok(Self { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Loads a CA from its certificate and key (both PEM), checking that they belong together.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let ca = Self { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() };
        let der = ca.cert_der()?;
        let parts = der::cert_parts(&der).map_err(|reason| PkiError::MalformedCertificate { what: "CA", reason })?;
        let key = ca.key_pair()?;
        if key.subject_public_key_info() != parts.spki {
            return Err(PkiError::KeyMismatch { what: "CA" });
        }
        // Fails early if the subject is not one we can sign under.
        ca.issuer_name(&der)?;
        Ok(ca)
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key in PEM. Keep it secret: it can issue node certificates.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, PkiError> {
        cert_from_pem("CA certificate", &self.cert_pem)
    }

    /// Lowercase hex sha256 of the CA certificate DER, as pinned by join tokens.
    pub fn fingerprint(&self) -> String {
        match self.cert_der() {
            Ok(der) => fingerprint_of(&der),
            // Unreachable for a CA made by `generate` or checked by `from_pem`.
            Err(_) => String::new(),
        }
    }

    /// Issues a node certificate for `node_id`, signed by this CA.
    pub fn issue(&self, node_id: &str) -> Result<NodeIdentity, PkiError> {
        validate_node_id(node_id)?;
        let ca_der = self.cert_der()?;
        let issuer = Issuer::new(self.issuer_name(&ca_der)?, self.key_pair()?);
        let key = KeyPair::generate().map_err(|source| PkiError::Generate { what: "node key", source })?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, node_id);
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::DnsName(
            node_id.try_into().map_err(|source| PkiError::Generate { what: "node certificate name", source })?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial());
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|source| PkiError::Generate { what: "node certificate", source })?;
        // The leaf's issuer must be byte-identical to the CA subject, or chains will not build.
        let leaf = der::cert_parts(cert.der())
            .map_err(|reason| PkiError::MalformedCertificate { what: "issued node", reason })?;
        let ca = der::cert_parts(&ca_der).map_err(|reason| PkiError::MalformedCertificate { what: "CA", reason })?;
        if leaf.issuer != ca.subject {
            return Err(PkiError::MalformedCertificate {
                what: "issued node",
                reason: "issuer name differs from the CA subject",
            });
        }
        Ok(NodeIdentity {
            node_id: node_id.to_owned(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
        })
    }

    fn key_pair(&self) -> Result<KeyPair, PkiError> {
        KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::Pem { what: "CA key", reason: e.to_string() })
    }

    /// Rebuilds the CA's distinguished name (for rcgen's `Issuer`) from its certificate.
    fn issuer_name(&self, ca_der: &[u8]) -> Result<CertificateParams, PkiError> {
        let malformed = |reason| PkiError::MalformedCertificate { what: "CA", reason };
        let parts = der::cert_parts(ca_der).map_err(malformed)?;
        let mut name = DistinguishedName::new();
        for (oid, tag, value) in der::name_attributes(parts.subject).map_err(malformed)? {
            let ty = match oid {
                [0x55, 0x04, 0x03] => DnType::CommonName,
                [0x55, 0x04, 0x0a] => DnType::OrganizationName,
                _ => return Err(malformed("subject has an attribute other than CN or O")),
            };
            if tag != der::TAG_UTF8_STRING {
                return Err(malformed("subject attribute is not a UTF8String"));
            }
            let value = std::str::from_utf8(value).map_err(|_| malformed("subject is not UTF-8"))?;
            name.push(ty, DnValue::Utf8String(value.to_owned()));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = name;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(params)
    }
}

/// A node's certificate, private key and the cluster CA certificate, all PEM.
#[derive(Clone)]
pub struct NodeIdentity {
    pub node_id: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeIdentity").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl NodeIdentity {
    /// Writes `node.crt`, `node.key` (mode 0600) and `ca.crt` into `dir`, each atomically
    /// (`wasmfleet_durable::write`), creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        fs::create_dir_all(dir).map_err(|source| PkiError::Io {
            op: "create directory",
            path: dir.to_owned(),
            source,
        })?;
        write_atomic(&dir.join(CA_CERT_FILE), self.ca_pem.as_bytes(), wasmfleet_durable::PUBLIC)?;
        write_atomic(&dir.join(NODE_CERT_FILE), self.cert_pem.as_bytes(), wasmfleet_durable::PUBLIC)?;
        write_atomic(&dir.join(NODE_KEY_FILE), self.key_pem.as_bytes(), wasmfleet_durable::PRIVATE)?;
        Ok(())
    }

    /// Loads an identity saved by [`NodeIdentity::save`]. The node id is read from the
    /// certificate; the key must match it and the certificate must be issued by the CA.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            fs::read_to_string(&path).map_err(|source| PkiError::Io { op: "read", path, source })
        };
        let cert_pem = read(NODE_CERT_FILE)?;
        let key_pem = read(NODE_KEY_FILE)?;
        let ca_pem = read(CA_CERT_FILE)?;
        let cert = cert_from_pem("node certificate", &cert_pem)?;
        let node_id = node_id_from_cert(&cert)?;
        let identity = Self { node_id, cert_pem, key_pem, ca_pem };
        identity.check()?;
        Ok(identity)
    }

    /// Checks that the key matches the certificate and the certificate names `node_id`.
    pub fn check(&self) -> Result<(), PkiError> {
        let cert = cert_from_pem("node certificate", &self.cert_pem)?;
        cert_from_pem("CA certificate", &self.ca_pem)?;
        let parts = der::cert_parts(&cert).map_err(|reason| PkiError::MalformedCertificate { what: "node", reason })?;
        let key =
            KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::Pem { what: "node key", reason: e.to_string() })?;
        if key.subject_public_key_info() != parts.spki {
            return Err(PkiError::KeyMismatch { what: "node" });
        }
        let named = node_id_from_cert(&cert)?;
        if named != self.node_id {
            return Err(PkiError::NoNodeId {
                reason: format!("certificate names {named:?}, identity says {:?}", self.node_id),
            });
        }
        Ok(())
    }

    /// Lowercase hex sha256 of the cluster CA certificate.
    pub fn ca_fingerprint(&self) -> Result<String, PkiError> {
        Ok(fingerprint_of(&cert_from_pem("CA certificate", &self.ca_pem)?))
    }
}

/// Checks a node id: 1-63 of `[a-z0-9-]`, not starting or ending with `-`, at least one
/// letter (so it is a valid DNS name for certificate matching).
pub fn validate_node_id(node_id: &str) -> Result<(), PkiError> {
    validate_label(node_id).map_err(|reason| PkiError::InvalidNodeId { node_id: node_id.to_owned(), reason })
}

fn validate_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > MAX_ID_LEN {
        return Err("longer than 63 characters");
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("contains a character other than a-z, 0-9, '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("starts or ends with '-'");
    }
    if !s.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err("has no letter");
    }
    if ServerName::try_from(s).is_err() {
        return Err("not a valid DNS name");
    }
    Ok(())
}

/// Reads the node id from a certificate: its single DNS subject-alternative name, which must be
/// a valid node id. Used on peer certificates, which are untrusted input.
pub fn node_id_from_cert(cert_der: &[u8]) -> Result<String, PkiError> {
    let parts = der::cert_parts(cert_der).map_err(|reason| PkiError::MalformedCertificate { what: "peer", reason })?;
    let names =
        der::dns_names(parts.extensions).map_err(|reason| PkiError::MalformedCertificate { what: "peer", reason })?;
    let [name] = names.as_slice() else {
        return Err(PkiError::NoNodeId { reason: format!("expected exactly one DNS name, found {}", names.len()) });
    };
    let name =
        std::str::from_utf8(name).map_err(|_| PkiError::NoNodeId { reason: "DNS name is not ASCII".to_owned() })?;
    validate_node_id(name)?;
    Ok(name.to_owned())
}

/// Lowercase hex sha256 of a DER certificate.
pub fn fingerprint_of(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// Server side of the mesh: sends [node cert, CA cert] and REQUIRES a client certificate
/// issued by the cluster CA.
pub fn server_config(identity: &NodeIdentity) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    build_server_config(identity, false)
}

/// Like [`server_config`], but a client may also connect *without* a certificate (a node
/// that is joining). A client that presents a certificate must still present one issued by
/// the CA. The application must then serve only the join request to such peers: the mesh
/// reports them with `node_id: None`.
pub fn server_config_allowing_joiners(identity: &NodeIdentity) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    build_server_config(identity, true)
}

fn build_server_config(identity: &NodeIdentity, allow_joiners: bool) -> Result<Arc<rustls::ServerConfig>, PkiError> {
    let provider = provider();
    let (chain, key, roots) = identity_material(identity)?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if allow_joiners {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(tls_error)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Client side of the mesh: presents the node certificate and accepts a server only if its
/// chain leads to the cluster CA and its certificate names the server name given at connect
/// time, which the mesh sets to the node id expected at that address.
pub fn client_config(identity: &NodeIdentity) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let (chain, key, roots) = identity_material(identity)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Client config for a node without a certificate: presents none, and accepts a server only if
/// the chain it sends contains a CA certificate whose sha256 is `ca_fingerprint` and the leaf
/// is signed by that CA (any node name is accepted: the joiner does not know it yet).
pub fn join_client_config(ca_fingerprint: &str) -> Result<Arc<rustls::ClientConfig>, PkiError> {
    let pinned = parse_fingerprint(ca_fingerprint)?;
    let provider = provider();
    let verifier = Arc::new(PinnedCaVerifier { fingerprint: pinned, provider: provider.clone() });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Parses a lowercase hex sha256 fingerprint.
pub fn parse_fingerprint(fingerprint: &str) -> Result<[u8; 32], PkiError> {
    let invalid = || PkiError::InvalidFingerprint { fingerprint: fingerprint.chars().take(80).collect() };
    if fingerprint.len() != 64 || fingerprint.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid());
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(fingerprint, &mut out).map_err(|_| invalid())?;
    Ok(out)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_error(e: impl fmt::Display) -> PkiError {
    PkiError::Tls { reason: e.to_string() }
}

type Material = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, Arc<RootCertStore>);

fn identity_material(identity: &NodeIdentity) -> Result<Material, PkiError> {
    let leaf = cert_from_pem("node certificate", &identity.cert_pem)?;
    let ca = cert_from_pem("CA certificate", &identity.ca_pem)?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| PkiError::Pem { what: "node key", reason: e.to_string() })?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).map_err(tls_error)?;
    Ok((vec![leaf, ca], key, Arc::new(roots)))
}

fn cert_from_pem(what: &'static str, pem: &str) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem { what, reason: e.to_string() })
}

fn ca_name(cluster_id: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "wasmfleet");
    name.push(DnType::CommonName, format!("wasmfleet ca {cluster_id}"));
    name
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and without a leading zero byte, so the DER INTEGER is 16 bytes exactly.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    wasmfleet_durable::write(path, contents, mode).map_err(|e| PkiError::Io {
        op: match e.step {
            wasmfleet_durable::Step::Create => "create",
            wasmfleet_durable::Step::Write => "write",
            wasmfleet_durable::Step::Sync => "sync",
            wasmfleet_durable::Step::Rename => "rename",
            wasmfleet_durable::Step::SyncDir => "sync directory of",
        },
        path: e.path,
        source: e.source,
    })
}

/// Accepts a server whose chain contains the pinned CA and whose leaf that CA signed.
#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.fingerprint)
            .ok_or(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer))?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let leaf = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &leaf,
            &roots,
            &[],
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A minimal DER reader for X.509: only definite lengths, single-byte tags, bounds-checked.
mod der {
    pub(super) const TAG_SEQUENCE: u8 = 0x30;
    pub(super) const TAG_SET: u8 = 0x31;
    pub(super) const TAG_OID: u8 = 0x06;
    pub(super) const TAG_BOOLEAN: u8 = 0x01;
    pub(super) const TAG_OCTET_STRING: u8 = 0x04;
    pub(super) const TAG_UTF8_STRING: u8 = 0x0c;
    const TAG_EXPLICIT_0: u8 = 0xa0;
    const TAG_EXPLICIT_3: u8 = 0xa3;
    const TAG_DNS_NAME: u8 = 0x82;
    const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

    /// One tag-length-value: `raw` is the whole encoding, `value` its contents.
    pub(super) struct Tlv<'a> {
        pub tag: u8,
        pub value: &'a [u8],
        pub raw: &'a [u8],
    }

    /// Reads one TLV from the front of `input`, returning it and the rest.
    pub(super) fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), &'static str> {
        let (&tag, rest) = input.split_first().ok_or("truncated tag")?;
        if tag & 0x1f == 0x1f {
            return Err("multi-byte tag");
        }
        let (&first, mut rest) = rest.split_first().ok_or("truncated length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err("unsupported length form");
            }
            if rest.len() < n {
                return Err("truncated length");
            }
            let mut len = 0usize;
            for &b in &rest[..n] {
                len = (len << 8) | usize::from(b);
            }
            rest = &rest[n..];
            len
        };
        if rest.len() < len {
            return Err("length beyond end of input");
        }
        let header = input.len() - rest.len();
        let (value, rest) = rest.split_at(len);
        Ok((Tlv { tag, value, raw: &input[..header + len] }, rest))
    }

    fn expect<'a>(input: &'a [u8], tag: u8, what: &'static str) -> Result<(Tlv<'a>, &'a [u8]), &'static str> {
        let (tlv, rest) = read(input)?;
        if tlv.tag != tag {
            return Err(what);
        }
        Ok((tlv, rest))
    }

    /// The parts of a certificate we use, as raw encodings.
    pub(super) struct CertParts<'a> {
        pub issuer: &'a [u8],
        pub subject: &'a [u8],
        pub spki: &'a [u8],
        /// Contents of the `Extensions` SEQUENCE, empty if absent.
        pub extensions: &'a [u8],
    }

    pub(super) fn cert_parts(der: &[u8]) -> Result<CertParts<'_>, &'static str> {
        let (cert, trailing) = expect(der, TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
        if !trailing.is_empty() {
            return Err("trailing bytes after certificate");
        }
        let (tbs, _) = expect(cert.value, TAG_SEQUENCE, "tbsCertificate is not a SEQUENCE")?;
        let mut rest = tbs.value;
        let (first, after) = read(rest)?;
        if first.tag == TAG_EXPLICIT_0 {
            rest = after;
        }
        let (_serial, rest) = expect(rest, 0x02, "serial is not an INTEGER")?;
        let (_alg, rest) = expect(rest, TAG_SEQUENCE, "signature algorithm")?;
        let (issuer, rest) = expect(rest, TAG_SEQUENCE, "issuer is not a Name")?;
        let (_validity, rest) = expect(rest, TAG_SEQUENCE, "validity")?;
        let (subject, rest) = expect(rest, TAG_SEQUENCE, "subject is not a Name")?;
        let (spki, mut rest) = expect(rest, TAG_SEQUENCE, "subjectPublicKeyInfo")?;
        let mut extensions: &[u8] = &[];
        while !rest.is_empty() {
            let (tlv, after) = read(rest)?;
            if tlv.tag == TAG_EXPLICIT_3 {
                let (seq, _) = expect(tlv.value, TAG_SEQUENCE, "extensions is not a SEQUENCE")?;
                extensions = seq.value;
            }
            rest = after;
        }
        Ok(CertParts { issuer: issuer.raw, subject: subject.raw, spki: spki.raw, extensions })
    }

    /// The DNS names in the subjectAltName extension (contents of `Extensions`).
    pub(super) fn dns_names(mut extensions: &[u8]) -> Result<Vec<&[u8]>, &'static str> {
        let mut names = Vec::new();
        while !extensions.is_empty() {
            let (ext, after) = expect(extensions, TAG_SEQUENCE, "extension is not a SEQUENCE")?;
            extensions = after;
            let (oid, mut rest) = expect(ext.value, TAG_OID, "extension id is not an OID")?;
            if oid.value != OID_SUBJECT_ALT_NAME {
                continue;
            }
            let (tlv, after) = read(rest)?;
            if tlv.tag == TAG_BOOLEAN {
                rest = after;
            }
            let (octets, _) = expect(rest, TAG_OCTET_STRING, "extension value")?;
            let (general_names, _) = expect(octets.value, TAG_SEQUENCE, "GeneralNames")?;
            let mut items = general_names.value;
            while !items.is_empty() {
                let (item, after) = read(items)?;
                if item.tag == TAG_DNS_NAME {
                    names.push(item.value);
                }
                items = after;
            }
        }
        Ok(names)
    }

    /// (OID, string tag, string bytes) for each attribute of a Name, in order.
    /// One attribute of a Name: (OID, string tag, string bytes).
    pub(super) type Attribute<'a> = (&'a [u8], u8, &'a [u8]);

    pub(super) fn name_attributes(name: &[u8]) -> Result<Vec<Attribute<'_>>, &'static str> {
        let (seq, _) = expect(name, TAG_SEQUENCE, "Name is not a SEQUENCE")?;
        let mut out = Vec::new();
        let mut rdns = seq.value;
        while !rdns.is_empty() {
            let (set, after) = expect(rdns, TAG_SET, "RDN is not a SET")?;
            rdns = after;
            let mut atvs = set.value;
            while !atvs.is_empty() {
                let (atv, after) = expect(atvs, TAG_SEQUENCE, "attribute is not a SEQUENCE")?;
                atvs = after;
                let (oid, rest) = expect(atv.value, TAG_OID, "attribute type is not an OID")?;
                let (value, _) = read(rest)?;
                out.push((oid.value, value.tag, value.value));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_and_read_node_id() {
        let ca = ClusterCa::generate("test-cluster").unwrap();
        let id = ca.issue("node-1").unwrap();
        let der = cert_from_pem("t", &id.cert_pem).unwrap();
        assert_eq!(node_id_from_cert(&der).unwrap(), "node-1");
        id.check().unwrap();
        assert_eq!(id.ca_fingerprint().unwrap(), ca.fingerprint());
        assert_eq!(ca.fingerprint().len(), 64);
    }

    #[test]
    fn ca_round_trips_through_pem_and_still_issues() {
        let ca = ClusterCa::generate("c1").unwrap();
        let again = ClusterCa::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(again.fingerprint(), ca.fingerprint());
        let id = again.issue("n2").unwrap();
        // Chains to the original CA: build a client config and verify with webpki.
        let leaf = cert_from_pem("t", &id.cert_pem).unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der().unwrap()).unwrap();
        let parsed = ParsedCertificate::try_from(&leaf).unwrap();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            &[],
            UnixTime::now(),
            provider().signature_verification_algorithms.all,
        )
        .unwrap();
    }

    #[test]
    fn from_pem_rejects_foreign_key() {
        let a = ClusterCa::generate("a").unwrap();
        let b = ClusterCa::generate("b").unwrap();
        assert!(matches!(ClusterCa::from_pem(a.cert_pem(), b.key_pem()), Err(PkiError::KeyMismatch { .. })));
    }

    #[test]
    fn node_ids_are_validated() {
        let ca = ClusterCa::generate("c").unwrap();
        for bad in ["", "Node", "a_b", "-a", "a-", "123", "a.b", &"x".repeat(64)] {
            assert!(matches!(ca.issue(bad), Err(PkiError::InvalidNodeId { .. })), "{bad:?} accepted");
        }
        for good in ["a", "node-1", "1a", &"x".repeat(63)] {
            ca.issue(good).unwrap();
        }
    }

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::generate("c").unwrap();
        let id = ca.issue("node-a").unwrap();
        id.save(dir.path()).unwrap();
        let loaded = NodeIdentity::load(dir.path()).unwrap();
        assert_eq!(loaded.node_id, "node-a");
        assert_eq!(loaded.cert_pem, id.cert_pem);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(dir.path().join(NODE_KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A key from another identity is refused.
        let other = ca.issue("node-b").unwrap();
        fs::write(dir.path().join(NODE_KEY_FILE), other.key_pem).unwrap();
        assert!(matches!(NodeIdentity::load(dir.path()), Err(PkiError::KeyMismatch { .. })));
    }

    #[test]
    fn configs_build() {
        let ca = ClusterCa::generate("c").unwrap();
        let id = ca.issue("n").unwrap();
        server_config(&id).unwrap();
        server_config_allowing_joiners(&id).unwrap();
        client_config(&id).unwrap();
        join_client_config(&ca.fingerprint()).unwrap();
        assert!(join_client_config("abc").is_err());
        assert!(join_client_config(&ca.fingerprint().to_uppercase()).is_err());
    }

    #[test]
    fn der_reader_never_panics_on_garbage() {
        let ca = ClusterCa::generate("c").unwrap();
        let der = ca.issue("n").unwrap();
        let der = cert_from_pem("t", &der.cert_pem).unwrap().to_vec();
        for cut in 0..der.len() {
            let _ = node_id_from_cert(&der[..cut]);
        }
        for i in 0..der.len() {
            let mut bad = der.clone();
            bad[i] ^= 0xff;
            let _ = node_id_from_cert(&bad);
        }
    }
}
