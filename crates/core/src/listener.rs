//! The accept loop every listener shares: Kafka and AMQP through
//! [`serve_connections`], the HTTP API through [`Acceptor`] under axum.
//!
//! An accept that fails because the process is out of something (file
//! descriptors: `EMFILE`, `ENFILE`; kernel memory: `ENOBUFS`, `ENOMEM`)
//! fails again at once: the pending connection is still queued and the
//! listener stays readable. Retrying without a pause burns a core and, if
//! each failure is logged, fills the disk with the same line. So a failed
//! accept waits, [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`], and the first
//! accept that works resets the wait: clients are served again as soon as
//! descriptors free up. Failures are logged at most once per
//! [`REPORT_INTERVAL`] with how many there were, and every one is counted in
//! [`Metrics::accept_errors`](crate::metrics::Metrics::accept_errors).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{Metrics, Protocol};

/// First wait after a failed accept.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between two accepts that fail: how late, at most, a
/// listener notices that descriptors are free again.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Least time between two log lines about failed accepts of one listener.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A TCP listener whose [`accept`](Acceptor::accept) never fails: it
/// retries, backing off, counting and logging as the module says.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    protocol: Protocol,
    errors: Counter,
    /// Wait after the next failure.
    backoff: Duration,
    /// Set while backing off; kept here rather than in the accept future so
    /// that a caller who drops that future (a `select!` on shutdown) and
    /// calls again still waits.
    retry_at: Option<Instant>,
    /// Failures not yet in a log line.
    errors_unreported: u64,
    reported_at: Option<Instant>,
}

impl Acceptor {
    /// Accepts on `listener` for `protocol`'s clients (the `listener` label
    /// of the node's metric and of the log lines).
    pub fn new(listener: TcpListener, protocol: Protocol, metrics: &Metrics) -> Acceptor {
        Acceptor {
            listener,
            protocol,
            errors: metrics.accept_errors(protocol),
            backoff: BACKOFF_MIN,
            retry_at: None,
            errors_unreported: 0,
            reported_at: None,
        }
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// The operating system's, as [`TcpListener::local_addr`].
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Cancel-safe: a connection is returned or stays
    /// queued, and a pending back-off survives the cancellation.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            if let Some(retry_at) = self.retry_at {
                tokio::time::sleep_until(retry_at).await;
                self.retry_at = None;
            }
            match self.listener.accept().await {
                Ok(accepted) => {
                    self.accepted();
                    return accepted;
                }
                Err(error) => self.failed(&error),
            }
        }
    }

    fn accepted(&mut self) {
        self.backoff = BACKOFF_MIN;
        if self.errors_unreported > 0 && self.report_due() {
            tracing::info!(
                listener = self.protocol.name(),
                errors = self.errors_unreported,
                "accepting connections again"
            );
            self.errors_unreported = 0;
        }
    }

    fn failed(&mut self, error: &io::Error) {
        self.errors.inc();
        self.errors_unreported += 1;
        let backoff = if concerns_one_connection(error) {
            // The queued connection that failed is gone, so the next accept
            // gets another one (or waits): retrying cannot spin, and a
            // pause would let clients that reset early slow everyone else.
            Duration::ZERO
        } else {
            let backoff = self.backoff;
            self.backoff = (backoff * 2).min(BACKOFF_MAX);
            self.retry_at = Some(Instant::now() + backoff);
            backoff
        };
        if !self.report_due() {
            return;
        }
        let listener = self.protocol.name();
        let errors = self.errors_unreported;
        let retry_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
        if backoff.is_zero() {
            tracing::debug!(listener, %error, errors, "accept failed");
        } else {
            tracing::warn!(listener, %error, errors, retry_ms, "accept failed; backing off");
        }
        self.errors_unreported = 0;
    }

    /// Whether a line may be logged now; if so, the interval starts again.
    fn report_due(&mut self) -> bool {
        let now = Instant::now();
        let due = self
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_INTERVAL);
        if due {
            self.reported_at = Some(now);
        }
        due
    }
}

