//! Boot: choose the NSM (refusing the simulated one in a production build), then measure the
//! configuration into its PCR and lock it.

use std::sync::Arc;

use attest::PcrValue;

use crate::config::{CONFIG_PCR, Config, NsmConfig};
use crate::nitro_nsm::NitroNsm;
use protocol::nsm::{Nsm, NsmError};

/// Whether this build contains the simulated NSM (the `simulated-nsm` feature).
pub const SIMULATED_NSM_COMPILED: bool = cfg!(feature = "simulated-nsm");

/// Why the enclave would not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration asks for a development NSM (the simulated one, or the emulator's)
    /// and this build does not include it.
    #[error(
        "this enclave build refuses the {kind} NSM: it was built without the \
         `simulated-nsm` feature (a production build). Use nsm.kind = \"nitro\" on Nitro \
         hardware, or build with `--features enclave/simulated-nsm` for development"
    )]
    SimulatedNsmRefused {
        /// The NSM asked for (`simulated` or `emulator`).
        kind: &'static str,
    },
    /// The NSM failed.
    #[error(transparent)]
    Nsm(#[from] NsmError),
    /// The configuration PCR did not end up where the configuration says it should.
    #[error("PCR{index} is {actual} after boot, expected {expected}: it was extended before")]
    ConfigPcrMismatch {
        /// The PCR.
        index: u8,
        /// Its value.
        actual: PcrValue,
        /// What measuring this configuration into a fresh PCR gives.
        expected: PcrValue,
    },
    /// The simulated NSM's root certificate could not be read.
    #[error("simulated NSM: the root certificate: {0}")]
    SimulatedRoot(#[from] attest::TrustError),
    /// The simulated NSM's root certificate file holds no certificate.
    #[error("simulated NSM: no certificate in the root certificate file")]
    SimulatedRootMissing,
    /// The simulated NSM's root key could not be read.
    #[error("simulated NSM: the root key: {0}")]
    SimulatedKey(#[from] crate::config::ConfigError),
    /// The simulated NSM's root key is not PEM text.
    #[error("simulated NSM: the root key is not PEM")]
    SimulatedKeyNotPem,
    /// The simulated NSM could not read its own executable to measure it.
    #[error("simulated NSM: cannot measure this executable: {0}")]
    OwnExecutable(#[source] std::io::Error),
}

/// Refuse a configuration that needs a development NSM (simulated, or the emulator's) when it
/// is not compiled in.
pub fn permit(nsm: &NsmConfig, simulated_compiled: bool) -> Result<(), StartError> {
    if nsm.is_development() && !simulated_compiled {
        return Err(StartError::SimulatedNsmRefused { kind: nsm.kind() });
    }
    Ok(())
}

/// Open the NSM the configuration names.
pub fn open_nsm(config: &Config) -> Result<Arc<dyn Nsm>, StartError> {
    permit(&config.nsm, SIMULATED_NSM_COMPILED)?;
    match &config.nsm {
        NsmConfig::Nitro => Ok(Arc::new(NitroNsm::open()?)),
        #[cfg(feature = "simulated-nsm")]
        NsmConfig::Simulated(sim) => simulated::open(sim),
        #[cfg(feature = "simulated-nsm")]
        NsmConfig::Emulator(sim) => simulated::open_emulator(sim),
        #[cfg(not(feature = "simulated-nsm"))]
        other @ (NsmConfig::Simulated(_) | NsmConfig::Emulator(_)) => {
            Err(StartError::SimulatedNsmRefused { kind: other.kind() })
        }
    }
}

/// Extend the configuration's digest into [`CONFIG_PCR`] and lock it, so that every attestation
/// document from now on carries the measurement and nothing can change it.
pub fn measure_config(nsm: &dyn Nsm, config: &Config) -> Result<PcrValue, StartError> {
    let actual = nsm.extend_pcr(CONFIG_PCR, &config.digest())?;
    nsm.lock_pcr(CONFIG_PCR)?;
    let expected = config.expected_pcr();
    if actual != expected {
        return Err(StartError::ConfigPcrMismatch {
            index: CONFIG_PCR.get(),
            actual,
            expected,
        });
    }
    Ok(actual)
}

#[cfg(feature = "simulated-nsm")]
mod simulated {
    use std::sync::Arc;

    use attest::{PcrValue, Timestamp};

    use super::StartError;
    use crate::config::{SimulatedNsmConfig, read_bounded};
    use crate::emulator_nsm::EmulatorNsm;
    use crate::nitro_nsm::NitroNsm;
    use crate::simulated_nsm::{BootMeasurements, DevelopmentRoot, SimulatedNsm, SimulatedSigner};
    use protocol::nsm::Nsm;

    fn development_root(sim: &SimulatedNsmConfig) -> Result<DevelopmentRoot, StartError> {
        let certificate = attest::load_certificates(&sim.root_certificate_bytes)?
            .into_iter()
            .next()
            .ok_or(StartError::SimulatedRootMissing)?;
        let key = read_bounded(&sim.root_key)?;
        let key_pem = String::from_utf8(key).map_err(|_| StartError::SimulatedKeyNotPem)?;
        Ok(DevelopmentRoot {
            certificate,
            key_pem,
        })
    }

    /// The emulator's real NSM device, its documents signed again under the development root.
    pub(super) fn open_emulator(sim: &SimulatedNsmConfig) -> Result<Arc<dyn Nsm>, StartError> {
        let root = development_root(sim)?;
        let device = NitroNsm::open()?;
        tracing::warn!(
            "EMULATOR NSM: PCRs and documents come from the emulated Nitro enclave's NSM; its \
             unsigned documents are signed again under a simulated Nitro root, not by AWS Nitro \
             hardware; never use this build in production"
        );
        let signer = SimulatedSigner::new(root, sim.region.clone(), Box::new(Timestamp::now));
        Ok(Arc::new(EmulatorNsm::new(device, signer)))
    }

    pub(super) fn open(sim: &SimulatedNsmConfig) -> Result<Arc<dyn Nsm>, StartError> {
        let root = development_root(sim)?;
        let boot = match sim.boot_pcrs {
            Some([pcr0, pcr1, pcr2]) => BootMeasurements {
                pcr0,
                pcr1,
                pcr2,
                pcr8: sim.pcr8,
            },
            None => measure_own_executable()?,
        };
        tracing::warn!(
            pcr0 = %boot.pcr0,
            "SIMULATED NSM: attestation documents are signed under a simulated Nitro root, not by \
             AWS Nitro hardware; never use this build in production"
        );
        Ok(Arc::new(SimulatedNsm::new(
            root,
            sim.region.clone(),
            boot,
            Box::new(Timestamp::now),
        )))
    }

    /// Without an image, PCR0 and PCR2 measure this executable and PCR1 measures nothing (there
    /// is no kernel), so that a changed binary changes the measurements.
    fn measure_own_executable() -> Result<BootMeasurements, StartError> {
        let bytes = std::env::current_exe()
            .and_then(std::fs::read)
            .map_err(StartError::OwnExecutable)?;
        let application = PcrValue::measure(&bytes);
        Ok(BootMeasurements {
            pcr0: application,
            pcr1: PcrValue::measure(b""),
            pcr2: application,
            pcr8: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::SimulatedNsmConfig;

    fn simulated() -> NsmConfig {
        NsmConfig::Simulated(Box::new(SimulatedNsmConfig {
            root_certificate: PathBuf::from("root.pem"),
            root_certificate_bytes: Vec::new(),
            root_key: PathBuf::from("root.key"),
            region: attest::Region::try_from("eu-central-1").unwrap(),
            boot_pcrs: None,
            pcr8: None,
        }))
    }

    #[test]
    fn a_production_build_refuses_the_simulated_nsm() {
        let error = permit(&simulated(), false).unwrap_err();
        assert!(matches!(
            error,
            StartError::SimulatedNsmRefused { kind: "simulated" }
        ));
        assert!(error.to_string().contains("simulated-nsm"));
        assert!(permit(&simulated(), true).is_ok());
        assert!(permit(&NsmConfig::Nitro, false).is_ok());
        let NsmConfig::Simulated(sim) = simulated() else {
            unreachable!()
        };
        let emulator = NsmConfig::Emulator(sim);
        let error = permit(&emulator, false).unwrap_err();
        assert!(
            error.to_string().contains("refuses the emulator NSM"),
            "{error}"
        );
        assert!(permit(&emulator, true).is_ok());
    }

    #[cfg(not(feature = "simulated-nsm"))]
    #[test]
    fn this_build_refuses_the_simulated_nsm() {
        let mut config = Config::embedded_default();
        config.nsm = simulated();
        assert!(matches!(
            open_nsm(&config),
            Err(StartError::SimulatedNsmRefused { kind: "simulated" })
        ));
        let NsmConfig::Simulated(sim) = simulated() else {
            unreachable!()
        };
        config.nsm = NsmConfig::Emulator(sim);
        assert!(matches!(
            open_nsm(&config),
            Err(StartError::SimulatedNsmRefused { kind: "emulator" })
        ));
    }

    #[test]
    fn the_real_nsm_is_not_faked_outside_an_enclave() {
        if std::path::Path::new("/dev/nsm").exists() {
            return;
        }
        let error = open_nsm(&Config::embedded_default()).unwrap_err();
        assert!(error.to_string().contains("/dev/nsm"), "{error}");
    }
}
