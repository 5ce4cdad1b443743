//! HTTP/1.1 plumbing shared by the sidecar's admin and health servers and the injector's
//! servers: one connection server that reads each request's body (bounded) before the
//! handler sees it, so handlers are plain `Request<Bytes> -> Response` functions that tests
//! call in memory, plus response helpers.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// The response body type of every handler.
pub type Body = Full<Bytes>;

/// How one HTTP connection is served.
#[derive(Debug, Clone, Copy)]
pub struct Http1Limits {
    /// Largest request body; a larger one is answered 413 without reaching the handler.
    pub max_body: usize,
    /// Longest time a client may take to send a request's headers, and then again its
    /// body; then the connection is closed (a client that never finishes its request holds
    /// nothing for long).
    pub header_timeout: Duration,
}

/// Why a request body never reached the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyRefusal {
    /// Over [`Http1Limits::max_body`] (answered 413).
    TooLarge,
    /// The body could not be read (answered 400).
    Unreadable(String),
}

/// Serves HTTP/1.1 requests on `io` until the client closes it. Each request's body is
/// read up to `limits.max_body` first; `on_refused` hears about bodies that were refused.
pub async fn serve_connection<S, H, F, R>(io: S, limits: Http1Limits, handler: H, on_refused: R)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Bytes>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send,
    R: Fn(&BodyRefusal) + Clone + Send + Sync + 'static,
{
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        let handler = handler.clone();
        let on_refused = on_refused.clone();
        async move {
            let (parts, body) = req.into_parts();
            let response = match read_body(body, limits).await {
                Ok(bytes) => handler(Request::from_parts(parts, bytes)).await,
                Err(refusal) => {
                    on_refused(&refusal);
                    match refusal {
                        BodyRefusal::TooLarge => error(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            &format!("the body is larger than {} bytes", limits.max_body),
                        ),
                        BodyRefusal::Unreadable(e) => error(
                            StatusCode::BAD_REQUEST,
                            &format!("cannot read the body: {e}"),
                        ),
                    }
                }
            };
            Ok::<_, Infallible>(response)
        }
    });
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}

/// Reads a request body of at most `limits.max_body` bytes. A larger one is read on and
/// dropped (up to [`DRAIN_MAX`] bytes, for at most `limits.header_timeout`) so that the
/// client, which sends its whole body before it reads the answer, gets the 413 instead of
/// a reset connection.
async fn read_body(
    mut body: hyper::body::Incoming,
    limits: Http1Limits,
) -> Result<Bytes, BodyRefusal> {
    let read = async {
        let mut kept = bytes::BytesMut::new();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyRefusal::Unreadable(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                total = total.saturating_add(data.len());
                if total <= limits.max_body {
                    kept.extend_from_slice(&data);
                } else if total > DRAIN_MAX.max(limits.max_body) {
                    break;
                }
            }
        }
        if total > limits.max_body {
            Err(BodyRefusal::TooLarge)
        } else {
            Ok(kept.freeze())
        }
    };
    match tokio::time::timeout(limits.header_timeout, read).await {
        Ok(result) => result,
        Err(_) => Err(BodyRefusal::Unreadable(format!(
            "the body did not arrive within {} s",
            limits.header_timeout.as_secs()
        ))),
    }
}

/// Most bytes of a too-large body read and dropped before answering 413.
pub const DRAIN_MAX: usize = 16 << 20;

/// A plain-text response.
pub fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A pretty-printed JSON response (one trailing newline, for curl users).
pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut bytes = serde_json::to_vec_pretty(&value).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, serde_json::json!({ "error": message }))
}

/// A response with `body` and the given content type (a Prometheus exposition, say).
pub fn with_content_type(body: impl Into<Bytes>, content_type: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// Decodes a body that must be a JSON object (serde would also accept an array for a
/// struct, positionally). The error says what is wrong, for a 400 answer.
pub fn json_object<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value(v).map_err(|e| e.to_string())
        }
        Ok(_) => Err("the body is not a JSON object".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Update {
        #[allow(dead_code)]
        target: String,
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(json_object::<Update>(br#"{"target":"new"}"#).is_ok());
        assert_eq!(
            json_object::<Update>(br#"["new"]"#).unwrap_err(),
            "the body is not a JSON object"
        );
        assert!(json_object::<Update>(br#"{"target":"new","x":1}"#)
            .unwrap_err()
            .contains("unknown field"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    async fn exchange(request: Vec<u8>, limits: Http1Limits) -> String {
        let (client, server) = tokio::io::duplex(1 << 20);
        let refusals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = refusals.clone();
        tokio::spawn(serve_connection(
            server,
            limits,
            |req: Request<Bytes>| async move {
                let n = req.body().len();
                json_response(StatusCode::OK, serde_json::json!({ "bytes": n }))
            },
            move |r: &BodyRefusal| seen.lock().unwrap().push(r.clone()),
        ));
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(&request).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn a_body_over_the_limit_gets_413_and_never_reaches_the_handler() {
        let limits = Http1Limits {
            max_body: 16,
            header_timeout: Duration::from_secs(5),
        };
        let small = exchange(
            b"PUT /x HTTP/1.1\r\nhost: a\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc"
                .to_vec(),
            limits,
        )
        .await;
        assert!(small.starts_with("HTTP/1.1 200"), "{small}");
        assert!(small.contains("\"bytes\": 3"), "{small}");
        let mut big =
            b"PUT /x HTTP/1.1\r\nhost: a\r\ncontent-length: 64\r\nconnection: close\r\n\r\n"
                .to_vec();
        big.extend([b'x'; 64]);
        let answer = exchange(big, limits).await;
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(answer.contains("larger than 16 bytes"), "{answer}");
    }

    #[tokio::test(start_paused = true)]
    async fn unfinished_headers_are_cut_after_the_header_timeout() {
        let limits = Http1Limits {
            max_body: 16,
            header_timeout: Duration::from_secs(2),
        };
        let (client, server) = tokio::io::duplex(1024);
        let served = tokio::spawn(serve_connection(
            server,
            limits,
            |_req: Request<Bytes>| async { text(StatusCode::OK, "x") },
            |_: &BodyRefusal| {},
        ));
        let (_rd, mut wr) = tokio::io::split(client);
        wr.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            tokio::time::timeout(Duration::from_secs(1), served)
                .await
                .is_ok(),
            "a connection that never finished its headers is still served"
        );
    }
}