/// Errors `accept(2)` reports about the one connection it was taking (the
/// client reset it, or the network errors Linux passes on from the new
/// socket), as opposed to the process or system running out of something.
fn concerns_one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    ) || error.raw_os_error() == Some(libc::EPROTO)
}

/// How one listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections served at once; more wait in the kernel's accept queue.
    pub connections_max: usize,
    /// How long a stop waits for open connections before aborting them;
    /// `None` waits until every one has finished.
    pub drain_timeout: Option<Duration>,
}

/// Accepts connections and runs `handle` for each in its own task, at most
/// `limits.connections_max` at once, until `stopping` changes (or its
/// sender is gone); then waits for the open connections as `limits` says.
///
/// `handle` gets the stream and the peer's address; the connection counts
/// against the limit until the future it returns completes. Handlers watch
/// `stopping` themselves to finish early.
pub async fn serve_connections<Handle, Connection>(
    mut acceptor: Acceptor,
    limits: ServeLimits,
    mut stopping: watch::Receiver<bool>,
    mut handle: Handle,
) where
    Handle: FnMut(TcpStream, SocketAddr) -> Connection,
    Connection: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.connections_max));
    let mut connections = JoinSet::new();
    loop {
        // Take the permit first, so that past the limit connections wait in
        // the kernel's queue rather than being accepted and left unserved.
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopping.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = stopping.changed() => break,
        };
        let connection = handle(stream, peer);
        connections.spawn(async move {
            connection.await;
            drop(permit);
        });
        while connections.try_join_next().is_some() {}
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    match limits.drain_timeout {
        None => drained.await,
        Some(timeout) => {
            if tokio::time::timeout(timeout, drained).await.is_err() {
                tracing::warn!(
                    listener = acceptor.protocol.name(),
                    "connections still open after the drain timeout; closing them"
                );
                connections.abort_all();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn acceptor() -> Acceptor {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Acceptor::new(listener, Protocol::Kafka, &Metrics::new())
    }

    fn out_of_descriptors() -> io::Error {
        io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[tokio::test]
    async fn back_off_doubles_to_the_cap_and_resets_on_success() {
        let mut acceptor = acceptor().await;
        let mut waits = Vec::new();
        for _ in 0..10 {
            let before = acceptor.backoff;
            acceptor.failed(&out_of_descriptors());
            assert!(acceptor.retry_at.is_some());
            waits.push(before.as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        acceptor.accepted();
        assert_eq!(acceptor.backoff, BACKOFF_MIN);
    }

    #[tokio::test]
    async fn an_aborted_connection_is_retried_at_once() {
        let mut acceptor = acceptor().await;
        acceptor.failed(&io::Error::from_raw_os_error(libc::ECONNABORTED));
        acceptor.failed(&io::Error::from_raw_os_error(libc::EPROTO));
        assert_eq!(acceptor.retry_at, None);
        assert_eq!(acceptor.backoff, BACKOFF_MIN);
    }

    #[tokio::test]
    async fn failures_are_counted_and_reported_once_per_interval() {
        let metrics = Metrics::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut acceptor = Acceptor::new(listener, Protocol::Kafka, &metrics);
        for _ in 0..5 {
            acceptor.failed(&out_of_descriptors());
        }
        // The node's own series, so exactly ours.
        assert_eq!(metrics.accept_errors(Protocol::Kafka).get(), 5);
        // The first failure was reported; four wait for the next line.
        assert_eq!(acceptor.errors_unreported, 4);
    }

    #[tokio::test]
    async fn accepts_after_a_cancelled_back_off() {
        let mut acceptor = acceptor().await;
        let address = acceptor.local_addr().unwrap();
        acceptor.failed(&out_of_descriptors());
        // A select! on shutdown drops the accept future mid-wait.
        let cancelled = tokio::time::timeout(Duration::from_millis(1), acceptor.accept()).await;
        assert!(cancelled.is_err());
        assert!(
            acceptor.retry_at.is_some(),
            "the back-off outlives the cancelled future"
        );
        let client = tokio::spawn(TcpStream::connect(address));
        let (_, peer) = acceptor.accept().await;
        let client = client.await.unwrap().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }
}
