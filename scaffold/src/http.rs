//! A small blocking HTTP/1.1 client for plain `http://` URLs, for requests whose answers
//! authenticate themselves (witness cosignatures, log tiles): one request per connection, a
//! deadline over the whole exchange, a bound on the answer, no redirects, no chunked bodies.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// An `http://host:port[/prefix]` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    authority: String,
    /// The prefix, without a trailing `/` (empty for the root).
    prefix: String,
}

impl HttpUrl {
    /// Parse an `http://` URL with a host and a port.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url:?}: only http:// URLs"))?;
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
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The path of `rest` below the prefix.
    pub fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.prefix)
    }

    /// The URL of `rest` below the prefix, for messages.
    pub fn join(&self, rest: &str) -> String {
        format!("http://{}{}", self.authority, self.path(rest))
    }
}

impl std::fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// `method` `rest` (below `url`'s prefix) with `body` (sent as `text/plain` when not empty);
/// returns the status and the body of the answer, which must fit in `max_len` bytes, all within
/// `timeout`.
pub fn request(
    method: &str,
    url: &HttpUrl,
    rest: &str,
    body: &[u8],
    timeout: Duration,
    max_len: usize,
) -> Result<(u16, Vec<u8>), String> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {timeout:?}"))
    };
    let addrs: Vec<std::net::SocketAddr> = url
        .authority
        .to_socket_addrs()
        .map_err(|e| format!("resolving: {e}"))?
        .collect();
    let mut connected = Err("resolving: no address".to_owned());
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, left()?) {
            Ok(stream) => {
                connected = Ok(stream);
                break;
            }
            Err(e) => connected = Err(format!("connecting to {addr}: {e}")),
        }
    }
    let mut stream = connected?;
    stream
        .set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let content = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let head = format!(
        "{method} {} HTTP/1.1\r\nHost: {}\r\n{content}Connection: close\r\n\r\n",
        url.path(rest),
        url.authority,
    );
    let _ = stream.set_nodelay(true);
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream
        .write_all(&message)
        .map_err(|e| format!("sending: {e}"))?;
    // Room for the head above the body's bound.
    let limit = max_len.saturating_add(16 * 1024);
    let mut answer = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(buf.get(..n).unwrap_or_default());
                if answer.len() > limit {
                    return Err(format!("the answer is over {max_len} bytes"));
                }
                // Complete once the head and the body it announces are in: a server that keeps
                // the connection open costs nothing more.
                if let Ok((_, body, Some(length))) = split_answer(&answer)
                    && body.len() >= length
                {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading: {e}")),
        }
    }
    let (status, body) = parse_answer(&answer)?;
    if body.len() > max_len {
        return Err(format!("the answer is over {max_len} bytes"));
    }
    Ok((status, body))
}

/// An HTTP/1.1 answer read to the end: the status and the body (bounded by Content-Length).
fn parse_answer(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let (status, body, length) = split_answer(answer)?;
    let body = match length {
        Some(n) => body
            .get(..n)
            .ok_or("the answer is shorter than its Content-Length")?,
        None => body,
    };
    Ok((status, body.to_vec()))
}

/// The status, the bytes after the head, and the Content-Length, once the head is complete.
fn split_answer(answer: &[u8]) -> Result<(u16, &[u8], Option<usize>), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("an incomplete HTTP answer")?;
    let (head, body) = answer.split_at(split);
    let body = body.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head).map_err(|_| "the HTTP head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let status = lines
        .next()
        .and_then(|l| {
            l.strip_prefix("HTTP/1.1 ")
                .or_else(|| l.strip_prefix("HTTP/1.0 "))
        })
        .filter(|l| l.len() == 3 || l.as_bytes().get(3) == Some(&b' '))
        .and_then(|l| l.get(..3))
        .filter(|s| digits(s))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("not an HTTP/1.1 answer")?;
    let mut length = None;
    for line in lines {
        let token = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic());
        let Some((name, value)) = line.split_once(':').filter(|(n, _)| token(n)) else {
            return Err("a malformed HTTP header".into());
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            if !digits(value) || length.is_some() {
                return Err("a bad Content-Length".into());
            }
            length = Some(value.parse::<usize>().map_err(|_| "a bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!("Transfer-Encoding {value} is not supported"));
        }
    }
    Ok((status, body, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_http_with_a_port() {
        let url = HttpUrl::parse("http://127.0.0.1:7380").unwrap();
        assert_eq!(
            url.join("add-checkpoint"),
            "http://127.0.0.1:7380/add-checkpoint"
        );
        let url = HttpUrl::parse("http://w.example:80/witness/").unwrap();
        assert_eq!(
            url.join("checkpoint"),
            "http://w.example:80/witness/checkpoint"
        );
        assert_eq!(url.to_string(), "http://w.example:80/witness");
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
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
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
            b"HTTP/1.1 200 OK\r\ncontent-length: +1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\nx",
            b"HTTP/1.1 +20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx",
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
