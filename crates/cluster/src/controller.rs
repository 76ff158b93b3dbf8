//! One node's controller: its openraft instance, the listener other
//! controllers call, proposing commands (forwarded to the leader), and node
//! liveness — every node heartbeats the leader; the leader fences a node
//! silent for the session timeout and unfences it when it is heard again.
//!
//! Liveness is the leader's memory, not metadata: a new leader starts by
//! giving every node a full session timeout before it may be fenced, so a
//! controller failover alone fences nobody.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, ServerState, SnapshotPolicy};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use uuid::Uuid;
use weir_core::metadata::{MetadataCommand, MetadataState, NodeRegistration};
use weir_core::{Broker, ClusterView, CoreError, MetadataQuorum, ReplicaRefusal, ReplicaReply};
use weir_log::checkpoint::write_atomically;

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::log_store::LogStore;
use crate::state_machine::{AppliedHook, StateMachine};
use crate::transport::{self, HeartbeatReply, Network, Peer, Reply, Request};
use crate::{CommandOutcome, NodeId, TypeConfig};

/// How long a proposal may wait for a leader before it fails.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Why a write was not committed when the leader heard no majority.
const NO_QUORUM: &str = "not committed: no majority of the controller voters answered";
/// How long a heartbeat waits for its answer, in parts of the session
/// timeout: one to an old leader that stopped answering (paused, cut off)
/// must leave the time to learn of the new leader and be heard there
/// before the new leader's session timeout runs out, or it fences this
/// node — and itself, its own heartbeats waiting on the old leader too.
const HEARTBEAT_TIMEOUTS_PER_SESSION: u32 = 3;
/// Records which node a data directory belongs to.
const IDENTITY_FILE: &str = "node.json";

/// Where clients reach this node, as registered in the metadata.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// Kafka `host:port`.
    pub kafka: Option<String>,
    /// AMQP `host:port`.
    pub amqp: Option<String>,
    /// HTTP `host:port`.
    pub http: Option<String>,
}

/// A node's controller. Dropping it stops its tasks; call
/// [`Controller::shutdown`] first to stop raft cleanly.
pub struct Controller {
    config: ClusterConfig,
    incarnation: Uuid,
    raft: Raft<TypeConfig>,
    /// The raft log, to close when shutting down.
    log: LogStore,
    state: StateMachine,
    /// Connections to the other controllers, one per peer for heartbeats
    /// and one for proposals, each locked only for its own calls: a
    /// proposal that an old leader cannot commit holds its connection for
    /// up to [`PROPOSE_TIMEOUT`], and heartbeats queued behind it would
    /// miss the session timeout and get this node fenced.
    peers: Mutex<BTreeMap<(NodeId, Channel), SharedPeer>>,
    /// While leader: when each node was last heard, and as which incarnation.
    liveness: Mutex<Liveness>,
    /// The metadata as last applied here, with the controller leader, for
    /// the broker core to read on every request.
    view: RwLock<Arc<ClusterView>>,
    /// The node's broker, which answers replica requests.
    broker: Option<Arc<Broker>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// One connection to a peer, locked for each call.
type SharedPeer = Arc<tokio::sync::Mutex<Peer>>;

/// Which of its connections to a peer a call takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Channel {
    Heartbeats,
    Proposals,
}

#[derive(Default)]
struct Liveness {
    /// The term in which this node led when the map was last reset.
    term: Option<u64>,
    heard: HashMap<NodeId, (Uuid, Instant)>,
}

/// What `weir cluster status` and `/api/cluster` show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node answering.
    pub node_id: NodeId,
    /// The cluster's id, once named.
    pub cluster_id: Option<Uuid>,
    /// The controller leader, if there is one now.
    pub controller_leader: Option<NodeId>,
    /// The raft term this node is in.
    pub term: u64,
    /// The last metadata command applied on this node.
    pub applied_index: u64,
    /// The controller voters: id and address.
    pub voters: Vec<Voter>,
    /// The registered nodes.
    pub nodes: Vec<NodeStatus>,
    /// Every replicated partition's leadership.
    #[serde(default)]
    pub partitions: Vec<PartitionStatus>,
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Topic name.
    pub topic: String,
    /// Partition index.
    pub partition: u32,
    /// The leader, if one is live and in sync.
    pub leader: Option<NodeId>,
    /// The leader epoch.
    pub leader_epoch: i32,
    /// Replicas, the preferred leader first.
    pub replicas: Vec<NodeId>,
    /// In-sync replicas.
    pub isr: Vec<NodeId>,
    /// Fewer replicas in sync than assigned.
    pub under_replicated: bool,
    /// While the partition moves (`weir topic reassign`): the replicas it
    /// moves to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving_to: Option<Vec<NodeId>>,
}

