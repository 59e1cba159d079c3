//! DICOM TLS (PS3.15 Annex B.1, the TLS secure transport connection profile): PEM files to
//! rustls configurations for the SCP and the SCUs, and the client certificate subject the
//! calling-AE allow-list may require.
//!
//! Keys are secrets: errors name the file, never its content.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The one crypto provider (ring, as reqwest uses), whatever else the process links.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the certificates of a PEM file (at least one).
pub fn load_certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    // Read first so a missing or unreadable file gets the operating system's words.
    let pem = std::fs::read(path).map_err(|e| file_error(what, path, e))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(what, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1). The error never quotes the file.
pub fn load_private_key(
    what: &'static str,
    path: &Path,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(what, path, e))?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| file_error(what, path, "holds no PEM private key"))
}

fn load_roots(what: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(what, path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(what, path, format!("not a usable CA certificate ({e})")))?;
    }
    Ok(Arc::new(roots))
}

fn certified_key(certificate: &Path, private_key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certificates("certificate", certificate)?;
    let key = load_private_key("private key", private_key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|_| file_error("private key", private_key, "not a supported private key"))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|_| {
        file_error(
            "private key",
            private_key,
            format!("does not match the certificate {}", certificate.display()),
        )
    })?;
    Ok(Arc::new(ck))
}

/// The SCP side: our certificate, and the CA that client certificates must chain to (mutual
/// TLS) when one is configured. Built once at start-up; [`ServerTls::for_connection`] makes
/// the configuration of one connection.
#[derive(Debug, Clone)]
pub struct ServerTls {
    key: Arc<CertifiedKey>,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// The client certificate subject common name a TLS handshake presented, for the allow-list
/// check of the same connection.
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(Arc<Mutex<Option<String>>>);

impl PeerCertificate {
    /// A certificate already seen with this common name (for tests of the policy).
    #[cfg(test)]
    pub(crate) fn with_common_name(cn: &str) -> PeerCertificate {
        PeerCertificate(Arc::new(Mutex::new(Some(cn.to_string()))))
    }

    /// The subject CN of the verified client certificate, if any.
    pub fn common_name(&self) -> Option<String> {
        self.0.lock().ok().and_then(|g| g.clone())
    }
}

impl ServerTls {
    /// Loads the files; any missing or unusable one is an error naming it.
    pub fn load(
        certificate: &Path,
        private_key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<ServerTls, TlsError> {
        let key = certified_key(certificate, private_key)?;
        let client_verifier = match client_ca {
            None => None,
            Some(ca) => Some(
                WebPkiClientVerifier::builder_with_provider(
                    load_roots("client CA", ca)?,
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Config(format!("client CA {}: {e}", ca.display())))?,
            ),
        };
        Ok(ServerTls {
            key,
            client_verifier,
        })
    }

    /// Whether clients must present a certificate from the client CA.
    pub fn mutual(&self) -> bool {
        self.client_verifier.is_some()
    }

    /// The configuration of one connection: it records the verified client certificate's
    /// subject in the returned [`PeerCertificate`].
    pub fn for_connection(&self) -> (Arc<rustls::ServerConfig>, PeerCertificate) {
        let seen = PeerCertificate::default();
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("BUG: ring supports the default TLS versions");
        let builder = match &self.client_verifier {
            Some(v) => builder.with_client_cert_verifier(Arc::new(Recording {
                inner: v.clone(),
                seen: seen.clone(),
            })),
            None => builder.with_no_client_auth(),
        };
        let config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(self.key.clone())));
        (Arc::new(config), seen)
    }
}

/// Verifies like `inner`, then keeps the subject CN of the accepted certificate.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ClientCertVerifier>,
    seen: PeerCertificate,
}

impl ClientCertVerifier for Recording {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if let Ok(mut g) = self.seen.0.lock() {
            *g = subject_common_name(end_entity);
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// TLS settings of one outgoing association (`radstream send`, DICOM export destinations).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// PEM CA certificate(s) the peer's certificate must chain to.
    pub ca: PathBuf,
    /// Our certificate, for peers that require one (mutual TLS).
    pub certificate: Option<PathBuf>,
    /// The private key of `certificate`.
    pub private_key: Option<PathBuf>,
}

impl ClientTlsFiles {
    /// Loads the files into a client configuration (the peer's certificate is verified
    /// against `ca` and the host name or address dialled).
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = load_roots("CA certificate", &self.ca)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("BUG: ring supports the default TLS versions")
            .with_root_certificates(roots);
        let config = match (&self.certificate, &self.private_key) {
            (Some(c), Some(k)) => builder
                .with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified_key(c, k)?))),
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config(
                    "a client certificate needs its private key and the other way round".into(),
                ))
            }
        };
        Ok(Arc::new(config))
    }
}

/// The subject common name (OID 2.5.4.3) of a DER X.509 certificate; `None` when it has none
/// or the encoding is not understood.
pub fn subject_common_name(cert: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (cert_body, _) = der_element(cert, 0x30)?;
    let (mut tbs, _) = der_element(cert_body, 0x30)?;
    // Optional explicit [0] version, then serial, signature algorithm, issuer, validity.
    if tbs.first() == Some(&0xa0) {
        tbs = der_any(tbs)?.1;
    }
    for _ in 0..4 {
        tbs = der_any(tbs)?.1;
    }
    let (mut subject, _) = der_element(tbs, 0x30)?;
    while !subject.is_empty() {
        let (mut rdn, rest) = der_element(subject, 0x31)?;
        subject = rest;
        while !rdn.is_empty() {
            let (atv, rest) = der_element(rdn, 0x30)?;
            rdn = rest;
            let (oid, value) = der_element(atv, 0x06)?;
            if oid == CN {
                let (_, content, _) = der_tlv(value)?;
                return std::str::from_utf8(content).ok().map(str::to_string);
            }
        }
    }
    None
}

/// One DER TLV: (tag, content, rest). Short and long definite lengths only.
fn der_tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let &[tag, first, ..] = b else {
        return None;
    };
    let first = usize::from(first);
    let (len, header) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, b.get(header..end)?, b.get(end..)?))
}

fn der_any(b: &[u8]) -> Option<(&[u8], &[u8])> {
    der_tlv(b).map(|(_, c, r)| (c, r))
}

fn der_element(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    der_tlv(b).and_then(|(t, c, r)| (t == tag).then_some((c, r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate made with `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256
    /// -subj "/O=Radstream Test/CN=MODALITY1"`, base64 DER.
    const CERT_B64: &str = include_str!("../fixtures/tls/modality1.b64");

    #[test]
    fn the_subject_common_name_is_read_from_der() {
        use base64::Engine;
        let der = base64::engine::general_purpose::STANDARD
            .decode(CERT_B64.split_whitespace().collect::<String>())
            .unwrap();
        assert_eq!(subject_common_name(&der).as_deref(), Some("MODALITY1"));
        assert_eq!(subject_common_name(&der[..der.len() / 2]), None);
        assert_eq!(subject_common_name(b"\x30\x80"), None);
    }

    #[test]
    fn a_missing_key_file_is_named_and_its_content_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "SECRET-MATERIAL-not-a-key").unwrap();
        let e = ServerTls::load(&cert, &key, None).unwrap_err().to_string();
        assert!(e.contains("c.pem"), "{e}");
        let e = load_private_key("private key", &key)
            .unwrap_err()
            .to_string();
        assert!(e.contains("k.pem") && !e.contains("SECRET"), "{e}");
    }
}
