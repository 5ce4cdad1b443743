//! `rmq-injector webhook`: the mutating admission webhook.
//!
//! HTTPS (`webhook.listen`): `POST /inject` takes an AdmissionReview v1 and answers one,
//! always 200 for a review with a uid (allowed with a JSON patch, or denied per
//! `webhook.uninjectable`), 400 for a body that is not a review, 413 above 8 MiB.
//! Plain HTTP (`webhook.health_listen`): `GET /live`, `GET /ready` (a certificate is
//! loaded), `GET /metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use rmq_common::http::{self, Body, BodyRefusal, Http1Limits};
use rmq_common::serve::{self, AcceptConfig};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::config::InjectorConfig;
use crate::kube::KubeClient;
use crate::metrics::InjectorMetrics;
use crate::review::{self, Outcome, StageResult};
use crate::tls::{self, Reload, ReloadingCert};
use rmq_common::http::{error, json_response, text};

/// Largest accepted review (a pod is at most ~1.5 MiB in etcd).
const MAX_REVIEW_BYTES: usize = 8 << 20;
/// How often the certificate files are re-read.
const CERT_POLL: Duration = Duration::from_secs(2);
/// A TLS handshake that takes longer is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// TLS or API client setup failed.
    #[error("{0}")]
    Setup(String),
}

/// Shared by every request.
struct Webhook {
    config: InjectorConfig,
    kube: Option<KubeClient>,
    cert: Arc<ReloadingCert>,
    metrics: InjectorMetrics,
}

/// Binds both listeners and serves until the process ends.
pub async fn run(config: InjectorConfig) -> Result<(), WebhookError> {
    let metrics = InjectorMetrics::new(prometheus::Registry::new())
        .map_err(|e| WebhookError::Setup(e.to_string()))?;
    let kube = match &config.stages.configmap {
        None => None,
        Some(_) => Some(
            match &config.stages.kube_api {
                Some(url) => KubeClient::new(
                    url,
                    config.stages.timeout,
                    config.stages.ca_file.clone(),
                    config.stages.token_file.clone(),
                ),
                None => KubeClient::in_cluster(config.stages.timeout),
            }
            .map_err(|e| WebhookError::Setup(e.to_string()))?,
        ),
    };
    let cert = Arc::new(ReloadingCert::new(
        config.cert_file.clone(),
        config.key_file.clone(),
    ));
    reload_cert(&cert, &metrics);
    let acceptor = TlsAcceptor::from(Arc::new(
        tls::server_config(cert.clone()).map_err(|e| WebhookError::Setup(e.to_string()))?,
    ));
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| WebhookError::Bind { addr, source })
    };
    let https = bind(config.listen).await?;
    let health = bind(config.health_listen).await?;
    tracing::info!(
        listen = %config.listen,
        health = %config.health_listen,
        stages = config.stages.configmap.as_deref().unwrap_or("(none)"),
        uninjectable = ?config.uninjectable,
        mode = config.sidecar.mode.as_str(),
        "injector webhook serving"
    );
    let state = Arc::new(Webhook {
        config,
        kube,
        cert: cert.clone(),
        metrics,
    });
    tokio::spawn({
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(CERT_POLL);
            loop {
                tick.tick().await;
                reload_cert(&state.cert, &state.metrics);
            }
        }
    });
    tokio::spawn(serve_health(state.clone(), health));
    serve_https(state, https, acceptor).await;
    Ok(())
}

fn reload_cert(cert: &ReloadingCert, metrics: &InjectorMetrics) {
    match cert.reload() {
        Ok(Reload::Unchanged) => {}
        Ok(Reload::Loaded) => {
            metrics.cert_reloads.with_label_values(&["ok"]).inc();
            tracing::info!("serving certificate loaded");
        }
        Err(e) => {
            metrics.cert_reloads.with_label_values(&["error"]).inc();
            if cert.is_loaded() {
                tracing::warn!(error = %e, "new serving certificate refused; the previous one stays in use");
            } else {
                tracing::error!(error = %e, "no usable serving certificate yet; not ready");
            }
        }
    }
}

async fn serve_https(state: Arc<Webhook>, listener: TcpListener, acceptor: TlsAcceptor) {
    let config = AcceptConfig {
        name: "webhook",
        local: state.config.listen,
        max_connections: state.config.max_connections,
    };
    let observer = accept_observer(&state.metrics, "webhook");
    let limits = Http1Limits {
        max_body: MAX_REVIEW_BYTES,
        header_timeout: HEADER_TIMEOUT,
    };
    let forever = std::future::pending::<()>();
    serve::serve(listener, config, observer, forever, move |stream, peer| {
        let state = state.clone();
        let acceptor = acceptor.clone();
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let refused = state.clone();
            let handler = move |req: Request<Bytes>| {
                let state = state.clone();
                async move { handle_https(&state, req).await }
            };
            http::serve_connection(tls, limits, handler, move |refusal: &BodyRefusal| {
                let reason = match refusal {
                    BodyRefusal::TooLarge => "too_large",
                    BodyRefusal::Unreadable(_) => "unreadable",
                };
                refused.metrics.malformed.with_label_values(&[reason]).inc();
                tracing::warn!(?refusal, "admission review body refused");
            })
            .await;
        }
    })
    .await;
}

