//! The enclave's TLS identity: a P-384 key generated inside the enclave at boot and a
//! self-signed certificate for it. Nobody vouches for the certificate by signature; the
//! attestation document does, by binding its SHA-384 ([`protocol::channel`]).
//!
//! TLS 1.3 only, through rustls on aws-lc-rs. Session tickets and the session cache are off, so
//! that no key material about a past connection outlives it.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::NoServerSessionStorage;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// Why the identity could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The key or its certificate could not be generated.
    #[error("cannot create the TLS key or certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot configure TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate and the server configuration that presents it.
pub struct TlsIdentity {
    certificate: CertificateDer<'static>,
    config: Arc<ServerConfig>,
}

impl core::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A fresh key and certificate.
    pub fn generate() -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)?;
        let mut params = rcgen::CertificateParams::new(vec!["enclave.attested".to_owned()])?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "attested enclave (bound by its attestation document)",
        );
        let certificate = params.self_signed(&key)?;
        let certificate = CertificateDer::from(certificate.der().to_vec());
        let pkcs8 = Zeroizing::new(key.serialize_der());
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(vec![certificate.clone()], private)?;
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            certificate,
            config: Arc::new(config),
        })
    }

    /// The certificate, DER.
    pub fn certificate(&self) -> &[u8] {
        self.certificate.as_ref()
    }

    /// The rustls server configuration.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}
