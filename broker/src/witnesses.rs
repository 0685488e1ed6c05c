//! Asking the log's witnesses to cosign each new checkpoint (C2SP `tlog-witness`), before a
//! release or a renewal is answered.
//!
//! Every witness is asked at once, each with a consistency proof from the size it last
//! acknowledged. A witness that has seen another size answers 409 with that size, and is asked
//! once more with a proof from there. A cosignature is kept only once it verifies under the
//! witness's configured key over this checkpoint. A release needs `required` of them: with
//! fewer, nothing is sent, and the reasons are logged. A witness that reports a larger tree than
//! the log holds, or refuses the checkpoint as inconsistent (422), has seen another history of
//! this log: that is logged as an error, because the log was forked or rolled back.
//!
//! The client speaks HTTP/1.1 over TCP (`http://` URLs only): the witness's answer is
//! self-authenticating (a signature under a configured key), and requests carry nothing secret.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use proofs::cosignature::CosignatureVerifier;
use proofs::note::NoteSignature;
use proofs::{Log, LogStore, Note, SignedCheckpoint};

/// The largest answer read from a witness.
const MAX_ANSWER_LEN: usize = 16 * 1024;

/// Where a witness listens: `http://host:port[/prefix]`; requests go to `<prefix>/add-checkpoint`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessUrl {
    authority: String,
    path: String,
}

impl WitnessUrl {
    /// Parse an `http://` URL with a host and a port.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: only http:// URLs (cosignatures authenticate themselves)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let port_ok = authority.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok {
            return Err(format!("{url:?}: expected http://HOST:PORT[/PATH]"));
        }
        let visible = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if !visible(authority) || !visible(path) || path.contains(['?', '#']) {
            return Err(format!("{url:?}: no spaces, queries or fragments"));
        }
        Ok(Self {
            authority: authority.to_owned(),
            path: format!("{}/add-checkpoint", path.trim_end_matches('/')),
        })
    }
}

impl std::fmt::Display for WitnessUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// One witness: its key and where it listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WitnessConfig {
    /// Its cosignature key.
    pub key: CosignatureVerifier,
    /// Its URL.
    pub url: WitnessUrl,
}

/// The witnesses a broker asks, and how many must cosign.
#[derive(Debug)]
pub struct Witnesses {
    remotes: Vec<Remote>,
    required: usize,
    timeout: Duration,
}

#[derive(Debug)]
struct Remote {
    config: WitnessConfig,
    /// The tree size this witness acknowledged last (0 before it is asked).
    known: Mutex<u64>,
}

/// Fewer witnesses cosigned than required; each failure, by witness.
#[derive(Debug, thiserror::Error)]
#[error("{cosigned} of the {required} witness cosignatures required: {}", failures.join("; "))]
pub struct NotWitnessed {
    /// How many cosigned.
    pub cosigned: usize,
    /// How many must.
    pub required: usize,
    /// What went wrong with the others.
    pub failures: Vec<String>,
}

impl Witnesses {
    /// Ask `witnesses`, of which `required` must cosign, waiting at most `timeout` for each.
    pub fn new(witnesses: Vec<WitnessConfig>, required: usize, timeout: Duration) -> Self {
        Self {
            remotes: witnesses
                .into_iter()
                .map(|config| Remote {
                    config,
                    known: Mutex::new(0),
                })
                .collect(),
            required,
            timeout,
        }
    }

    /// How many must cosign.
    pub fn required(&self) -> usize {
        self.required
    }

    /// The witnesses, for announcements.
    pub fn names(&self) -> Vec<String> {
        self.remotes
            .iter()
            .map(|r| format!("{} at {}", r.config.key.name(), r.config.url))
            .collect()
    }

    /// Ask every witness to cosign `checkpoint`, the latest of `log`; returns the cosignatures
    /// that verified, at least `required` of them.
    pub fn cosign<S: LogStore + Sync>(
        &self,
        log: &Log<S>,
        checkpoint: &SignedCheckpoint,
    ) -> Result<Vec<NoteSignature>, NotWitnessed> {
        let answers: Vec<Result<NoteSignature, String>> = std::thread::scope(|scope| {
            let asks: Vec<_> = self
                .remotes
                .iter()
                .map(|remote| scope.spawn(|| remote.ask(log, checkpoint, self.timeout)))
                .collect();
            asks.into_iter()
                .zip(&self.remotes)
                .map(|(ask, remote)| {
                    ask.join().unwrap_or_else(|_| {
                        Err(format!(
                            "{}: the request panicked",
                            remote.config.key.name()
                        ))
                    })
                })
                .collect()
        });
        let mut cosignatures = Vec::new();
        let mut failures = Vec::new();
        for answer in answers {
            match answer {
                Ok(signature) => cosignatures.push(signature),
                Err(failure) => failures.push(failure),
            }
        }
        for failure in &failures {
            tracing::warn!(size = checkpoint.checkpoint.size, "witness: {failure}");
        }
        if cosignatures.len() < self.required {
            return Err(NotWitnessed {
                cosigned: cosignatures.len(),
                required: self.required,
                failures,
            });
        }
        Ok(cosignatures)
    }
}

