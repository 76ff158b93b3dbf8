//! `weir server`: open the core, serve Kafka, run maintenance, stop cleanly
//! on SIGTERM or Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;
use weir_core::queues::VirtualHost;
use weir_core::Broker;

use crate::settings::{LogFormat, Resolved};

/// How often queues expire messages at their head, sync acknowledgements
/// and delete settled segments.
const QUEUE_TICK: Duration = Duration::from_millis(100);
/// How often free disk space is measured for the disk alarm.
const DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Least time between two fsyncs of one queue log.
const QUEUE_SYNC_SPACING: Duration = Duration::from_millis(2);
/// Segment size of queue logs: small, so settled messages free disk soon.
const QUEUE_SEGMENT_BYTES: u64 = 64 << 20;
/// How often `flush.ms` partitions are checked for a due sync.
const FLUSH_TICK: Duration = Duration::from_millis(50);
/// How often group session and rebalance timeouts are checked.
const GROUP_TICK: Duration = Duration::from_millis(100);
/// How often transaction timeouts are checked (and, after a restart,
/// prepared transactions completed).
const TRANSACTION_TICK: Duration = Duration::from_secs(1);
/// How often idempotent producers' state is snapshotted; after a crash at
/// most this much of each log is read back to rebuild it.
const PRODUCER_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(30);

/// Runs the broker until a stop signal; returns the process exit code.
pub fn run(settings: Resolved) -> ExitCode {
    let filter = EnvFilter::try_new(&settings.log_level)
        .unwrap_or_else(|_| EnvFilter::new(crate::settings::DEFAULT_LOG_LEVEL));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Human => logs.with_ansi(colour).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-file limit to the hard one: every partition keeps
/// three files open, and many systems start processes with a soft limit of 1024.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit get a valid pointer to an rlimit.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
            && libc::setrlimit(
                libc::RLIMIT_NOFILE,
                &libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                },
            ) == 0
    };
    if raised {
        tracing::info!(
            from = limit.rlim_cur,
            to = limit.rlim_max,
            "raised the open-file limit"
        );
    }
}

