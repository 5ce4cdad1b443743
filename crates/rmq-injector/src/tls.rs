//! TLS for the webhook (a serving certificate re-read when its files change) and for the
//! Kubernetes API client. rustls with the `ring` provider: no C toolchain beyond `cc`, no
//! cmake (aws-lc-rs needs it), and no OpenSSL to link against in a distroless image.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate or key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The PEM holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the combination.
    #[error("TLS setup: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The webhook's serving certificate, swapped in place when the files change (a
/// cert-manager renewal or a Secret update reaches the pod as new file contents).
#[derive(Debug)]
pub struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Option<Loaded>>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    pem: (Vec<u8>, Vec<u8>),
}

/// What one [`ReloadingCert::reload`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reload {
    /// Same bytes as before.
    Unchanged,
    /// New certificate in use.
    Loaded,
}

impl ReloadingCert {
    /// A resolver for these files; nothing is served until [`Self::reload`] succeeds.
    pub fn new(cert_file: PathBuf, key_file: PathBuf) -> Self {
        Self {
            cert_file,
            key_file,
            current: RwLock::new(None),
        }
    }

    /// Re-reads both files; a broken pair keeps the certificate in use.
    pub fn reload(&self) -> Result<Reload, TlsError> {
        let cert_pem = read(&self.cert_file)?;
        let key_pem = read(&self.key_file)?;
        let unchanged = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|l| l.pem.0 == cert_pem && l.pem.1 == key_pem);
        if unchanged {
            return Ok(Reload::Unchanged);
        }
        let chain = certificates(&self.cert_file, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
            path: self.key_file.clone(),
            message: format!("no private key: {e}"),
        })?;
        let signing = provider::sign::any_supported_type(&key)?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| TlsError::Pem {
            path: self.key_file.clone(),
            message: format!(
                "the key does not belong to {}: {e}",
                self.cert_file.display()
            ),
        })?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Loaded {
            key: Arc::new(certified),
            pem: (cert_pem, key_pem),
        });
        Ok(Reload::Loaded)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.key.clone())
    }
}

/// A server config that asks `cert` on every handshake (HTTP/1.1 only: the API server
/// speaks it to webhooks that do not offer h2).
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client config that trusts only the CA certificates in `ca_file`.
pub fn client_config(ca_file: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let pem = read(ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca_file, &pem)? {
        roots.add(cert)?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: format!("bad PEM: {e}"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no CERTIFICATE block".into(),
        });
    }
    Ok(chain)
}
