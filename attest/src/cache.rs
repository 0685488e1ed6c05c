//! A cache of verified intermediate chains, so that documents from the same instance cost only
//! the leaf and document signatures.
//!
//! The key is a hash of the exact `cabundle` bytes. An entry records the interval in which every
//! certificate on the verified path (bundle, cross-certificate, anchor) is valid, and is used only
//! for times inside it; outside, the chain is verified again in full, which names the certificate
//! at fault. The trust configuration is fixed for a verifier, so it is not part of the key.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_lc_rs::digest;
use rustls_pki_types::TrustAnchor;

use crate::time::Timestamp;
use crate::types::Region;

/// How many chains a verifier remembers. Each entry is about a kilobyte; a busy broker sees a
/// handful of instances per hour.
const CAPACITY: usize = 1024;

#[derive(Clone, Debug)]
pub(crate) struct CachedChain {
    /// The CA that issues leaves (`cabundle`'s last certificate), as a webpki anchor.
    pub(crate) issuing_ca: TrustAnchor<'static>,
    pub(crate) issuing_subject: String,
    pub(crate) issuing_subject_raw: Vec<u8>,
    pub(crate) not_before: Timestamp,
    pub(crate) not_after: Timestamp,
    pub(crate) region: Option<Region>,
    pub(crate) anchor_subject: String,
    pub(crate) anchor_is_aws_root: bool,
    pub(crate) via_cross_certificate: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ChainCache {
    entries: Mutex<HashMap<[u8; 32], CachedChain>>,
}

impl ChainCache {
    pub(crate) fn key(cabundle: &[Vec<u8>]) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for cert in cabundle {
            let len = u64::try_from(cert.len()).unwrap_or(u64::MAX);
            ctx.update(&len.to_be_bytes());
            ctx.update(cert);
        }
        let mut key = [0; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }

    /// The chain for `key`, if it was verified before and every certificate on it is valid at
    /// `at`.
    pub(crate) fn get(&self, key: &[u8; 32], at: Timestamp) -> Option<CachedChain> {
        let at_secs = Timestamp::from_unix_secs(at.unix_secs());
        let entries = self.entries.lock().ok()?;
        entries
            .get(key)
            .filter(|c| c.not_before <= at_secs && at_secs <= c.not_after)
            .cloned()
    }

    pub(crate) fn insert(&self, key: [u8; 32], chain: CachedChain) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= CAPACITY && !entries.contains_key(&key) {
            // Evict the entry that expires first: it is the least useful.
            if let Some(oldest) = entries
                .iter()
                .min_by_key(|(_, c)| c.not_after)
                .map(|(k, _)| *k)
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(key, chain);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}
