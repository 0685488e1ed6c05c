//! `broker policy …`: checking, proposing, approving and applying release policies, and making
//! approvers' keys. Part of the `broker` binary (its command line), not of the library.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use broker::config::Config;
use broker::policy::ReleasePolicy;
use broker::state::StateDir;
use clap::Subcommand;
use proofs::durable::{Replace, write_atomically};

use crate::{pem, with_valid, write_new};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Check a release policy and print, per model, what it allows. Exit 1 if it is refused.
    #[command(after_help = "Example:\n  broker policy check release-policy.toml --json")]
    Check {
        /// The policy file.
        file: PathBuf,
        /// Print JSON: {version, sha384, notice_secs, models: {id: {measurements, allow_debug,
        /// max_age_secs, regions, lease_secs}}}.
        #[arg(long)]
        json: bool,
    },
    /// Propose a policy change: check the file against the policy in force and print what it
    /// changes, the statement each approver signs, and who must approve. Exit 1 if it is refused.
    #[command(after_help = "Example:\n  \
        broker policy propose release-policy-v4.toml --config broker.toml\n\n\
        Then each approver runs `broker policy approve` on the same file, and an operator runs \
        `broker policy apply` with the approvals.")]
    Propose {
        /// The proposed policy file.
        file: PathBuf,
        /// The broker's configuration (its approval rule and state).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a policy file: sign its SHA-384 and version with an approver's key (a PKCS#8 PEM
    /// file, or a key in a PKCS#11 token), certified by the national root for the
    /// policy-approver role. Needs no broker: run it where the key is.
    #[command(after_help = "Examples:\n  \
        broker policy approve release-policy-v4.toml --certificate alice.pem --key alice.key \\\n      \
        --out alice.approval\n  \
        APPROVER_PKCS11_PIN=… broker policy approve release-policy-v4.toml --certificate alice.pem \\\n      \
        --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --token alice --key-label approver --out alice.approval")]
    Approve {
        /// The policy file, exactly as it will be applied.
        file: PathBuf,
        /// The approver's certificate (PEM), issued by the national root for policy-approver.
        #[arg(long, value_name = "FILE")]
        certificate: PathBuf,
        /// The approver's private key (PKCS#8 PEM, P-384).
        #[arg(long, value_name = "FILE", conflicts_with_all = ["pkcs11_module", "token", "key_label"])]
        key: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArgs,
        /// Where to write the approval. Must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Make an approver's P-384 key: in a PKCS#11 token (never extractable), or as a PKCS#8 PEM
    /// file; write its public key for `attest pki certify-approver-key`.
    #[command(after_help = "Example:\n  \
        APPROVER_PKCS11_PIN=… broker policy approver-key --pkcs11-module /usr/lib/softhsm/libsofthsm2.so \\\n      \
        --token alice --key-label approver --public-key alice.pub.pem")]
    ApproverKey {
        /// Write the private key to this file (PKCS#8 PEM, mode 0600) instead of a token.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["pkcs11_module", "token", "key_label"])]
        key_out: Option<PathBuf>,
        #[command(flatten)]
        token: TokenArgs,
        /// Where to write the public key (PEM). Must not exist.
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
    },
    /// Apply an approved policy change: check the approvals against the configuration's rule
    /// and the national root (exit 1 naming who is missing), then put the approvals in the
    /// approvals directory and the file in the configured policy path. The serving broker
    /// adopts it within seconds (after its notice period, if it sets one), or at its next start.
    #[command(after_help = "Example:\n  \
        broker policy apply release-policy-v4.toml --approvals alice.approval bob.approval \\\n      \
        --config broker.toml")]
    Apply {
        /// The approved policy file.
        file: PathBuf,
        /// The approval files.
        #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
        approvals: Vec<PathBuf>,
        /// The broker's configuration.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A key in a PKCS#11 token (the PIN comes from $APPROVER_PKCS11_PIN).
#[derive(Debug, clap::Args)]
pub(crate) struct TokenArgs {
    /// The PKCS#11 module.
    #[arg(long, value_name = "FILE", requires_all = ["token", "key_label"])]
    pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, value_name = "LABEL")]
    token: Option<String>,
    /// The key's label in the token.
    #[arg(long, value_name = "LABEL")]
    key_label: Option<String>,
}

impl TokenArgs {
    fn key(&self) -> Option<broker::keystore::TokenKey> {
        Some(broker::keystore::TokenKey {
            module: self.pkcs11_module.clone()?,
            token: self.token.clone()?,
            label: self.key_label.clone()?,
        })
    }
}

fn approver_pin() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let pin = broker::secrets::get("APPROVER_PKCS11_PIN")
        .context("set $APPROVER_PKCS11_PIN to the token's user PIN")?;
    Ok(zeroize::Zeroizing::new(
        String::from_utf8(pin.to_vec())
            .context("the PIN is not text")?
            .trim_end()
            .to_owned(),
    ))
}

