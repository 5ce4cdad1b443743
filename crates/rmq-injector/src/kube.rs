//! The one Kubernetes API call the injector makes: read a key of a ConfigMap. A small
//! HTTP/1.1 client on hyper and rustls instead of a full Kubernetes client crate (which
//! would bring hundreds of crates for one GET).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, HOST};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls;

/// In-cluster service account files.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// ConfigMaps are at most 1 MiB; a larger answer is not one.
const MAX_BODY: usize = 2 << 20;

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The client could not be set up.
    #[error("Kubernetes API client: {0}")]
    Setup(String),
    /// No answer in time.
    #[error("no answer from the Kubernetes API within {0:?}")]
    Timeout(Duration),
    /// Connection, TLS or HTTP failure.
    #[error("Kubernetes API {url}: {message}")]
    Transport {
        /// Where.
        url: String,
        /// What failed.
        message: String,
    },
    /// The API server answered with an error.
    #[error("Kubernetes API {url}: HTTP {status}: {message}")]
    Status {
        /// Where.
        url: String,
        /// HTTP status.
        status: u16,
        /// The Status message, with a hint for 401/403.
        message: String,
    },
}

/// A client for one API server.
#[derive(Clone)]
pub struct KubeClient {
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    token_file: Option<PathBuf>,
    timeout: Duration,
    base: String,
}

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeClient")
            .field("base", &self.base)
            .finish()
    }
}

impl KubeClient {
    /// The API server this pod runs under: `KUBERNETES_SERVICE_HOST`/`_PORT`, the service
    /// account's CA and token.
    pub fn in_cluster(timeout: Duration) -> Result<Self, KubeError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            KubeError::Setup(
                "KUBERNETES_SERVICE_HOST is not set (not in a pod?); set stages.kube_api".into(),
            )
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        Self::new(&format!("https://{host}:{port}"), timeout, None, None)
    }

    /// A client for `url` (`https://` or, for `kubectl proxy`, `http://`). `ca_file` and
    /// `token_file` default to the service account's files.
    pub fn new(
        url: &str,
        timeout: Duration,
        ca_file: Option<PathBuf>,
        token_file: Option<PathBuf>,
    ) -> Result<Self, KubeError> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(KubeError::Setup(format!("'{url}' is not an http(s) URL")));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = split_authority(authority, if https { 443 } else { 80 })
            .ok_or_else(|| KubeError::Setup(format!("'{url}' has no valid host:port")))?;
        let sa = PathBuf::from(SERVICE_ACCOUNT_DIR);
        let tls = if https {
            let ca = ca_file.unwrap_or_else(|| sa.join("ca.crt"));
            let config = tls::client_config(&ca).map_err(|e| KubeError::Setup(e.to_string()))?;
            Some(TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        // Over https the service account token is expected; over http (kubectl proxy)
        // the proxy authenticates, so a missing token file is fine.
        let token_file = token_file.or_else(|| https.then(|| sa.join("token")));
        Ok(Self {
            host,
            port,
            tls,
            token_file,
            timeout,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    /// The first of `keys` present in the `data` of ConfigMap `namespace/name`, with its
    /// value; `None` when the ConfigMap or every key is missing.
    pub async fn configmap_value(
        &self,
        namespace: &str,
        name: &str,
        keys: &[String],
    ) -> Result<Option<(String, String)>, KubeError> {
        let path = format!("/api/v1/namespaces/{namespace}/configmaps/{name}");
        let url = format!("{}{path}", self.base);
        let (status, body) = tokio::time::timeout(self.timeout, self.get(&path, &url))
            .await
            .map_err(|_| KubeError::Timeout(self.timeout))??;
        match status {
            200 => {
                let cm: Value =
                    serde_json::from_slice(&body).map_err(|e| KubeError::Transport {
                        url: url.clone(),
                        message: format!("answer is not JSON: {e}"),
                    })?;
                let data = cm.get("data");
                Ok(keys.iter().find_map(|key| {
                    let value = data?.get(key)?.as_str()?;
                    Some((key.clone(), value.to_owned()))
                }))
            }
            404 => Ok(None),
            status => {
                let message = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
                let hint = match status {
                    401 | 403 => format!(
                        " (the injector's ServiceAccount needs get on configmaps/{name}: see deploy/kubernetes RBAC)"
                    ),
                    _ => String::new(),
                };
                Err(KubeError::Status {
                    url,
                    status,
                    message: format!("{message}{hint}"),
                })
            }
        }
    }

    async fn get(&self, path: &str, url: &str) -> Result<(u16, Bytes), KubeError> {
        let transport = |message: String| KubeError::Transport {
            url: url.to_owned(),
            message,
        };
        let token = match &self.token_file {
            Some(file) => match std::fs::read_to_string(file) {
                Ok(t) => Some(t.trim().to_owned()),
                // Bound tokens are re-read on every call; a missing file is only fatal over https.
                Err(e) if self.tls.is_some() => {
                    return Err(transport(format!(
                        "cannot read token {}: {e}",
                        file.display()
                    )))
                }
                Err(_) => None,
            },
            None => None,
        };
        let tcp = TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
            .await
            .map_err(|e| transport(format!("connect: {e}")))?;
        let host_header = if self.port == 443 || self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        };
        let mut request = hyper::Request::get(path)
            .header(HOST, host_header)
            .header(ACCEPT, "application/json");
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|e| transport(e.to_string()))?;
        match &self.tls {
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(
                    self.host.trim_matches(['[', ']']).to_owned(),
                )
                .map_err(|e| transport(format!("server name: {e}")))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| transport(format!("TLS: {e}")))?;
                send(TokioIo::new(stream), request).await.map_err(transport)
            }
            None => send(TokioIo::new(tcp), request).await.map_err(transport),
        }
    }
}

async fn send<T>(io: T, request: hyper::Request<Empty<Bytes>>) -> Result<(u16, Bytes), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        // Ends with the response; an error here already failed the request below.
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, body))
}

fn split_authority(authority: &str, default_port: u16) -> Option<(String, u16)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((format!("[{host}]"), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), port.parse().ok()?)),
        None => Some((authority.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::split_authority;

    #[test]
    fn authorities() {
        assert_eq!(
            split_authority("10.96.0.1:443", 1),
            Some(("10.96.0.1".into(), 443))
        );
        assert_eq!(split_authority("api", 443), Some(("api".into(), 443)));
        assert_eq!(
            split_authority("[fd00::1]:6443", 1),
            Some(("[fd00::1]".into(), 6443))
        );
        assert_eq!(split_authority("api:x", 1), None);
    }
}
