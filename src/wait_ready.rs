//! `rmq-sidecar wait-ready`: polls the sidecar's readiness URL until it answers 200.
//!
//! Run as the sidecar container's postStart hook in "post-start" injection mode: the
//! kubelet starts the next container (the app) only when the hook returns, so the app
//! never starts before its name server answers.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(200);

/// Polls `url` until 200 (exit 0) or `timeout` (exit 1, with the last answer).
pub fn run(url: &str, timeout: Duration) -> ExitCode {
    let Some((authority, path)) = split_url(url) else {
        eprintln!("rmq-sidecar wait-ready: '{url}' is not an http://host:port/path URL");
        return ExitCode::from(64);
    };
    let deadline = Instant::now() + timeout;
    loop {
        let last = match get_status(authority, path) {
            Ok(200) => return ExitCode::SUCCESS,
            Ok(status) => format!("HTTP {status}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            eprintln!(
                "rmq-sidecar wait-ready: {url} not ready after {}s (last: {last})",
                timeout.as_secs()
            );
            return ExitCode::FAILURE;
        }
        std::thread::sleep(POLL);
    }
}

fn split_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    (!authority.is_empty()).then_some((authority, path))
}

fn get_status(authority: &str, path: &str) -> std::io::Result<u16> {
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let n = stream.read(&mut head)?;
    // "HTTP/1.1 200 OK"
    std::str::from_utf8(&head[..n])
        .ok()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))
}
