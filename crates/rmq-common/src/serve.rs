//! The one accept loop. Every server of both binaries (name-server role, broker listeners,
//! admin, health, webhook) runs it, so each gets the same guarantees:
//!
//! - **A connection cap per listener.** Past `max_connections` open connections a new one
//!   is accepted and closed at once (the peer sees the connection end before any byte),
//!   counted through [`AcceptEvent::Refused`] and logged at most every
//!   [`LOG_EVERY`]; open connections carry on untouched.
//! - **Accept errors back off** ([`ACCEPT_BACKOFF`]) instead of spinning, and are logged
//!   at most every [`LOG_EVERY`] with the number of suppressed lines (running out of file
//!   descriptors fails every accept).
//! - **Shutdown**: when the `shutdown` future resolves the listener closes; connections
//!   already handed to their handler are not touched.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Pause after a failed accept.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Shortest interval between two log lines about refused connections or failed accepts
/// of one listener.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What a listener is and how many connections it may hold.
#[derive(Debug, Clone)]
pub struct AcceptConfig {
    /// Listener name for logs and metric labels (`namesrv`, `broker`, `admin`, ...).
    pub name: &'static str,
    /// Where it listens (for logs).
    pub local: SocketAddr,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Something the loop reports for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptEvent {
    /// A connection was closed at once because the listener was at its cap.
    Refused,
    /// `accept` failed (typically out of file descriptors).
    Failed,
}

/// Receives [`AcceptEvent`]s (a metric counter, usually).
pub type AcceptObserver = Arc<dyn Fn(AcceptEvent) + Send + Sync>;

/// Logs one line per [`LOG_EVERY`] at most, and says how many were held back.
#[derive(Debug)]
pub struct RateLimitedLog {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

// === impl RateLimitedLog ===

impl RateLimitedLog {
    /// A limiter that lets one line through per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Accepts on `listener` until `shutdown` resolves, handing each connection to `handler`
/// on a task of its own while at most `config.max_connections` are open.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: AcceptConfig,
    observer: AcceptObserver,
    shutdown: impl Future<Output = ()>,
    mut handler: H,
) where
    H: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let mut refused_log = RateLimitedLog::new(LOG_EVERY);
    let mut failed_log = RateLimitedLog::new(LOG_EVERY);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => {
                tracing::info!(listener = config.name, local = %config.local, "listener closed");
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let connection = handler(stream, peer);
                    tokio::spawn(async move {
                        connection.await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    drop(stream);
                    observer(AcceptEvent::Refused);
                    if let Some(suppressed) = refused_log.allow() {
                        tracing::warn!(
                            listener = config.name, local = %config.local, %peer,
                            max_connections = config.max_connections, suppressed,
                            "connection refused: the listener is at its connection cap; open connections carry on"
                        );
                    }
                }
            },
            Err(e) => {
                observer(AcceptEvent::Failed);
                if let Some(suppressed) = failed_log.allow() {
                    tracing::warn!(listener = config.name, local = %config.local, error = %e, suppressed, "accept failed; retrying");
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connections_past_the_cap_are_refused_and_open_ones_carry_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let counted = refused.clone();
        let observer: AcceptObserver = Arc::new(move |e| {
            if e == AcceptEvent::Refused {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let config = AcceptConfig {
            name: "test",
            local,
            max_connections: 2,
        };
        // An echo server: each connection answers what it reads.
        let server = tokio::spawn(serve(
            listener,
            config,
            observer,
            async {
                let _ = stop_rx.await;
            },
            |mut stream: TcpStream, _| async move {
                let mut buf = [0u8; 16];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 || stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            },
        ));
        let mut a = TcpStream::connect(local).await.unwrap();
        let mut b = TcpStream::connect(local).await.unwrap();
        for s in [&mut a, &mut b] {
            s.write_all(b"hi").await.unwrap();
            let mut got = [0u8; 2];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"hi");
        }
        // The third is closed before it gets a byte.
        let mut c = TcpStream::connect(local).await.unwrap();
        let _ = c.write_all(b"hi").await;
        let mut got = [0u8; 2];
        let n = c.read(&mut got).await.unwrap_or(0);
        assert_eq!(n, 0, "a connection past the cap was served");
        assert_eq!(refused.load(Ordering::SeqCst), 1);
        // The first two still work.
        a.write_all(b"ok").await.unwrap();
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ok");
        // Closing one frees its place.
        drop(b);
        let mut d = None;
        for _ in 0..100 {
            let mut s = TcpStream::connect(local).await.unwrap();
            s.write_all(b"yo").await.unwrap();
            if s.read(&mut got).await.unwrap_or(0) == 2 {
                d = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            d.is_some(),
            "a freed place was never given to a new connection"
        );
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the loop did not stop at shutdown")
            .unwrap();
        assert!(TcpStream::connect(local).await.is_err(), "still listening");
    }

    #[test]
    fn log_lines_are_rate_limited_and_count_what_they_held_back() {
        let mut log = RateLimitedLog::new(Duration::from_secs(3600));
        assert_eq!(log.allow(), Some(0));
        assert_eq!(log.allow(), None);
        assert_eq!(log.allow(), None);
        log.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(log.allow(), Some(2));
    }
}
