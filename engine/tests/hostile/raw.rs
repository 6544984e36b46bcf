//! A bare HTTP/1.1 client over a TCP socket: it sends exactly the bytes it is given (broken
//! ones included) and reads what the server answers, if anything.

#![allow(dead_code)] // each test binary that includes it uses a part

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one exchange may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A request with `Host`, `Connection: close` and (unless `headers` has one, or
/// `Transfer-Encoding`) a `Content-Length` for `body`.
pub fn request(method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    let framed = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !framed {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Sends `bytes` on a new connection and reads the answer: `None` when the server closed the
/// connection without one. Panics past [`DEADLINE`].
pub async fn exchange(address: SocketAddr, bytes: &[u8], head: bool) -> Option<Reply> {
    tokio::time::timeout(DEADLINE, async {
        let mut stream = TcpStream::connect(address).await.unwrap();
        // The server may answer (and close) before reading everything sent: a write error
        // then is not the test's concern, the answer is.
        let _ = stream.write_all(bytes).await;
        read_reply(&mut stream, head).await
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "no answer within {DEADLINE:?} to {:?}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )
    })
}

/// Reads one response from `stream`: up to the end of its body (by `Content-Length`, chunked
/// framing, or the connection's end).
pub async fn read_reply(stream: &mut TcpStream, head: bool) -> Option<Reply> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head_text = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status_line:?}"));
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut reply = Reply {
        status,
        headers,
        body: Vec::new(),
    };
    let mut rest = buffer[header_end + 4..].to_vec();
    if head || status == 204 || status == 304 {
        return Some(reply);
    }
    let chunked = reply
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = reply
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    loop {
        if let Some(length) = length {
            if rest.len() >= length {
                rest.truncate(length);
                reply.body = rest;
                return Some(reply);
            }
        } else if chunked {
            if let Some(body) = dechunk(&rest) {
                reply.body = body;
                return Some(reply);
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                reply.body = if chunked {
                    dechunk(&rest).unwrap_or(rest)
                } else {
                    rest
                };
                return Some(reply);
            }
            Ok(n) => rest.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The body of a complete chunked encoding, or `None` while it is incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return find(data, b"\r\n").map(|_| body);
        }
        if data.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