/// One controller voter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Voter {
    /// Node id.
    pub id: NodeId,
    /// Controller address.
    pub address: String,
}

/// One registered node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node id.
    pub id: NodeId,
    /// Kafka endpoint.
    pub kafka: Option<String>,
    /// AMQP endpoint.
    pub amqp: Option<String>,
    /// HTTP endpoint.
    pub http: Option<String>,
    /// Missed its heartbeats.
    pub fenced: bool,
}

impl Controller {
    /// Opens the controller's files, joins the quorum and starts
    /// listening, registering and heartbeating. On the first start of a
    /// cluster every voter initializes the same membership (openraft
    /// allows that); a node restarted on its data directory just rejoins.
    ///
    /// # Errors
    ///
    /// [`ClusterError::ForeignDataDir`] when the directory belongs to
    /// another node id or another voter list; [`ClusterError::Io`] when the
    /// listener cannot bind; storage errors of the raft log and snapshot.
    /// With a `broker`, every applied batch of commands is reconciled
    /// into it ([`Broker::reconcile`]) before the proposers of those
    /// commands are answered; call [`Broker::join_cluster`] with the
    /// returned controller before serving clients.
    pub async fn start(
        config: ClusterConfig,
        endpoints: Endpoints,
        broker: Option<Arc<Broker>>,
    ) -> Result<Arc<Controller>, ClusterError> {
        check_identity(&config)?;
        let log = LogStore::open(&config.dir)?;
        let state = StateMachine::open(&config.dir)?;
        let raft_config = openraft::Config {
            cluster_name: "weir".into(),
            heartbeat_interval: millis(config.election_timeout_min) / 3,
            election_timeout_min: millis(config.election_timeout_min),
            election_timeout_max: millis(config.election_timeout_max),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(1024),
            max_in_snapshot_log_to_keep: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|error| ClusterError::Config(error.to_string()))?;
        let network = Network {
            from: config.node_id,
            voters: config.voters_text(),
        };
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log.clone(),
            state.clone(),
        )
        .await
        .map_err(|error| ClusterError::Raft(error.to_string()))?;
        let listener = TcpListener::bind(config.controller_listen)
            .await
            .map_err(|error| ClusterError::io(config.controller_listen.to_string(), error))?;
        let view = ClusterView {
            voters: config.voters.len(),
            ..ClusterView::default()
        };
        let controller = Arc::new(Controller {
            config,
            incarnation: Uuid::new_v4(),
            raft,
            log,
            state,
            peers: Mutex::new(BTreeMap::new()),
            liveness: Mutex::new(Liveness::default()),
            view: RwLock::new(Arc::new(view)),
            broker: broker.clone(),
            tasks: Mutex::new(Vec::new()),
        });
        controller.state.set_hook(applied_hook(&controller, broker));
        controller.spawn_tasks(listener, endpoints);
        controller.initialize().await?;
        tracing::info!(
            node = controller.config.node_id,
            address = %controller.config.controller_listen,
            voters = %controller.config.voters_text(),
            "controller started"
        );
        Ok(controller)
    }

    fn spawn_tasks(self: &Arc<Controller>, listener: TcpListener, endpoints: Endpoints) {
        let weak = Arc::downgrade(self);
        let handler: transport::Handler = Arc::new(move |request| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(controller) => controller.handle(request).await,
                    None => Reply::Propose(Err("the controller is shutting down".into())),
                }
            })
        });
        let server = tokio::spawn(transport::serve(
            listener,
            self.config.voters_text(),
            handler,
        ));
        let heartbeats = tokio::spawn(heartbeat_loop(Arc::downgrade(self), endpoints));
        let fencing = tokio::spawn(leader_loop(Arc::downgrade(self)));
        self.tasks.lock().extend([server, heartbeats, fencing]);
        if let Some(broker) = &self.broker {
            let broker = Arc::downgrade(broker);
            let interval = self.config.heartbeat_interval;
            self.tasks.lock().push(tokio::spawn(async move {
                while let Some(broker) = broker.upgrade() {
                    broker.maintain_cluster().await;
                    drop(broker);
                    tokio::time::sleep(interval).await;
                }
            }));
        }
    }

    async fn initialize(&self) -> Result<(), ClusterError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|error| ClusterError::Raft(error.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = self
            .config
            .voters
            .iter()
            .map(|(id, address)| (*id, BasicNode::new(address.to_string())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {
                Ok(())
            }
            Err(error) => Err(ClusterError::Raft(error.to_string())),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// Reads the metadata as applied on this node.
    pub fn read<T>(&self, read: impl FnOnce(&MetadataState) -> T) -> T {
        self.state.read(read)
    }

    /// The controller leader now, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        metrics.state == ServerState::Leader && metrics.current_leader == Some(self.config.node_id)
    }

    /// What this node knows of the cluster.
    pub fn status(&self) -> ClusterStatus {
        let (leader, term) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_leader, metrics.current_term)
        };
        let (cluster_id, nodes, partitions) = self.state.read(|state| {
            let nodes = state
                .nodes()
                .iter()
                .map(|(id, node)| NodeStatus {
                    id: *id,
                    kafka: node.kafka.clone(),
                    amqp: node.amqp.clone(),
                    http: node.http.clone(),
                    fenced: node.fenced,
                })
                .collect();
            let partitions = state
                .topics()
                .iter()
                .flat_map(|(name, image)| {
                    image
                        .replicas
                        .iter()
                        .enumerate()
                        .filter_map(|(index, replicas)| {
                            let leadership = image.leadership(index as u32)?;
                            Some(PartitionStatus {
                                topic: name.clone(),
                                partition: index as u32,
                                leader: leadership.leader,
                                leader_epoch: leadership.epoch,
                                under_replicated: leadership.isr.len() < replicas.len(),
                                replicas: replicas.clone(),
                                isr: leadership.isr,
                                moving_to: image.reassigning.get(&(index as u32)).cloned(),
                            })
                        })
                })
                .collect();
            (state.cluster_id(), nodes, partitions)
        });
        ClusterStatus {
            node_id: self.config.node_id,
            cluster_id,
            controller_leader: leader,
            term,
            applied_index: self.state.applied_index(),
            voters: self
                .config
                .voters
                .iter()
                .map(|(id, address)| Voter {
                    id: *id,
                    address: address.to_string(),
                })
                .collect(),
            nodes,
            partitions,
        }
    }

    /// Commits `command` through the controller leader (forwarding it when
    /// this node is not the leader) and returns once it is applied here
    /// too, so the caller reads its own write.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Refused`] when the metadata state refused it (nothing
    /// changed); [`ClusterError::Unavailable`] when no leader committed it
    /// within the proposal timeout — it may still commit later.
    pub async fn propose(&self, command: MetadataCommand) -> Result<(), ClusterError> {
        let deadline = Instant::now() + PROPOSE_TIMEOUT;
        let outcome = loop {
            // A leader cut off from the others never commits: wait no
            // longer than the deadline for it.
            let written =
                tokio::time::timeout_at(deadline.into(), self.raft.client_write(command.clone()));
            let attempt = match written.await {
                Err(_) => Err(NO_QUORUM.to_string()),
                Ok(Ok(response)) => Ok(response.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                    match forward.leader_id {
                        Some(leader) => self.forward(leader, &command, deadline).await,
                        None => Err("no controller leader".to_string()),
                    }
                }
                Ok(Err(error)) => return Err(ClusterError::Raft(error.to_string())),
            };
            match attempt {
                Ok(outcome) => break outcome,
                Err(why) if Instant::now() >= deadline => {
                    return Err(ClusterError::Unavailable(why))
                }
                Err(why) => {
                    tracing::debug!(command = command.kind(), %why, "proposal not committed yet, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let applied = self.state.wait_applied(outcome.index);
        if tokio::time::timeout_at(deadline.into(), applied)
            .await
            .is_err()
        {
            return Err(ClusterError::Unavailable(format!(
                "command {} committed but not yet applied on this node",
                outcome.index
            )));
        }
        match outcome.refusal {
            Some(refusal) => Err(ClusterError::Refused(refusal)),
            None => Ok(()),
        }
    }

    /// Asks the leader to commit `command`, waiting for its answer until
    /// `deadline` (the leader itself gives up sooner when it hears no
    /// majority), so that a slow commit is not retried as a new one.
    async fn forward(
        &self,
        leader: NodeId,
        command: &MetadataCommand,
        deadline: Instant,
    ) -> Result<CommandOutcome, String> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        match self
            .call_within(leader, &Request::Propose(command.clone()), timeout)
            .await?
        {
            Reply::Propose(outcome) => outcome,
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    async fn call_within(
        &self,
        target: NodeId,
        request: &Request,
        timeout: Duration,
    ) -> Result<Reply, String> {
        let address = *self
            .config
            .voters
            .get(&target)
            .ok_or_else(|| format!("node {target} is not a controller voter"))?;
        let channel = match request {
            Request::Heartbeat { .. } => Channel::Heartbeats,
            _ => Channel::Proposals,
        };
        let peer = Arc::clone(
            self.peers
                .lock()
                .entry((target, channel))
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Peer::new(
                        self.config.node_id,
                        self.config.voters_text(),
                        address,
                    )))
                }),
        );
        let mut peer = peer.lock().await;
        peer.call(request, timeout)
            .await
            .map_err(|error| format!("node {target} at {address}: {error}"))
    }

    async fn handle(&self, request: Request) -> Reply {
        match request {
            Request::Hello { .. } => Reply::Hello(Err("already connected".into())),
            Request::Vote(vote) => Reply::Vote(self.raft.vote(vote).await),
            Request::AppendEntries(append) => {
                Reply::AppendEntries(self.raft.append_entries(append).await)
            }
            Request::InstallSnapshot(chunk) => {
                Reply::InstallSnapshot(self.raft.install_snapshot(chunk).await)
            }
            Request::Propose(command) => {
                let written =
                    tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(command));
                Reply::Propose(match written.await {
                    Ok(Ok(response)) => Ok(response.data),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(NO_QUORUM.into()),
                })
            }
            Request::Heartbeat { id, incarnation } => {
                Reply::Heartbeat(self.heard_from(id, incarnation))
            }
            Request::Replica(request) => Reply::Replica(match &self.broker {
                Some(broker) => broker.serve_replica(request).await,
                None => ReplicaReply::Refused(ReplicaRefusal::NotLeader),
            }),
        }
    }

    /// The leader's side of a heartbeat.
    fn heard_from(&self, id: NodeId, incarnation: Uuid) -> HeartbeatReply {
        if !self.is_leader() {
            return HeartbeatReply::NotLeader;
        }
        let registered = self.state.read(|state| {
            state
                .nodes()
                .get(&id)
                .filter(|node| node.incarnation == incarnation)
                .map(|node| node.fenced)
        });
        let Some(fenced) = registered else {
            return HeartbeatReply::Register;
        };
        self.liveness
            .lock()
            .heard
            .insert(id, (incarnation, Instant::now()));
        if fenced {
            tracing::info!(node = id, "node heard again: unfencing it");
            self.propose_in_background(MetadataCommand::UnfenceNode { id, incarnation });
        }
        HeartbeatReply::Alive
    }

    fn propose_in_background(&self, command: MetadataCommand) {
        let raft = self.raft.clone();
        tokio::spawn(async move {
            let kind = command.kind();
            match tokio::time::timeout(PROPOSE_TIMEOUT, raft.client_write(command)).await {
                Ok(Ok(response)) => {
                    if let Some(refusal) = response.data.refusal {
                        tracing::debug!(command = kind, %refusal, "refused");
                    }
                }
                Ok(Err(error)) => tracing::debug!(command = kind, %error, "not committed"),
                Err(_) => tracing::debug!(command = kind, NO_QUORUM),
            }
        });
    }

    /// How this node's followers reach partition leaders: through the
    /// controller voters' addresses.
    pub fn replica_transport(&self) -> Arc<dyn weir_core::ReplicaTransport> {
        Arc::new(transport::ReplicaPeers {
            from: self.config.node_id,
            voters: self.config.voters_text(),
            addresses: self.config.voters.clone(),
            idle: Arc::default(),
        })
    }

    /// Stops raft and the controller's tasks.
    pub async fn shutdown(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        // Writes waiting for a full disk give up, so raft can stop.
        self.log.close();
        self.state.close();
        if let Err(error) = self.raft.shutdown().await {
            tracing::warn!(%error, "raft did not shut down cleanly");
        }
    }
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Controller")
            .field("node_id", &self.config.node_id)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