/// Runs one `broker policy` subcommand.
pub(crate) fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { file, json } => policy_check(&file, json),
        PolicyCommand::Propose { file, config, json } => policy_propose(&file, &config, json),
        PolicyCommand::Approve {
            file,
            certificate,
            key,
            token,
            out,
        } => policy_approve(&file, &certificate, key.as_deref(), &token, &out),
        PolicyCommand::ApproverKey {
            key_out,
            token,
            public_key,
        } => approver_key(key_out.as_deref(), &token, &public_key),
        PolicyCommand::Apply {
            file,
            approvals,
            config,
            json,
        } => policy_apply(&file, &approvals, &config, json),
    }
}

/// The policy in force per the state directory: the bytes adopted last, if kept.
fn policy_in_force(config: &Config) -> anyhow::Result<Option<ReleasePolicy>> {
    let state = StateDir::open(&config.state_dir)?;
    Ok(match state.adopted_policy()? {
        Some(bytes) => Some(ReleasePolicy::parse(&bytes)?),
        None => None,
    })
}

fn policy_propose(file: &Path, path: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let proposed = match ReleasePolicy::load(file) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("broker: {}: {e}", file.display());
            return Ok(ExitCode::from(1));
        }
    };
    let current = policy_in_force(&config)?;
    let hex = |b: &[u8]| data_encoding::HEXLOWER.encode(b);
    let mut problems = Vec::new();
    if let Some(c) = &current
        && proposed.version <= c.version
    {
        problems.push(format!(
            "its version {} must be above the version in force ({})",
            proposed.version, c.version
        ));
    }
    let before: std::collections::BTreeMap<String, serde_json::Value> = current
        .as_ref()
        .map(|c| {
            c.to_json()
                .get("models")
                .and_then(serde_json::Value::as_object)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .collect()
        })
        .unwrap_or_default();
    let after: std::collections::BTreeMap<String, serde_json::Value> = proposed
        .to_json()
        .get("models")
        .and_then(serde_json::Value::as_object)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
    let removed: Vec<&String> = before.keys().filter(|k| !after.contains_key(*k)).collect();
    let changed: Vec<&String> = after
        .iter()
        .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
        .map(|(k, _)| k)
        .collect();
    let rule = config.approval.as_ref().map(|a| &a.rule);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": proposed.version,
                "sha384": hex(&proposed.sha384),
                "notice_secs": proposed.notice.as_secs(),
                "version_in_force": current.as_ref().map(|c| c.version),
                "models_added": added,
                "models_removed": removed,
                "models_changed": changed,
                "required": rule.map(|r| r.required),
                "approvers": rule.map(|r| r.approvers.clone()),
                "problems": problems,
                "valid": problems.is_empty(),
            })
        );
    } else {
        println!(
            "policy {}: version {} (in force: {})",
            file.display(),
            proposed.version,
            current
                .as_ref()
                .map_or_else(|| "none".to_owned(), |c| c.version.to_string())
        );
        println!("  sha384   {}", hex(&proposed.sha384));
        let names = |v: &[&String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            }
        };
        println!(
            "  models   added {}; removed {}; changed {}",
            names(&added),
            names(&removed),
            names(&changed)
        );
        if !proposed.notice.is_zero() {
            println!(
                "  notice   takes effect {} after the last approval",
                attest::format_duration(proposed.notice)
            );
        }
        match rule {
            Some(r) => println!(
                "  approval {} of: {} (each signs SHA-384 and version with `broker policy approve`)",
                r.required,
                r.approvers.join(", ")
            ),
            None => println!("  approval none: dangerous_single_administrator is set"),
        }
        for p in &problems {
            println!("  refused: {p}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn policy_approve(
    file: &Path,
    certificate: &Path,
    key: Option<&Path>,
    token: &TokenArgs,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    use attest::approval::{Approval, ApprovalClaims};
    let policy = ReleasePolicy::load(file)?;
    let cert_pem = broker::config::read_bounded(certificate, broker::config::MAX_SMALL_FILE)?;
    let cert = attest::load_certificates(&cert_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", certificate.display()))?
        .into_iter()
        .next()
        .with_context(|| format!("{}: no certificate", certificate.display()))?;
    // The name the certificate gives, whatever root issued it: the broker checks the rest.
    let (_, x509) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| anyhow::anyhow!("{}: {e}", certificate.display()))?;
    let name = x509
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .with_context(|| format!("{}: no common name", certificate.display()))?
        .to_owned();
    let spki = x509.public_key().raw.to_vec();
    let claims = ApprovalClaims {
        policy_sha384: policy.sha384,
        policy_version: policy.version,
        approver: name.clone(),
        time: attest::Timestamp::now(),
    };
    let approval = match (key, token.key()) {
        (Some(key), None) => {
            let pem = zeroize::Zeroizing::new(broker::config::read_bounded(
                key,
                broker::config::MAX_SMALL_FILE,
            )?);
            let der = zeroize::Zeroizing::new(
                <rustls_pki_types::PrivatePkcs8KeyDer as rustls_pki_types::pem::PemObject>::from_pem_slice(&pem)
                    .map_err(|_| anyhow::anyhow!("{} is not a PKCS#8 PEM key", key.display()))?,
            );
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der.secret_pkcs8_der())
                    .map_err(|_| anyhow::anyhow!("{} is not a P-384 key", key.display()))?;
            Approval::sign(&claims, cert.to_vec(), |data| {
                pair.sign(&SystemRandom::new(), data)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|_| "signing failed".to_owned())
            })?
        }
        (None, Some(token_key)) => {
            let pin = approver_pin()?;
            Approval::sign(&claims, cert.to_vec(), |data| {
                token_key.sign(&pin, data).map_err(|e| e.to_string())
            })?
        }
        _ => anyhow::bail!(
            "give the approver's key: --key FILE, or --pkcs11-module, --token and --key-label"
        ),
    };
    // The signature must verify with the certificate's key: a key that is not the
    // certificate's would make an approval every broker refuses.
    let sign1 = attest::cose::parse_es384(
        &approval.signed,
        attest::approval::MAX_APPROVAL_LEN,
        attest::approval::APPROVAL_CONTENT_TYPE,
    )?;
    if attest::cose::verify_es384(&sign1, &spki).is_err() {
        anyhow::bail!("the key is not the one {} certifies", certificate.display());
    }
    write_new(out, approval.to_text().as_bytes(), false)?;
    println!(
        "{name} approved version {} (sha384 {}) in {}",
        policy.version,
        data_encoding::HEXLOWER.encode(&policy.sha384),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn approver_key(
    key_out: Option<&Path>,
    token: &TokenArgs,
    public_key: &Path,
) -> anyhow::Result<ExitCode> {
    if public_key.exists() {
        anyhow::bail!("{} exists", public_key.display());
    }
    let spki = match (key_out, token.key()) {
        (Some(path), None) => {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .map_err(|_| anyhow::anyhow!("key generation failed"))?;
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
                .map_err(|_| anyhow::anyhow!("key generation failed"))?;
            let pem_key = zeroize::Zeroizing::new(pem("PRIVATE KEY", pkcs8.as_ref()));
            write_new(path, pem_key.as_bytes(), true)?;
            pair.public_key()
                .as_der()
                .map_err(|_| anyhow::anyhow!("public key encoding"))?
                .as_ref()
                .to_vec()
        }
        (None, Some(token_key)) => token_key.generate(&approver_pin()?)?,
        _ => anyhow::bail!(
            "say where the key goes: --key-out FILE, or --pkcs11-module, --token and --key-label"
        ),
    };
    write_new(public_key, pem("PUBLIC KEY", &spki).as_bytes(), false)?;
    println!(
        "approver key made; its public key is in {}: have the national root certify it with \
         `attest pki certify-approver-key`",
        public_key.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn policy_apply(
    file: &Path,
    approvals: &[PathBuf],
    path: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let config = Config::load(path)?;
    let Some(approval) = &config.approval else {
        anyhow::bail!(
            "the configuration has no [approval] section: with dangerous_single_administrator \
             the policy file takes effect as written, at the next start"
        );
    };
    let policy = ReleasePolicy::load(file)?;
    if let Some(current) = policy_in_force(&config)?
        && policy.version <= current.version
    {
        eprintln!(
            "broker: refused: version {} is not above the version in force ({})",
            policy.version, current.version
        );
        return Ok(ExitCode::from(1));
    }
    let mut parsed = Vec::new();
    for a in approvals {
        let bytes = broker::config::read_bounded(a, 64 * 1024)?;
        parsed.push(
            attest::approval::Approval::parse(&bytes).with_context(|| a.display().to_string())?,
        );
    }
    let now = attest::Timestamp::now();
    let report = attest::approval::check_approvals(
        &policy.bytes,
        policy.version,
        &parsed,
        &approval.rule,
        &config.service_trust()?,
        now,
    );
    let takes_effect = report.last_approval().map(|last| {
        attest::Timestamp::from_unix_millis(
            last.unix_millis()
                .saturating_add(u64::try_from(policy.notice.as_millis()).unwrap_or(u64::MAX)),
        )
    });
    if json {
        println!(
            "{}",
            serde_json::json!({
                "version": policy.version,
                "sha384": data_encoding::HEXLOWER.encode(&policy.sha384),
                "approved_by": report.approved.keys().collect::<Vec<_>>(),
                "missing": report.missing,
                "refused": report.refused.iter().map(|(i, why)| serde_json::json!({
                    "file": approvals.get(*i).map(|p| p.display().to_string()),
                    "reason": why,
                })).collect::<Vec<_>>(),
                "required": report.required,
                "applied": report.is_enough(),
                "takes_effect": takes_effect.filter(|_| report.is_enough()).map(|t| t.to_string()),
            })
        );
    }
    if !report.is_enough() {
        if !json {
            eprintln!("broker: refused: {}", report.summary());
        }
        return Ok(ExitCode::from(1));
    }
    std::fs::create_dir_all(&approval.dir)
        .with_context(|| format!("creating {}", approval.dir.display()))?;
    let prefix = data_encoding::HEXLOWER.encode(&policy.sha384[..8]);
    for (i, a) in parsed.iter().enumerate() {
        if report.refused.iter().any(|(r, _)| *r == i) {
            continue;
        }
        let target = approval
            .dir
            .join(format!("v{}-{prefix}-{i}.approval", policy.version));
        write_atomically(
            &target,
            Replace {
                private: false,
                overwrite: true,
            },
            |w| w.write_all(a.to_text().as_bytes()),
        )?;
    }
    write_atomically(
        &config.policy,
        Replace {
            private: false,
            overwrite: true,
        },
        |w| w.write_all(&policy.bytes),
    )?;
    if !json {
        println!(
            "applied version {} ({}): the serving broker adopts it within {} s{}, or at its next \
             start, and logs its approvers",
            policy.version,
            report.summary(),
            broker::revocation::POLL.as_secs(),
            takes_effect
                .filter(|t| *t > now)
                .map(|t| format!(" of {t} (its notice period)"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn policy_check(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let policy = match ReleasePolicy::load(file) {
        Ok(p) => p,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "valid": false, "error": e.to_string() })
                );
            } else {
                eprintln!("broker: {}: {e}", file.display());
            }
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        println!("{}", with_valid(policy.to_json()));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "release policy version {} (SHA-384 {})",
        policy.version,
        data_encoding::HEXLOWER.encode(&policy.sha384)
    );
    for (id, p) in &policy.models {
        println!("model {id}:");
        for (i, set) in p.measurements().iter().enumerate() {
            println!("  allowed image {}:", i + 1);
            for (index, value) in set.pcrs() {
                println!("    {index} = {value}");
            }
        }
        println!(
            "  debug enclaves: {}",
            if p.allows_debug() {
                "ALLOWED"
            } else {
                "refused"
            }
        );
        match p.max_age_limit() {
            Some(age) => println!(
                "  documents older than {} refused",
                attest::format_duration(age)
            ),
            None => println!("  documents of any age accepted"),
        }
        if p.regions().is_empty() {
            println!("  any region");
        } else {
            let regions: Vec<&str> = p.regions().iter().map(|r| r.as_str()).collect();
            println!("  regions: {}", regions.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
