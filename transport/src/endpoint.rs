//! Which transport to use, as written in configuration: `vsock`, `vsock:<cid>` or
//! `unix:<path>`.

use core::fmt;
use core::str::FromStr;

use std::io;

use crate::{Connection, HybridVsock, Transport, Vsock};

/// A transport chosen by configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// vsock: `vsock` inside the enclave, `vsock:<cid>` on the host.
    Vsock(Vsock),
    /// Hybrid vsock over a Unix socket: `unix:<path>`.
    Hybrid(HybridVsock),
}

/// A transport string that is none of `vsock`, `vsock:<cid>`, `unix:<path>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid transport `{0}`: expected `vsock`, `vsock:<cid>` or `unix:<path>`")]
pub struct InvalidEndpoint(pub String);

impl FromStr for Endpoint {
    type Err = InvalidEndpoint;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidEndpoint(text.chars().take(256).collect());
        if text == "vsock" {
            return Ok(Endpoint::Vsock(Vsock::inside_enclave()));
        }
        if let Some(cid) = text.strip_prefix("vsock:") {
            let cid = cid.parse::<u32>().map_err(|_| invalid())?;
            // CIDs 0-2 are the hypervisor, local and host addresses, never an enclave.
            if cid <= 2 {
                return Err(invalid());
            }
            return Ok(Endpoint::Vsock(Vsock::new(cid)));
        }
        match text.strip_prefix("unix:") {
            Some(path) if !path.is_empty() && !path.contains('\0') => {
                Ok(Endpoint::Hybrid(HybridVsock::new(path)))
            }
            _ => Err(invalid()),
        }
    }
}

impl Endpoint {
    /// Host side: connect to the enclave's `port` over whichever transport this is.
    pub async fn connect(&self, port: u32) -> io::Result<Box<dyn Connection>> {
        Ok(match self {
            Endpoint::Vsock(vsock) => Box::new(vsock.connect(port).await?),
            Endpoint::Hybrid(hybrid) => Box::new(hybrid.connect(port).await?),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Vsock(v) if v == &Vsock::inside_enclave() => f.write_str("vsock"),
            Endpoint::Vsock(v) => write!(f, "vsock:{}", v.cid),
            Endpoint::Hybrid(h) => write!(f, "unix:{}", h.path().display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_each_form() {
        for text in ["vsock", "vsock:16", "unix:/run/enclave.sock"] {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(endpoint.to_string(), text);
        }
        assert_eq!(
            "vsock:16".parse::<Endpoint>().unwrap(),
            Endpoint::Vsock(Vsock::new(16))
        );
        for bad in [
            "",
            "vsock:",
            "vsock:2",
            "vsock:x",
            "unix:",
            "tcp:1.2.3.4:5",
            "VSOCK",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad}");
        }
    }
}
