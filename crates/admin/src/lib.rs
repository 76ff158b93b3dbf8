//! Weir's operator HTTP API (JSON, described by `/api/openapi.json`), its
//! web console (one HTML page, vanilla JS and CSS, built into the binary)
//! and Prometheus `/metrics`.
//!
//! Every operation calls the core's one function for it, the same the Kafka
//! and AMQP front-ends call; this crate only translates JSON. Errors are
//! `{"error": "<message>"}` with 404 for unknown things, 400 naming the bad
//! field, 409 for conflicts ([`error::ApiError`]).

mod api;
mod console;
pub mod error;
mod json;
mod openapi;
mod prometheus;
mod rates;
mod routes;
mod system;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weir_core::listener::Acceptor;
use weir_core::metrics::Protocol;
use weir_core::queues::VirtualHost;
use weir_core::Broker;

pub use crate::routes::router;

/// What the HTTP API works on.
#[derive(Debug)]
pub struct Admin {
    /// The broker core (topics, groups).
    pub broker: Arc<Broker>,
    /// AMQP virtual hosts by name.
    pub vhosts: HashMap<String, Arc<VirtualHost>>,
    /// Directory whose file system's free space is reported.
    pub data_dir: PathBuf,
    /// Free disk space below which publishers are blocked.
    pub disk_free_limit_bytes: u64,
    /// The controller, when this node is part of a cluster.
    pub cluster: Option<Arc<weir_cluster::Controller>>,
    /// Rates measured from periodic samples.
    pub(crate) rates: rates::Sampler,
}

impl Admin {
    /// The API over `broker` and `vhosts`.
    pub fn new(
        broker: Arc<Broker>,
        vhosts: HashMap<String, Arc<VirtualHost>>,
        disk_free_limit_bytes: u64,
    ) -> Admin {
        let data_dir = broker.config().data_dir.clone();
        Admin {
            broker,
            vhosts,
            data_dir,
            disk_free_limit_bytes,
            cluster: None,
            rates: rates::Sampler::default(),
        }
    }

    /// The same API on a node of a cluster, also answering `/api/cluster`.
    pub fn with_cluster(mut self, controller: Arc<weir_cluster::Controller>) -> Admin {
        self.cluster = Some(controller);
        self
    }
}

/// Serves the API, console and metrics on `listener` until `stopping`
/// turns true; samples rates meanwhile.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut stopping: watch::Receiver<bool>) {
    let address = listener
        .local_addr()
        .map_or_else(|_| "?".to_owned(), |a: SocketAddr| a.to_string());
    tracing::info!(%address, "HTTP API and console ready");
    let sampler = tokio::spawn(rates::run(Arc::clone(&admin), stopping.clone()));
    let shutdown = async move {
        let _ = stopping.changed().await;
    };
    // axum's own TcpListener sleeps a second after every failed accept and
    // logs each one; the core's Acceptor backs off, counts and logs as the
    // Kafka and AMQP listeners do. The no-op `tap_io` is there because axum
    // provides `ConnectInfo<SocketAddr>` (the request span's peer) only for
    // its own listener and for `TapIo` around any other.
    let acceptor = Acceptor::new(listener, Protocol::Http, admin.broker.metrics());
    let listener = HttpListener(acceptor).tap_io(|_| {});
    let service = router(admin).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, service)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(%error, "HTTP server failed");
    }
    let _ = sampler.await;
}

/// The core's accept loop as an axum listener.
struct HttpListener(Acceptor);

impl axum::serve::Listener for HttpListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl std::future::Future<Output = (TcpStream, SocketAddr)> + Send {
        self.0.accept()
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}
