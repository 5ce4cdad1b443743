//! One local listener per upstream broker address, plus its VIP twin on port − 2.
//!
//! # Address mapping
//! Each upstream *host* gets its own loopback IP inside `listen.broker_bind`, chosen by a
//! stable hash of the host name (FNV-1a) and probed linearly past IPs already given to
//! other hosts. The local port is the upstream port `P`, and the twin is `P − 2` (Java
//! clients with the VIP channel on dial `P − 2`; both lead to the upstream `P`, since
//! TDMQ and 5.x proxies have no `P − 2`). If `P` or `P − 2` is already used on that IP by
//! another mapping, or cannot be bound (a local process listens on `0.0.0.0:P`, or the
//! port is privileged), a port `F` from `listen.broker_fallback_ports` (hash-chosen, probed)
//! with twin `F − 2` is used instead. No two upstreams, and no twin, share a local address.
//! Every mapping is written to `listeners.json` in the state dir; a restarted sidecar binds
//! the same addresses again before it reports ready, because the app still dials them.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use rmq_common::serve::{self, AcceptConfig};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;

use super::relay;
use super::RelayContext;
use crate::config::BrokerBind;
use crate::state;
use rmq_common::Target;

/// File name of the persisted listener map inside the state dir.
pub const LISTENERS_FILE: &str = rmq_common::contract::LISTENERS_FILE;

/// One upstream broker address and where the app reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// Cluster the upstream belongs to.
    pub cluster: Target,
    /// Upstream `host:port` as the name server announced it.
    pub upstream: String,
    /// Local listener the app is given in routes.
    pub local: SocketAddr,
    /// Local VIP twin (`local` port − 2).
    pub vip: SocketAddr,
}

#[derive(Debug, Serialize, Deserialize)]
struct PersistedMappings {
    version: u32,
    listeners: Vec<Mapping>,
}

/// Why a listener could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// The upstream address is not `host:port`.
    #[error("upstream broker address '{0}' is not host:port")]
    BadUpstream(String),
    /// No local address could be bound.
    #[error("no local address could be bound for {upstream}: {reason}")]
    NoAddress {
        /// Upstream broker.
        upstream: String,
        /// Last bind error.
        reason: String,
    },
}

