//! `attest pki`: a development national root, and cross-certificates under it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use attest::Timestamp;
use attest::pki::{cross_certify, init_root};
use rustls_pki_types::CertificateDer;

use crate::shared::{Verdict, read_small_file, write_new_file};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create a development national root CA (ECDSA P-384): a certificate and its private key.
    #[command(
        after_help = "Example:\n  attest pki init-root --cert national-root.pem --key national-root.key \\\n      \
        --name \"Example National Root CA\" --not-before 2020-01-01T00:00:00Z --days 7300\n\n\
        The key is written with mode 0600. A production root belongs in an HSM."
    )]
    InitRoot {
        /// Where to write the certificate (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Where to write the private key (PKCS#8 PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The root's common name.
        #[arg(long, default_value = "Development National Root CA")]
        name: String,
        /// The root's organization.
        #[arg(long, default_value = "Development Government")]
        organization: String,
        /// The root's two-letter country code.
        #[arg(long, default_value = "XX")]
        country: String,
        #[command(flatten)]
        validity: Validity,
    },
    /// Issue a cross-certificate for another root (by default the AWS Nitro root G1) under a
    /// national root, so that a verifier trusting only the national root accepts that root's
    /// documents while the cross-certificate is valid.
    #[command(
        after_help = "Example:\n  attest pki cross-certify --issuer-cert national-root.pem \\\n      \
        --issuer-key national-root.key --not-before 2021-01-01T00:00:00Z --days 1461 \\\n      \
        --out aws-cross.pem\n\n\
        Withdraw trust by letting it expire, or by removing it from verifiers."
    )]
    CrossCertify {
        /// The issuing (national) root certificate.
        #[arg(long, value_name = "FILE")]
        issuer_cert: PathBuf,
        /// The issuing root's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// The root to cross-certify (PEM or DER). Default: the built-in AWS Nitro root G1.
        #[arg(long, value_name = "FILE")]
        target: Option<PathBuf>,
        /// Where to write the cross-certificate (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        validity: Validity,
    },
    /// Certify a transparency-log key (a C2SP signed-note verifier key) under a national root,
    /// so that verifiers holding the root learn the key with --log-cert.
    #[command(
        after_help = "Example:\n  attest pki certify-log-key --issuer-cert national-root.pem \\\n      \
        --issuer-key national-root.key --log-key log.vkey --days 365 --out log.pem\n  \
        attest log verify-inclusion entry.tlog-proof --entry entry.cbor \\\n      \
        --log-cert log.pem --log-root national-root.pem"
    )]
    CertifyLogKey {
        /// The issuing (national) root certificate.
        #[arg(long, value_name = "FILE")]
        issuer_cert: PathBuf,
        /// The issuing root's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// The log's verifier key, `<name>+<key ID>+<base64 key>`, or a file holding one.
        #[arg(long, value_name = "VKEY|FILE")]
        log_key: String,
        /// Where to write the certificate (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        validity: Validity,
    },
    /// Certify a key broker's response key (ECDSA P-384, a PEM public key as `broker init`
    /// writes it) under a national root, for the key-broker role: enclaves holding the root
    /// accept release responses signed with it.
    #[command(
        after_help = "Example:\n  attest pki certify-broker-key --issuer-cert national-root.pem \\\n      \
        --issuer-key national-root.key --public-key broker.pub.pem --days 365 --out broker.pem"
    )]
    CertifyBrokerKey {
        /// The issuing (national) root certificate.
        #[arg(long, value_name = "FILE")]
        issuer_cert: PathBuf,
        /// The issuing root's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// The broker's public key (PEM `PUBLIC KEY`, P-384).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The certificate's common name.
        #[arg(long, default_value = "key-broker")]
        name: String,
        /// Where to write the certificate (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        validity: Validity,
    },
    /// Certify a policy approver's key (ECDSA P-384, a PEM public key as `broker policy
    /// approver-key` writes it) under a national root, for the policy-approver role: brokers
    /// whose configuration names `--name` among their approvers count its approvals.
    #[command(
        after_help = "Example:\n  attest pki certify-approver-key --issuer-cert national-root.pem \\\n      \
        --issuer-key national-root.key --public-key alice.pub.pem --name alice@gov.example \\\n      \
        --days 365 --out alice.pem"
    )]
    CertifyApproverKey {
        /// The issuing (national) root certificate.
        #[arg(long, value_name = "FILE")]
        issuer_cert: PathBuf,
        /// The issuing root's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// The approver's public key (PEM `PUBLIC KEY`, P-384).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// The approver's name, as brokers' `[approval] approvers` list it.
        #[arg(long)]
        name: String,
        /// Where to write the certificate (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        validity: Validity,
    },
    /// Mint an attestation document in the real Nitro format under a simulated Nitro root,
    /// through a simulated regional, zonal and instance CA. It verifies with that root as a
    /// Nitro root (--nitro-root), or through a national root's cross-certificate for it, never
    /// with the AWS root. For development and pipeline tests.
    #[command(
        after_help = "Example:\n  attest pki init-root --name \"Simulated Nitro Root\" \\\n      \
        --cert nitro-root.pem --key nitro-root.key\n  \
        attest pki simulate --issuer-cert nitro-root.pem --issuer-key nitro-root.key \\\n      \
        --pcr 0=$(printf 'ab%.0s' $(seq 48)) --nonce 0badc0de --out sim.cbor\n  \
        attest verify sim.cbor --no-aws-root --nitro-root nitro-root.pem --nonce 0badc0de\n  \
        attest pki cross-certify --issuer-cert national-root.pem \\\n      \
        --issuer-key national-root.key --target nitro-root.pem --out nitro-cross.pem\n  \
        attest verify sim.cbor --no-aws-root --root national-root.pem \\\n      \
        --cross-cert nitro-cross.pem --nonce 0badc0de"
    )]
    Simulate {
        /// The simulated Nitro root's certificate.
        #[arg(long, value_name = "FILE")]
        issuer_cert: PathBuf,
        /// The simulated Nitro root's private key (PKCS#8 PEM).
        #[arg(long, value_name = "FILE")]
        issuer_key: PathBuf,
        /// The region the simulated CAs name.
        #[arg(long, default_value = "eu-central-1")]
        region: String,
        /// A PCR value, as INDEX=HEX (96 hex digits). Repeatable. PCRs 0-15 not given are
        /// reported as all zeros, so set PCR0 unless you want a debug-mode document.
        #[arg(long = "pcr", value_name = "INDEX=HEX")]
        pcrs: Vec<String>,
        /// The nonce (hex).
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        /// User data (hex).
        #[arg(long, value_name = "HEX")]
        user_data: Option<String>,
        /// The document time (RFC 3339). Default: now.
        #[arg(long, value_name = "RFC3339")]
        at: Option<String>,
        /// Where to write the document (raw CBOR). Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct Validity {
    /// Start of validity (RFC 3339). Default: now.
    #[arg(long, value_name = "RFC3339")]
    not_before: Option<String>,
    /// End of validity (RFC 3339).
    #[arg(long, value_name = "RFC3339", conflicts_with = "days")]
    not_after: Option<String>,
    /// Validity length in days from --not-before.
    #[arg(long)]
    days: Option<u64>,
}

