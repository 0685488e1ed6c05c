//! The client's TLS: 1.3 only, no resumption, and a certificate verifier that checks only that
//! the server holds the key of the certificate it presents.
//!
//! The enclave's certificate is self-signed and no authority vouches for it; its attestation
//! document does, by binding the certificate's SHA-384 ([`protocol::channel`]). So the handshake
//! accepts any well-formed certificate, proves possession of its key through the handshake
//! signature, and the session refuses to send anything until the document fetched over this
//! very connection names this very certificate.

use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts the certificate pending the attestation check, and verifies handshake signatures.
#[derive(Debug)]
struct AttestedCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AttestedCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // Deliberately deferred: the session checks the certificate against the attestation
        // document before it sends a request that carries anything of the user's.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        // The configuration offers TLS 1.3 only; a TLS 1.2 signature is never acceptable.
        Err(Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client configuration: TLS 1.3, aws-lc-rs, HTTP/1.1, no session resumption.
pub(crate) fn client_config() -> Result<Arc<ClientConfig>, Error> {
    let provider: Arc<CryptoProvider> = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AttestedCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Every connection is attested afresh: a resumed session would skip the certificate.
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