/// Refreshes the controller's view and reconciles the broker after each
/// applied batch.
fn applied_hook(controller: &Arc<Controller>, broker: Option<Arc<Broker>>) -> AppliedHook {
    let controller = Arc::downgrade(controller);
    Arc::new(move |state: &MetadataState, deleted: &BTreeSet<Uuid>| {
        if let Some(controller) = controller.upgrade() {
            let view = ClusterView::new(
                state.clone(),
                controller.leader(),
                controller.config.voters.len(),
            );
            *controller.view.write() = Arc::new(view);
        }
        if let Some(broker) = &broker {
            if let Err(error) = broker.reconcile(state, deleted) {
                tracing::error!(%error, "could not bring this node's topics in line with the cluster's metadata; retrying after the next change");
            }
        }
    })
}

impl MetadataQuorum for Controller {
    fn commit(&self, command: MetadataCommand) -> Result<(), CoreError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            CoreError::ClusterUnavailable("no async runtime to reach the controller".into())
        })?;
        // Metadata changes are rare and wait on the network: this thread
        // stops being an async worker while it waits.
        tokio::task::block_in_place(|| handle.block_on(self.propose(command))).map_err(|error| {
            match error {
                ClusterError::Refused(why) => CoreError::InvalidRequest(why),
                other => CoreError::ClusterUnavailable(other.to_string()),
            }
        })
    }

    fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.read())
    }
}