impl Validity {
    fn resolve(&self, default_days: u64) -> anyhow::Result<(Timestamp, Timestamp)> {
        let not_before = match &self.not_before {
            Some(t) => Timestamp::parse_rfc3339(t).context("--not-before")?,
            None => Timestamp::now(),
        };
        let not_after = match (&self.not_after, self.days) {
            (Some(t), _) => Timestamp::parse_rfc3339(t).context("--not-after")?,
            (None, days) => not_before.saturating_add(core::time::Duration::from_secs(
                days.unwrap_or(default_days).saturating_mul(86_400),
            )),
        };
        if not_after <= not_before {
            bail!("the validity ends ({not_after}) before it starts ({not_before})");
        }
        Ok((not_before, not_after))
    }
}

pub(crate) fn run(command: Command) -> anyhow::Result<Verdict> {
    match command {
        Command::InitRoot {
            cert,
            key,
            name,
            organization,
            country,
            validity,
        } => {
            let (not_before, not_after) = validity.resolve(3650)?;
            let root = init_root(&name, &organization, &country, not_before, not_after)?;
            write_new_file(&key, root.private_key_pem.as_bytes(), true)?;
            write_new_file(&cert, pem(&root.certificate).as_bytes(), false)?;
            println!(
                "created root {name:?}, valid {not_before} → {not_after}\n  certificate {}\n  private key {} (keep it offline)",
                cert.display(),
                key.display()
            );
        }
        Command::CrossCertify {
            issuer_cert,
            issuer_key,
            target,
            out,
            validity,
        } => {
            let (not_before, not_after) = validity.resolve(365)?;
            let issuer = one_certificate(&issuer_cert)?;
            let key = String::from_utf8(read_small_file(&issuer_key, "issuer key")?)
                .context("issuer key is not PEM")?;
            let key = zeroize::Zeroizing::new(key);
            let target = match &target {
                Some(path) => one_certificate(path)?,
                None => attest::aws_nitro_root_g1(),
            };
            let cross = cross_certify(&issuer, &key, &target, not_before, not_after)?;
            write_new_file(&out, pem(&cross).as_bytes(), false)?;
            println!(
                "cross-certificate written to {}, valid {not_before} → {not_after}",
                out.display()
            );
        }
        Command::CertifyLogKey {
            issuer_cert,
            issuer_key,
            log_key,
            out,
            validity,
        } => {
            let (not_before, not_after) = validity.resolve(365)?;
            let issuer = one_certificate(&issuer_cert)?;
            let key = zeroize::Zeroizing::new(
                String::from_utf8(read_small_file(&issuer_key, "issuer key")?)
                    .context("issuer key is not PEM")?,
            );
            let verifier = crate::log::read_vkey(&log_key).context("--log-key")?;
            let cert = attest::pki::certify_service_key(
                &issuer,
                &key,
                &verifier.to_spki_der(),
                verifier.name(),
                attest::service::ServiceRole::TransparencyLog,
                not_before,
                not_after,
            )?;
            write_new_file(&out, pem(&cert).as_bytes(), false)?;
            println!(
                "log key {} certified in {}, valid {not_before} → {not_after}",
                verifier.name(),
                out.display()
            );
        }
        Command::CertifyBrokerKey {
            issuer_cert,
            issuer_key,
            public_key,
            name,
            out,
            validity,
        } => {
            let key = ServiceKeyToCertify {
                issuer_cert: &issuer_cert,
                issuer_key: &issuer_key,
                public_key: &public_key,
                name: &name,
                out: &out,
            };
            let (not_before, not_after) =
                key.certify(attest::service::ServiceRole::KeyBroker, &validity)?;
            println!(
                "key broker {name:?} certified in {}, valid {not_before} → {not_after}",
                out.display()
            );
        }
        Command::CertifyApproverKey {
            issuer_cert,
            issuer_key,
            public_key,
            name,
            out,
            validity,
        } => {
            let key = ServiceKeyToCertify {
                issuer_cert: &issuer_cert,
                issuer_key: &issuer_key,
                public_key: &public_key,
                name: &name,
                out: &out,
            };
            let (not_before, not_after) =
                key.certify(attest::service::ServiceRole::Approver, &validity)?;
            println!(
                "policy approver {name:?} certified in {}, valid {not_before} → {not_after}",
                out.display()
            );
        }
        Command::Simulate {
            issuer_cert,
            issuer_key,
            region,
            pcrs,
            nonce,
            user_data,
            at,
            out,
        } => {
            let root = one_certificate(&issuer_cert)?;
            let key = zeroize::Zeroizing::new(
                String::from_utf8(read_small_file(&issuer_key, "issuer key")?)
                    .context("issuer key is not PEM")?,
            );
            let at = match at {
                Some(t) => Timestamp::parse_rfc3339(&t).context("--at")?,
                None => Timestamp::now(),
            };
            let region = attest::Region::try_from(region.as_str()).context("--region")?;
            let mut request = attest::sim::SimulatedRequest::default();
            for i in 0..16 {
                request
                    .pcrs
                    .insert(attest::PcrIndex::try_from(i)?, attest::PcrValue::ZERO);
            }
            for pcr in &pcrs {
                let (index, value) = pcr.split_once('=').context("--pcr takes INDEX=HEX")?;
                let index: u64 = index.parse().context("--pcr index")?;
                request.pcrs.insert(
                    attest::PcrIndex::try_from(index).context("--pcr index")?,
                    attest::PcrValue::from_hex(value).context("--pcr value")?,
                );
            }
            let hex = |field: &Option<String>, name: &str| -> anyhow::Result<Option<Vec<u8>>> {
                field
                    .as_deref()
                    .map(|h| {
                        data_encoding::HEXLOWER_PERMISSIVE
                            .decode(h.as_bytes())
                            .with_context(|| format!("{name} is not hex"))
                    })
                    .transpose()
            };
            let nonce = hex(&nonce, "--nonce")?;
            let user_data = hex(&user_data, "--user-data")?;
            request.nonce = nonce.as_deref();
            request.user_data = user_data.as_deref();
            let pki = attest::sim::SimulatedPki::new(&root, &key, region, at)?;
            let document = pki.attest(&request, at)?;
            write_new_file(&out, &document, false)?;
            println!(
                "simulated document written to {} (made at {at})",
                out.display()
            );
        }
    }
    Ok(Verdict::Accepted)
}