/// All broker listeners of this sidecar.
#[derive(Debug)]
pub struct ListenerRegistry {
    ctx: Arc<RelayContext>,
    bind: BrokerBind,
    fallback: (u16, u16),
    file: Option<PathBuf>,
    by_upstream: DashMap<String, Mapping>,
    alloc: Mutex<Allocation>,
    accept_tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct Allocation {
    host_ip: HashMap<String, Ipv4Addr>,
    used: HashSet<SocketAddr>,
}

// === impl ListenerRegistry ===

impl ListenerRegistry {
    /// An empty registry.
    pub fn new(
        ctx: Arc<RelayContext>,
        bind: BrokerBind,
        fallback: (u16, u16),
        state_dir: Option<PathBuf>,
    ) -> Self {
        Self {
            ctx,
            bind,
            fallback,
            file: state_dir.map(|d| d.join(LISTENERS_FILE)),
            by_upstream: DashMap::new(),
            alloc: Mutex::new(Allocation::default()),
            accept_tasks: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Re-opens the listeners persisted by an earlier run. A mapping whose address cannot
    /// be bound again gets a new one (the app learns it at its next route poll).
    pub async fn restore(&self) -> std::io::Result<usize> {
        let Some(path) = &self.file else { return Ok(0) };
        let Some(bytes) = state::read_optional(path)? else {
            return Ok(0);
        };
        let persisted: PersistedMappings = serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        let mut restored = 0;
        let mut alloc = self.alloc.lock().await;
        for m in persisted.listeners {
            match (bind(m.local), bind(m.vip)) {
                (Ok(main), Ok(vip)) => {
                    if let (IpOrHost::Host(host), _) = split_host(&m.upstream) {
                        if let SocketAddr::V4(v4) = m.local {
                            alloc.host_ip.entry(host).or_insert(*v4.ip());
                        }
                    }
                    alloc.used.insert(m.local);
                    alloc.used.insert(m.vip);
                    self.spawn(m.clone(), main, vip);
                    self.ctx
                        .metrics
                        .broker_listeners
                        .with_label_values(&[m.cluster.as_str()])
                        .inc();
                    tracing::info!(cluster = %m.cluster, upstream = %m.upstream, local = %m.local, vip = %m.vip, "broker listener restored");
                    self.ctx.brokers.insert(m.upstream.clone(), m.cluster);
                    self.by_upstream.insert(m.upstream.clone(), m);
                    restored += 1;
                }
                (a, b) => {
                    let reason = a
                        .err()
                        .or(b.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    tracing::warn!(upstream = %m.upstream, local = %m.local, %reason, "persisted broker listener cannot be bound again; a new address will be assigned");
                }
            }
        }
        drop(alloc);
        self.persist().await;
        Ok(restored)
    }

    /// The local address for `upstream`, opening its listeners on first use.
    pub async fn ensure(
        &self,
        cluster: Target,
        upstream: &str,
    ) -> Result<SocketAddr, ListenerError> {
        if let Some(m) = self.by_upstream.get(upstream) {
            if m.cluster != cluster {
                tracing::warn!(%upstream, first = %m.cluster, now = %cluster, "the same broker address is announced by both clusters; keeping the first");
            }
            return Ok(m.local);
        }
        let mut alloc = self.alloc.lock().await;
        if let Some(m) = self.by_upstream.get(upstream) {
            return Ok(m.local);
        }
        let (host, port) = match split_host(upstream) {
            (IpOrHost::Host(h), Some(p)) => (h, p),
            _ => return Err(ListenerError::BadUpstream(upstream.to_owned())),
        };
        let ip = self.ip_for_host(&mut alloc, &host);
        let (main, vip, local, vip_addr) = self.bind_pair(&alloc, ip, port, upstream)?;
        alloc.used.insert(local);
        alloc.used.insert(vip_addr);
        let m = Mapping {
            cluster,
            upstream: upstream.to_owned(),
            local,
            vip: vip_addr,
        };
        self.spawn(m.clone(), main, vip);
        self.ctx
            .metrics
            .broker_listeners
            .with_label_values(&[cluster.as_str()])
            .inc();
        tracing::info!(%cluster, %upstream, %local, vip = %vip_addr, "broker listener added");
        self.ctx.brokers.insert(upstream.to_owned(), cluster);
        self.by_upstream.insert(upstream.to_owned(), m);
        drop(alloc);
        self.persist().await;
        Ok(local)
    }

    /// The local address already assigned to `upstream`.
    pub fn local_for(&self, upstream: &str) -> Option<SocketAddr> {
        self.by_upstream.get(upstream).map(|m| m.local)
    }

    /// Every mapping, sorted by upstream.
    pub fn mappings(&self) -> Vec<Mapping> {
        let mut v: Vec<Mapping> = self.by_upstream.iter().map(|e| e.value().clone()).collect();
        v.sort_by(|a, b| a.upstream.cmp(&b.upstream));
        v
    }

    fn ip_for_host(&self, alloc: &mut Allocation, host: &str) -> Ipv4Addr {
        if let Some(ip) = alloc.host_ip.get(host) {
            return *ip;
        }
        let size = self.bind.size();
        let taken: HashSet<Ipv4Addr> = alloc.host_ip.values().copied().collect();
        let start = (fnv1a(host.as_bytes()) % u64::from(size)) as u32;
        let mut chosen = self.bind.nth(start);
        for i in 0..size.min(65_536) {
            let candidate = self.bind.nth(start.wrapping_add(i));
            let last = candidate.octets()[3];
            if size > 2 && (last == 0 || last == 255) {
                continue;
            }
            if !taken.contains(&candidate) {
                chosen = candidate;
                break;
            }
        }
        alloc.host_ip.insert(host.to_owned(), chosen);
        chosen
    }

    fn bind_pair(
        &self,
        alloc: &Allocation,
        ip: Ipv4Addr,
        port: u16,
        upstream: &str,
    ) -> Result<(TcpListener, TcpListener, SocketAddr, SocketAddr), ListenerError> {
        let free = |p: u16| {
            !alloc
                .used
                .contains(&SocketAddr::V4(SocketAddrV4::new(ip, p)))
        };
        let mut last_error = String::from("no free port");
        if port > 2 && free(port) && free(port - 2) {
            match try_pair(ip, port) {
                Ok(pair) => return Ok(pair),
                Err(e) => {
                    tracing::debug!(%upstream, port, error = %e, "upstream port not bindable locally; using a fallback port");
                    last_error = e.to_string();
                }
            }
        }
        let (lo, hi) = self.fallback;
        let count = u32::from(hi - lo) + 1;
        let start = (fnv1a(upstream.as_bytes()) % u64::from(count)) as u32;
        for k in 0..count {
            let f = lo + ((start + k) % count) as u16;
            if f < lo + 2 || !free(f) || !free(f - 2) {
                continue;
            }
            match try_pair(ip, f) {
                Ok(pair) => return Ok(pair),
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(ListenerError::NoAddress {
            upstream: upstream.to_owned(),
            reason: last_error,
        })
    }

    fn spawn(&self, m: Mapping, main: TcpListener, vip: TcpListener) {
        for (listener, kind) in [(main, "main"), (vip, "vip")] {
            let ctx = self.ctx.clone();
            let m = m.clone();
            let task = tokio::spawn(async move { accept_loop(ctx, listener, m, kind).await });
            self.accept_tasks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(task);
        }
    }

    /// Closes every broker listener (open relays are not touched).
    pub fn close_all(&self) {
        for task in self
            .accept_tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    async fn persist(&self) {
        let Some(path) = &self.file else { return };
        let doc = PersistedMappings {
            version: 1,
            listeners: self.mappings(),
        };
        let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        let path = path.clone();
        let result = tokio::task::spawn_blocking(move || state::write_atomic(&path, &bytes)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot persist the broker listener map; a restart may move listeners")
            }
            Err(e) => tracing::error!(error = %e, "listener map persistence task failed"),
        }
    }
}

/// How often a broker that refused connections is probed while its listener is closed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Accepts app connections for `m` until `POST /drain`. While its broker refuses
/// connections the listener is closed, so the app's connects are refused at once, as they
/// would be by the broker itself (a connection the sidecar accepts and then closes holds a
/// Java 4.9 client until its request timeout, 3 s, before it tries another broker); the
/// broker is probed every [`PROBE_EVERY`] and the listener reopened when it accepts again.
async fn accept_loop(
    ctx: Arc<RelayContext>,
    listener: TcpListener,
    m: Mapping,
    kind: &'static str,
) {
    let local = if kind == "vip" { m.vip } else { m.local };
    let down = ctx.upstream_down_signal(&m.upstream);
    let mut listener = Some(listener);
    loop {
        let Some(open) = listener.take() else { return };
        let config = AcceptConfig {
            name: "broker",
            local,
            max_connections: ctx.max_broker_connections,
        };
        let observer = ctx.metrics.accept_observer("broker");
        let stop = ctx.clone();
        let handler_ctx = ctx.clone();
        let (cluster, upstream) = (m.cluster, m.upstream.clone());
        let notified = down.clone();
        serve::serve(
            open,
            config,
            observer,
            async move {
                tokio::select! {
                    _ = stop.drain_requested() => {}
                    _ = notified.refused.notified() => {}
                }
            },
            move |stream, peer| {
                relay::run(handler_ctx.clone(), stream, peer, cluster, upstream.clone())
            },
        )
        .await;
        if *ctx.draining.borrow() {
            return;
        }
        // The broker refused: stay closed until it accepts again.
        let gauge = ctx
            .metrics
            .broker_listeners_down
            .with_label_values(&[m.cluster.as_str()]);
        gauge.inc();
        down.closed_listeners.send_modify(|n| *n += 1);
        tracing::warn!(cluster = %m.cluster, upstream = %m.upstream, %local, listener = kind, "broker refuses connections: listener closed, so the app's connects fail at once and it tries another broker");
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PROBE_EVERY) => {}
                _ = ctx.drain_requested() => {
                    gauge.dec();
                    down.closed_listeners.send_modify(|n| *n = n.saturating_sub(1));
                    return;
                }
            }
            let probe =
                tokio::time::timeout(ctx.connect_timeout, TcpStream::connect(&m.upstream)).await;
            if !matches!(probe, Ok(Ok(_))) {
                continue;
            }
            match bind(local) {
                Ok(l) => {
                    tracing::info!(cluster = %m.cluster, upstream = %m.upstream, %local, listener = kind, "broker accepts again: listener reopened");
                    listener = Some(l);
                    break;
                }
                Err(e) => {
                    tracing::warn!(upstream = %m.upstream, %local, error = %e, "broker is back but its listener cannot be reopened yet; retrying");
                }
            }
        }
        gauge.dec();
        down.closed_listeners
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

fn try_pair(
    ip: Ipv4Addr,
    port: u16,
) -> std::io::Result<(TcpListener, TcpListener, SocketAddr, SocketAddr)> {
    let local = SocketAddr::V4(SocketAddrV4::new(ip, port));
    let vip = SocketAddr::V4(SocketAddrV4::new(ip, port - 2));
    let a = bind(local)?;
    let b = bind(vip)?;
    Ok((a, b, local, vip))
}

/// Binds a listening socket with SO_REUSEADDR (a restarted sidecar rebinds while old
/// connections sit in TIME_WAIT).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

enum IpOrHost {
    Host(String),
    Bad,
}

fn split_host(addr: &str) -> (IpOrHost, Option<u16>) {
    match addr.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (
            IpOrHost::Host(h.trim_start_matches('[').trim_end_matches(']').to_owned()),
            p.parse().ok(),
        ),
        _ => (IpOrHost::Bad, None),
    }
}

/// FNV-1a, 64 bit: a hash that stays the same across Rust releases and machines.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}