impl Remote {
    fn ask<S: LogStore>(
        &self,
        log: &Log<S>,
        checkpoint: &SignedCheckpoint,
        timeout: Duration,
    ) -> Result<NoteSignature, String> {
        let name = self.config.key.name();
        let size = checkpoint.checkpoint.size;
        let mut old = (*self.known.lock().unwrap_or_else(PoisonError::into_inner)).min(size);
        for _ in 0..2 {
            let proof = if old == 0 || old == size {
                Vec::new()
            } else {
                log.prove_consistency(old, size)
                    .map_err(|e| format!("{name}: no consistency proof from {old}: {e}"))?
                    .hashes
            };
            let mut body = format!("old {old}\n");
            for hash in &proof {
                body.push_str(&hash.to_base64());
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&checkpoint.note);
            let (status, answer) = post(&self.config.url, body.as_bytes(), timeout)
                .map_err(|e| format!("{name} ({}): {e}", self.config.url))?;
            match status {
                200 => {
                    let signature = self.cosignature(&checkpoint.note, &answer)?;
                    *self.known.lock().unwrap_or_else(PoisonError::into_inner) = size;
                    return Ok(signature);
                }
                409 => {
                    let seen = std::str::from_utf8(&answer)
                        .ok()
                        .and_then(|t| t.trim_end_matches('\n').parse::<u64>().ok())
                        .ok_or_else(|| format!("{name}: a 409 without a tree size"))?;
                    if seen > size {
                        tracing::error!(
                            witness = name,
                            witness_size = seen,
                            log_size = size,
                            "a witness has cosigned a larger tree of this log than it holds: \
                             the log was rolled back or forked"
                        );
                        return Err(format!(
                            "{name} has cosigned a tree of {seen} entries; this log holds {size}"
                        ));
                    }
                    *self.known.lock().unwrap_or_else(PoisonError::into_inner) = seen;
                    old = seen;
                }
                422 => {
                    tracing::error!(
                        witness = name,
                        size,
                        "a witness refuses the checkpoint as inconsistent with the tree it \
                         cosigned: the log was forked or rewritten"
                    );
                    return Err(format!("{name} refuses: {}", printable(&answer)));
                }
                other => return Err(format!("{name} answered {other}: {}", printable(&answer))),
            }
        }
        Err(format!("{name} changed its tree size twice while asked"))
    }

    /// This witness's cosignature among the lines of `answer`, verified over `note`'s text.
    fn cosignature(&self, note: &str, answer: &[u8]) -> Result<NoteSignature, String> {
        let name = self.config.key.name();
        let text = std::str::from_utf8(answer).map_err(|_| format!("{name}: not UTF-8"))?;
        let parsed = Note::parse(note.as_bytes()).map_err(|e| format!("{name}: {e}"))?;
        let lines = Note::parse(format!("{}\n{text}", parsed.text).as_bytes())
            .map_err(|e| format!("{name}: the answer is not cosignature lines: {e}"))?;
        lines
            .signatures
            .into_iter()
            .find(|s| self.config.key.verify(&parsed.text, s).is_some())
            .ok_or_else(|| format!("{name}: no valid cosignature by its configured key"))
    }
}

/// What a witness said, for an error message: printable ASCII, at most 200 characters.
fn printable(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(200)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                ' '
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// POST `body` to `url`; returns the status and the body of the answer.
fn post(url: &WitnessUrl, body: &[u8], timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout:?}"))
    };
    let addr = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("resolving: {e}"))?
        .next()
        .ok_or("resolving: no address")?;
    let mut stream =
        TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("connecting: {e}"))?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        url.path,
        url.authority,
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("sending: {e}"))?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(buf.get(..n).unwrap_or_default());
                if answer.len() > MAX_ANSWER_LEN {
                    return Err(format!("the answer is over {MAX_ANSWER_LEN} bytes"));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
    parse_answer(&answer)
}

/// An HTTP/1.1 answer read to the end: the status and the body (bounded by Content-Length).
fn parse_answer(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an incomplete HTTP answer")?;
    let (head, body) = answer.split_at(split);
    let body = body.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| "the HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .and_then(|l| l.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("not an HTTP/1.1 answer")?;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err("a malformed HTTP header".into());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("Transfer-Encoding {value} is not supported"));
        }
    }
    let body = match length {
        Some(n) => body
            .get(..n)
            .ok_or("the answer is shorter than its Content-Length")?,
        None => body,
    };
    Ok((status, body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_port() {
        let url = WitnessUrl::parse("http://127.0.0.1:7380").unwrap();
        assert_eq!(url.to_string(), "http://127.0.0.1:7380/add-checkpoint");
        let url = WitnessUrl::parse("http://w.example:80/witness/").unwrap();
        assert_eq!(
            url.to_string(),
            "http://w.example:80/witness/add-checkpoint"
        );
        for bad in [
            "https://w.example:443",
            "http://w.example",
            "http://:80",
            "http://w.example:0",
            "http://w.example:99999",
            "http://w.example:80/a b",
            "http://w.example:80/?q",
            "w.example:80",
        ] {
            assert!(WitnessUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_parsed_strictly() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nabcdef";
        assert_eq!(parse_answer(ok).unwrap(), (200, b"abc".to_vec()));
        let close = b"HTTP/1.1 409 Conflict\r\n\r\n12\n";
        assert_eq!(parse_answer(close).unwrap(), (409, b"12\n".to_vec()));
        for bad in [
            &b"HTTP/1.1 200 OK\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno-colon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        ] {
            assert!(
                parse_answer(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