/// The DER SubjectPublicKeyInfo of a PEM `PUBLIC KEY` that is an ECDSA P-384 key.
fn p384_public_key(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    use rustls_pki_types::SubjectPublicKeyInfoDer;
    use rustls_pki_types::pem::PemObject;
    use x509_parser::oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384};
    use x509_parser::prelude::FromDer;
    use x509_parser::x509::SubjectPublicKeyInfo;

    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).context("not a PEM public key")?;
    let (_, info) = SubjectPublicKeyInfo::from_der(&der).context("not a DER public key")?;
    let curve = info
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if info.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_NIST_EC_P384) {
        bail!("the key broker's key must be ECDSA P-384");
    }
    Ok(der.to_vec())
}

fn one_certificate(path: &Path) -> anyhow::Result<CertificateDer<'static>> {
    let mut certs = attest::load_certificates(&read_small_file(path, "certificate")?)
        .with_context(|| path.display().to_string())?;
    if certs.len() != 1 {
        bail!(
            "{} holds {} certificates; expected one",
            path.display(),
            certs.len()
        );
    }
    certs.pop().context("no certificate")
}

fn pem(der: &CertificateDer<'_>) -> String {
    let body = data_encoding::BASE64.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A P-384 service key to certify under a national root.
struct ServiceKeyToCertify<'a> {
    issuer_cert: &'a Path,
    issuer_key: &'a Path,
    public_key: &'a Path,
    name: &'a str,
    out: &'a Path,
}

impl ServiceKeyToCertify<'_> {
    fn certify(
        &self,
        role: attest::service::ServiceRole,
        validity: &Validity,
    ) -> anyhow::Result<(attest::Timestamp, attest::Timestamp)> {
        let (not_before, not_after) = validity.resolve(365)?;
        let issuer = one_certificate(self.issuer_cert)?;
        let key = zeroize::Zeroizing::new(
            String::from_utf8(read_small_file(self.issuer_key, "issuer key")?)
                .context("issuer key is not PEM")?,
        );
        let spki = p384_public_key(&read_small_file(self.public_key, "public key")?)
            .with_context(|| self.public_key.display().to_string())?;
        let cert = attest::pki::certify_service_key(
            &issuer, &key, &spki, self.name, role, not_before, not_after,
        )?;
        write_new_file(self.out, pem(&cert).as_bytes(), false)?;
        Ok((not_before, not_after))
    }
}