fn millis(duration: Duration) -> u64 {
    duration.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Which node and voter list a controller directory belongs to.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Identity {
    node_id: NodeId,
    voters: String,
}

/// Refuses a data directory made by another node id or for another voter
/// list (changing the voters is a membership change, not a restart flag);
/// records the identity in a new one. [`Controller::start`] calls it too.
///
/// # Errors
///
/// [`ClusterError::ForeignDataDir`]; I/O errors.
pub fn check_identity(config: &ClusterConfig) -> Result<(), ClusterError> {
    let path = config.dir.join(IDENTITY_FILE);
    let ours = Identity {
        node_id: config.node_id,
        voters: config.voters_text(),
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let theirs: Identity =
                serde_json::from_slice(&bytes).map_err(|error| ClusterError::Corrupt {
                    path: path.clone(),
                    position: 0,
                    reason: error.to_string(),
                })?;
            if theirs.node_id != ours.node_id {
                return Err(foreign(
                    &path,
                    format!(
                        "this data directory belongs to node {}, not node {}",
                        theirs.node_id, ours.node_id
                    ),
                ));
            }
            if theirs.voters != ours.voters {
                return Err(foreign(
                    &path,
                    format!(
                        "this data directory was made for the controller voters {}, not {}",
                        theirs.voters, ours.voters
                    ),
                ));
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(&config.dir)
                .map_err(|error| ClusterError::io(&config.dir, error))?;
            let bytes = serde_json::to_vec_pretty(&ours).expect("serializable");
            write_atomically(&path, &bytes).map_err(|error| ClusterError::io(&path, error))
        }
        Err(error) => Err(ClusterError::io(path, error)),
    }
}

fn foreign(path: &Path, reason: String) -> ClusterError {
    ClusterError::ForeignDataDir {
        path: path.to_owned(),
        reason,
    }
}

/// Registers this node, then heartbeats the leader; registers again when
/// the leader does not know this incarnation.
async fn heartbeat_loop(controller: std::sync::Weak<Controller>, endpoints: Endpoints) {
    let mut registered = false;
    loop {
        let Some(this) = controller.upgrade() else {
            return;
        };
        let interval = this.config.heartbeat_interval;
        if !registered {
            let node = NodeRegistration {
                id: this.config.node_id,
                incarnation: this.incarnation,
                kafka: endpoints.kafka.clone(),
                amqp: endpoints.amqp.clone(),
                http: endpoints.http.clone(),
            };
            match this.propose(MetadataCommand::RegisterNode { node }).await {
                Ok(()) => {
                    registered = true;
                    tracing::info!(node = this.config.node_id, "registered with the controller");
                }
                Err(error) => {
                    tracing::warn!(%error, "registering with the controller failed; retrying")
                }
            }
        } else if let Some(leader) = this.leader() {
            let reply = if leader == this.config.node_id {
                Some(this.heard_from(leader, this.incarnation))
            } else {
                let request = Request::Heartbeat {
                    id: this.config.node_id,
                    incarnation: this.incarnation,
                };
                let timeout = this.config.session_timeout / HEARTBEAT_TIMEOUTS_PER_SESSION;
                match this.call_within(leader, &request, timeout).await {
                    Ok(Reply::Heartbeat(reply)) => Some(reply),
                    Ok(_) | Err(_) => None,
                }
            };
            if reply == Some(HeartbeatReply::Register) {
                registered = false;
            }
        }
        drop(this);
        tokio::time::sleep(interval).await;
    }
}

/// Logs leader changes; while this node leads, names the cluster once and
/// fences nodes that have not been heard for the session timeout.
async fn leader_loop(controller: std::sync::Weak<Controller>) {
    let mut naming_proposed = false;
    let mut known_leader = None;
    loop {
        let Some(this) = controller.upgrade() else {
            return;
        };
        let tick = this.config.heartbeat_interval / 2;
        let (leader, term) = {
            let metrics = this.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_leader, metrics.current_term)
        };
        if leader != known_leader {
            let mut view = this.view.write();
            let refreshed = ClusterView {
                controller: leader,
                ..view.as_ref().clone()
            };
            *view = Arc::new(refreshed);
            drop(view);
            match leader {
                Some(leader) => tracing::info!(leader, term, "controller leader elected"),
                None => tracing::warn!(term, "no controller leader"),
            }
            known_leader = leader;
        }
        if this.is_leader() {
            if !naming_proposed && this.read(|state| state.cluster_id().is_none()) {
                naming_proposed = true;
                this.propose_in_background(MetadataCommand::InitializeCluster {
                    id: Uuid::new_v4(),
                });
            }
            for (id, incarnation) in this.overdue_nodes() {
                tracing::warn!(node = id, "node missed its heartbeats: fencing it");
                this.propose_in_background(MetadataCommand::FenceNode { id, incarnation });
            }
            for election in this.read(MetadataState::elections) {
                tracing::info!(?election, "partition leadership change");
                this.propose_in_background(election);
            }
        }
        drop(this);
        tokio::time::sleep(tick).await;
    }
}

impl Controller {
    /// Unfenced nodes not heard (as their registered incarnation) for the
    /// session timeout. A leader new in its term first gives every node a
    /// full timeout.
    fn overdue_nodes(&self) -> Vec<(NodeId, Uuid)> {
        let term = self.raft.metrics().borrow().current_term;
        let now = Instant::now();
        let mut liveness = self.liveness.lock();
        if liveness.term != Some(term) {
            liveness.term = Some(term);
            liveness.heard.clear();
        }
        let nodes: Vec<(NodeId, Uuid)> = self.state.read(|state| {
            state
                .nodes()
                .iter()
                .filter(|(_, node)| !node.fenced)
                .map(|(id, node)| (*id, node.incarnation))
                .collect()
        });
        let timeout = self.config.session_timeout;
        nodes
            .into_iter()
            .filter(|(id, incarnation)| {
                let heard = liveness.heard.entry(*id).or_insert((*incarnation, now));
                if heard.0 != *incarnation {
                    // Registered anew since last heard: a fresh start.
                    *heard = (*incarnation, now);
                }
                now.duration_since(heard.1) > timeout
            })
            .collect()
    }
}