async fn serve(settings: Resolved) -> Result<(), String> {
    raise_open_file_limit();
    if let Some(cluster) = &settings.cluster {
        // Before the broker touches anything in a data directory of
        // another node or cluster.
        weir_cluster::check_identity(cluster)
            .map_err(|error| format!("cannot join the controller quorum: {error}"))?;
    }
    let broker = Arc::new(
        Broker::open(settings.broker)
            .map_err(|error| format!("cannot open the data directory: {error}"))?,
    );
    let endpoints = weir_cluster::Endpoints {
        kafka: Some(format!(
            "{}:{}",
            settings.kafka.advertised_host,
            settings.kafka_listen.port()
        )),
        amqp: Some(settings.amqp_listen.to_string()),
        http: Some(settings.http_listen.to_string()),
    };
    let controller = join_cluster(settings.cluster, endpoints, &broker).await?;
    let listener = TcpListener::bind(settings.kafka_listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", settings.kafka_listen))?;
    tracing::info!(address = %settings.kafka_listen, "Kafka listener ready");
    let (stop, stopping) = watch::channel(false);
    let kafka = tokio::spawn(weir_kafka::serve(
        listener,
        Arc::clone(&broker),
        settings.kafka,
        stopping.clone(),
    ));
    let vhost = open_default_vhost(&broker)?;
    let amqp_listener = TcpListener::bind(settings.amqp_listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", settings.amqp_listen))?;
    tracing::info!(address = %settings.amqp_listen, "AMQP listener ready");
    let vhosts = Arc::new(weir_amqp::VirtualHosts::from([(
        "/".to_owned(),
        Arc::clone(&vhost),
    )]));
    let amqp = tokio::spawn(weir_amqp::serve(
        amqp_listener,
        Arc::clone(&vhosts),
        settings.amqp,
        stopping.clone(),
        broker.disk_alarm().subscribe(),
        Arc::clone(broker.metrics()),
        Arc::clone(broker.connections()),
    ));
    let http = start_http(
        &settings.http_listen,
        &broker,
        &vhosts,
        controller.clone(),
        &stopping,
    )
    .await?;
    let queue_maintenance = tokio::spawn(maintain_queues(Arc::clone(&vhost), stopping.clone()));
    let maintenance = tokio::spawn(maintain(Arc::clone(&broker), stopping));
    wait_for_stop_signal().await;
    tracing::info!("stopping");
    let _ = stop.send(true);
    let _ = kafka.await;
    let _ = amqp.await;
    let _ = http.await;
    let _ = maintenance.await;
    let _ = queue_maintenance.await;
    if let Some(controller) = controller {
        controller.shutdown().await;
    }
    tokio::task::spawn_blocking(move || vhost.close())
        .await
        .map_err(|error| format!("shutdown task failed: {error}"))?;
    tokio::task::spawn_blocking(move || broker.shutdown())
        .await
        .map_err(|error| format!("shutdown task failed: {error}"))?
        .map_err(|error| format!("unclean shutdown: {error}"))
}

/// Starts this node's controller when it is part of a cluster.
async fn join_cluster(
    cluster: Option<weir_cluster::ClusterConfig>,
    endpoints: weir_cluster::Endpoints,
    broker: &Arc<Broker>,
) -> Result<Option<Arc<weir_cluster::Controller>>, String> {
    let Some(cluster) = cluster else {
        return Ok(None);
    };
    let controller = weir_cluster::Controller::start(cluster, endpoints, Some(Arc::clone(broker)))
        .await
        .map_err(|error| format!("cannot join the controller quorum: {error}"))?;
    broker.join_cluster(
        Arc::clone(&controller) as Arc<dyn weir_core::MetadataQuorum>,
        controller.replica_transport(),
    );
    Ok(Some(controller))
}

/// Binds the HTTP API and console and serves them until `stopping`.
async fn start_http(
    address: &std::net::SocketAddr,
    broker: &Arc<Broker>,
    vhosts: &Arc<weir_amqp::VirtualHosts>,
    controller: Option<Arc<weir_cluster::Controller>>,
    stopping: &watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|error| format!("cannot listen on {address}: {error}"))?;
    let admin = weir_admin::Admin::new(
        Arc::clone(broker),
        (**vhosts).clone(),
        broker.config().disk_free_limit_bytes,
    );
    let admin = Arc::new(match controller {
        Some(controller) => admin.with_cluster(controller),
        None => admin,
    });
    Ok(tokio::spawn(weir_admin::serve(
        listener,
        admin,
        stopping.clone(),
    )))
}

/// The virtual host `/`, stored under `<data>/amqp/vhosts/default`.
fn open_default_vhost(broker: &Arc<Broker>) -> Result<Arc<VirtualHost>, String> {
    let dir = broker
        .config()
        .data_dir
        .join("amqp")
        .join("vhosts")
        .join("default");
    let log_config = weir_log::LogConfig {
        segment_bytes: QUEUE_SEGMENT_BYTES,
        // Room for the largest AMQP body and its properties in one batch.
        max_message_bytes: (weir_amqp::AmqpConfig::default().message_bytes_max + (1 << 20))
            as usize,
        // AMQP publishers send one message per frame: spacing syncs lets a
        // burst share one fsync (confirms wait at most this much longer).
        sync_spacing: Some(QUEUE_SYNC_SPACING),
        ..weir_log::LogConfig::default()
    };
    VirtualHost::open("/", &dir, log_config, Arc::clone(broker))
        .map_err(|error| format!("cannot open AMQP vhost '/': {error}"))
}

/// Queue upkeep (TTL expiry, settlement syncs, segment deletion,
/// `x-expires`).
async fn maintain_queues(vhost: Arc<VirtualHost>, mut stopping: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(QUEUE_TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => vhost.maintain(weir_core::now_ms()).await,
            _ = stopping.changed() => return,
        }
    }
}

/// Retention and offset expiry on their interval, `flush.ms` syncs, group
/// timeouts and the disk alarm, until stopped.
async fn maintain(broker: Arc<Broker>, mut stopping: watch::Receiver<bool>) {
    let mut retention = tokio::time::interval(broker.config().retention_check_interval);
    let mut flush = tokio::time::interval(FLUSH_TICK);
    let mut groups = tokio::time::interval(GROUP_TICK);
    let mut snapshots = tokio::time::interval(PRODUCER_SNAPSHOT_INTERVAL);
    let mut transactions = tokio::time::interval(TRANSACTION_TICK);
    let mut disk = tokio::time::interval(DISK_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = retention.tick() => {
                let worker = Arc::clone(&broker);
                match tokio::task::spawn_blocking(move || worker.apply_retention()).await {
                    Ok(0) | Err(_) => {}
                    Ok(deleted) => tracing::info!(deleted, "retention deleted segments"),
                }
                broker.expire_offsets().await;
            }
            _ = groups.tick() => {
                if let Some(coordinator) = broker.group_coordinator() {
                    coordinator.tick();
                }
            }
            _ = transactions.tick() => broker.expire_transactions().await,
            _ = snapshots.tick() => {
                let worker = Arc::clone(&broker);
                let _ = tokio::task::spawn_blocking(move || worker.snapshot_producer_states()).await;
            }
            _ = flush.tick() => broker.flush_due().await,
            _ = disk.tick() => {
                broker.disk_alarm().check();
            }
            _ = stopping.changed() => return,
        }
    }
}

async fn wait_for_stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM; stop with Ctrl-C");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
