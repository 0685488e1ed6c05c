//! Signing with a key held in a PKCS#11 token (an HSM; SoftHSM2 in tests): the private key never
//! leaves the token, which is given the digest to sign (`CKM_ECDSA`).

use std::path::Path;

use anyhow::{Context, bail};
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use eif::{PcrSigner, SignatureError, SigningAlgorithm};
use rustls_pki_types::CertificateDer;

/// A token's ECDSA private key with the certificate for it.
pub(crate) struct TokenSigner {
    session: Session,
    key: ObjectHandle,
    certificate: CertificateDer<'static>,
    algorithm: SigningAlgorithm,
}

impl TokenSigner {
    /// Log in to the token labelled `token` through `module` and find the private key labelled
    /// `key`. Whether the key belongs to `certificate` is checked when the first signature is
    /// verified, before anything is written.
    pub(crate) fn open(
        module: &Path,
        token: &str,
        key: &str,
        pin: &str,
        certificate: &[u8],
    ) -> anyhow::Result<Self> {
        let (certificate, algorithm) =
            eif::certificate_for_signing(certificate).context("signing certificate")?;
        let pkcs11 = Pkcs11::new(module)
            .with_context(|| format!("loading the PKCS#11 module {}", module.display()))?;
        pkcs11
            .initialize(CInitializeArgs::OsThreads)
            .context("initialising the PKCS#11 module")?;
        let mut found = None;
        for slot in pkcs11.get_slots_with_token().context("listing tokens")? {
            let info = pkcs11.get_token_info(slot).context("reading token info")?;
            if info.label().trim_end() == token {
                found = Some(slot);
                break;
            }
        }
        let Some(slot) = found else {
            bail!(
                "no PKCS#11 token labelled {token:?} in {}",
                module.display()
            );
        };
        let session = pkcs11
            .open_ro_session(slot)
            .with_context(|| format!("opening a session with token {token:?}"))?;
        session
            .login(UserType::User, Some(&AuthPin::new(pin.into())))
            .with_context(|| format!("logging in to token {token:?}"))?;
        let keys = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(key.as_bytes().to_vec()),
            ])
            .context("searching the token for the key")?;
        let [handle] = keys.as_slice() else {
            bail!(
                "token {token:?} holds {} private keys labelled {key:?}; expected exactly one",
                keys.len()
            );
        };
        Ok(TokenSigner {
            key: *handle,
            session,
            certificate,
            algorithm,
        })
    }
}

impl PcrSigner for TokenSigner {
    fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let digest = aws_lc_rs::digest::digest(self.algorithm.digest(), message);
        self.session
            .sign(&Mechanism::Ecdsa, self.key, digest.as_ref())
            .map_err(|e| SignatureError::Signing(format!("PKCS#11 C_Sign: {e}")))
    }
}