async fn serve_health(state: Arc<Webhook>, listener: TcpListener) {
    let config = AcceptConfig {
        name: "health",
        local: state.config.health_listen,
        max_connections: state.config.max_connections,
    };
    let observer = accept_observer(&state.metrics, "health");
    let limits = Http1Limits {
        max_body: 64 * 1024,
        header_timeout: HEADER_TIMEOUT,
    };
    let forever = std::future::pending::<()>();
    serve::serve(listener, config, observer, forever, move |stream, _peer| {
        let state = state.clone();
        let handler = move |req: Request<Bytes>| {
            let state = state.clone();
            async move { handle_health(&state, &req) }
        };
        http::serve_connection(stream, limits, handler, |_| {})
    })
    .await;
}

fn accept_observer(metrics: &InjectorMetrics, listener: &'static str) -> serve::AcceptObserver {
    let refused = metrics.connections_refused.with_label_values(&[listener]);
    Arc::new(move |event| {
        if event == serve::AcceptEvent::Refused {
            refused.inc();
        }
    })
}

fn handle_health(state: &Webhook, req: &Request<Bytes>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") if state.cert.is_loaded() => text(StatusCode::OK, "ready\n"),
        (&Method::GET, "/ready") => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no usable serving certificate (see the log)\n",
        ),
        (&Method::GET, "/metrics") => {
            let (body, content_type) = state.metrics.encode();
            http::with_content_type(body, &content_type)
        }
        (_, "/live" | "/ready" | "/metrics") => error(StatusCode::METHOD_NOT_ALLOWED, "GET only"),
        _ => error(
            StatusCode::NOT_FOUND,
            "not found; try /live, /ready, /metrics",
        ),
    }
}

async fn handle_https(state: &Webhook, req: Request<Bytes>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/inject") => {}
        (&Method::GET, "/live") => return text(StatusCode::OK, "live\n"),
        (_, "/inject") => return error(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview"),
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                "not found; the webhook path is /inject",
            )
        }
    }
    let started = Instant::now();
    let body = req.into_body();
    let request = match review::parse(&body) {
        Ok(r) => r,
        Err(e) => {
            let reason = match e {
                review::ReviewError::NotJson(_) => "not_json",
                review::ReviewError::NotAReview(_) => "not_a_review",
            };
            state.metrics.malformed.with_label_values(&[reason]).inc();
            tracing::warn!(error = %e, "malformed admission review");
            return error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let stage = lookup_stage(state, &request).await;
    let review::Answer {
        review: answer,
        outcome,
        warnings,
    } = review::decide(
        &request,
        stage.clone(),
        &state.config.sidecar,
        state.config.uninjectable,
    );
    let pod_name = pod_name(&request.object);
    let ns = request.namespace.as_deref().unwrap_or("");
    match outcome {
        Outcome::Denied | Outcome::UninjectableAdmitted => tracing::warn!(
            uid = %request.uid, namespace = ns, pod = %pod_name, outcome = outcome.as_str(),
            reason = %warnings.join("; "), "pod not injected"
        ),
        _ => tracing::info!(
            uid = %request.uid, namespace = ns, pod = %pod_name, outcome = outcome.as_str(),
            stage = ?stage, warnings = warnings.len(), "admission answered"
        ),
    }
    state
        .metrics
        .admissions
        .with_label_values(&[outcome.as_str()])
        .inc();
    state
        .metrics
        .admission_duration
        .with_label_values(&[outcome.as_str()])
        .observe(started.elapsed().as_secs_f64());
    json_response(StatusCode::OK, answer)
}

async fn lookup_stage(state: &Webhook, request: &review::Request) -> StageResult {
    let (Some(client), Some(configmap)) = (&state.kube, &state.config.stages.configmap) else {
        return StageResult::None;
    };
    let Some(workload) = review::stage_lookup_needed(request) else {
        return StageResult::None;
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| {
            request
                .object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let count = |result: &str| {
        state
            .metrics
            .stage_lookups
            .with_label_values(&[result])
            .inc()
    };
    if !is_dns_label(&namespace) {
        count("error");
        return StageResult::Failed(format!("'{namespace}' is not a namespace name"));
    }
    match client
        .configmap_value(&namespace, configmap, &workload.stage_keys())
        .await
    {
        Ok(None) => {
            count("absent");
            StageResult::None
        }
        Ok(Some((key, value))) => match rmq_common::contract::parse_route_value(value.trim()) {
            Ok(target) => {
                count("found");
                StageResult::Found(target.to_string())
            }
            Err(e) => {
                count("invalid");
                StageResult::Failed(format!("ConfigMap {namespace}/{configmap} key {key}: {e}"))
            }
        },
        Err(e) => {
            count("error");
            StageResult::Failed(e.to_string())
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn pod_name(pod: &Value) -> String {
    let meta = pod.get("metadata");
    let get = |k| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    match (get("name"), get("generateName")) {
        (Some(n), _) if !n.is_empty() => n.to_owned(),
        (_, Some(g)) => format!("{g}*"),
        _ => "?".into(),
    }
}
