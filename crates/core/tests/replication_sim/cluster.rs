//! The simulated cluster: three brokers on real files, the network
//! between them, the controller, and the faults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use uuid::Uuid;
use weir_core::metadata::{Leadership, MetadataCommand, MetadataState, NodeRegistration};
use weir_core::{
    Broker, BrokerConfig, ClusterView, CoreError, MetadataQuorum, Partition, ReplicaCall,
    ReplicaReply, ReplicaRequest, ReplicaTransport,
};
use weir_log::{Log, LogConfig};

use crate::history::History;
use crate::schedule::{CrashKind, Fault, Peer, Rng, Schedule, Target};

pub(crate) const NODES: [u64; 3] = [1, 2, 3];
pub(crate) const TOPIC: &str = "sim";
/// How often the controller hears nodes, fences, elects and publishes.
pub(crate) const CONTROLLER_TICK: Duration = Duration::from_millis(20);
/// A node not heard for this long is fenced.
pub(crate) const SESSION_TIMEOUT: Duration = Duration::from_millis(600);
/// How often leaders' in-sync set proposals reach the controller.
pub(crate) const ISR_PROPOSAL_INTERVAL: Duration = Duration::from_millis(100);
/// `replica.lag.time.max.ms` of the simulated brokers.
pub(crate) const REPLICA_LAG_MAX: Duration = Duration::from_secs(1);
/// How long an `acks=all` append waits for replication.
pub(crate) const REPLICATION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the reader reads the leaders' logs.
pub(crate) const READ_INTERVAL: Duration = Duration::from_millis(20);
/// How long the healed cluster has to converge.
pub(crate) const CONVERGENCE_TIME_MAX: Duration = Duration::from_secs(60);
/// The producer number of the write made after healing.
pub(crate) const PROBE: usize = usize::MAX;

/// One end of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum End {
    Node(u64),
    Controller,
}

pub(crate) fn link(a: End, b: End) -> (End, End) {
    (a.min(b), a.max(b))
}

/// The network's state.
#[derive(Debug, Default)]
pub(crate) struct Net {
    /// Cut links, with how many faults cut each.
    pub(crate) cut: BTreeMap<(End, End), u32>,
    /// Extra delays of the slow periods running now.
    pub(crate) slow: Vec<u64>,
    /// Nodes that apply no metadata now, with how many faults stall each.
    pub(crate) stale: BTreeMap<u64, u32>,
    /// Links whose messages take a fixed time now (several faults: the longest).
    pub(crate) fixed_delays: BTreeMap<(End, End), Vec<u64>>,
    pub(crate) delay_ms_max: u64,
    pub(crate) loss_chance: f64,
}

/// A running incarnation of a node.
pub(crate) struct Live {
    pub(crate) broker: Arc<Broker>,
    pub(crate) incarnation: u64,
    pub(crate) uuid: Uuid,
    pub(crate) quorum: Arc<SimQuorum>,
    /// Set when it crashes: its requests in progress stop.
    pub(crate) killed: tokio::sync::watch::Sender<bool>,
}

/// What a crashed incarnation leaves to its restart.
pub(crate) struct Crashed {
    pub(crate) broker: Weak<Broker>,
    pub(crate) partition: Arc<Partition>,
    pub(crate) kind: CrashKind,
    /// The log's durable end when it crashed.
    pub(crate) durable_end: u64,
}

pub(crate) struct Node {
    pub(crate) dir: PathBuf,
    pub(crate) live: Option<Live>,
    pub(crate) incarnations: u64,
    /// The controller state this node applied last (its own copy, which
    /// survives a crash).
    pub(crate) applied: usize,
    pub(crate) crashed: Option<Crashed>,
}

/// The controller: one state machine, always available.
pub(crate) struct Controller {
    pub(crate) state: MetadataState,
    /// Every state it went through, in order; nodes apply them in order.
    pub(crate) states: Vec<Arc<MetadataState>>,
    /// When each node's registered incarnation was last heard.
    pub(crate) heard: BTreeMap<u64, Instant>,
    pub(crate) next_isr_round: Instant,
}

/// The whole simulated cluster of one case.
pub(crate) struct Sim {
    pub(crate) schedule: Schedule,
    pub(crate) start: Instant,
    /// The driver's: faults, the controller, power cuts.
    pub(crate) rng: Mutex<Rng>,
    /// Each direction of each link's own, so that the fate of its messages
    /// does not depend on how other tasks interleave.
    pub(crate) link_rngs: Mutex<BTreeMap<(u64, u64), Rng>>,
    pub(crate) net: Mutex<Net>,
    pub(crate) nodes: Mutex<BTreeMap<u64, Node>>,
    pub(crate) controller: Mutex<Controller>,
    pub(crate) history: Mutex<History>,
    pub(crate) stop_producing: AtomicBool,
    /// Set once the cluster heals: no more lost messages or metadata lag.
    pub(crate) healed: AtomicBool,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sim")
            .field("seed", &self.schedule.seed)
            .finish_non_exhaustive()
    }
}

/// A node's view of the controller: the state it applied last.
#[derive(Debug)]
pub(crate) struct SimQuorum {
    pub(crate) view: Mutex<Arc<ClusterView>>,
}

impl MetadataQuorum for SimQuorum {
    fn commit(&self, _command: MetadataCommand) -> weir_core::Result<()> {
        // The simulated controller takes in-sync set proposals itself (see
        // `Sim::controller_tick`); nothing else is proposed in a case.
        Err(CoreError::ClusterUnavailable(
            "the simulated controller takes no proposals".into(),
        ))
    }

    fn view(&self) -> Arc<ClusterView> {
        Arc::clone(&self.view.lock())
    }
}

/// A node incarnation's connections to the others.
pub(crate) struct SimTransport {
    pub(crate) sim: Weak<Sim>,
    pub(crate) from: u64,
    pub(crate) incarnation: u64,
}

impl std::fmt::Debug for SimTransport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SimTransport")
            .field("from", &self.from)
            .field("incarnation", &self.incarnation)
            .finish()
    }
}

impl ReplicaTransport for SimTransport {
    fn call(&self, leader: u64, request: ReplicaRequest) -> ReplicaCall {
        let sim = self.sim.clone();
        let (from, incarnation) = (self.from, self.incarnation);
        Box::pin(async move {
            match sim.upgrade() {
                Some(sim) => sim.call(from, incarnation, leader, request).await,
                None => Err(broken("the simulation ended")),
            }
        })
    }
}

pub(crate) fn broken(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionReset, why.to_owned())
}

pub(crate) fn partition_of(broker: &Broker) -> Option<Arc<Partition>> {
    broker.topic(TOPIC).ok()?.partition(0).ok()
}

impl Sim {
    pub(crate) fn new(schedule: Schedule, dir: &Path) -> Arc<Sim> {
        let mut state = MetadataState::new();
        for id in NODES {
            state
                .apply(&MetadataCommand::RegisterNode {
                    node: registration(id, incarnation_uuid(id, 0)),
                })
                .expect("registers");
        }
        let configs = BTreeMap::from([
            ("min.insync.replicas".to_owned(), "2".to_owned()),
            (
                "segment.bytes".to_owned(),
                schedule.segment_bytes.to_string(),
            ),
        ]);
        state
            .apply(&MetadataCommand::CreateTopic {
                name: TOPIC.to_owned(),
                id: Uuid::from_u128(7),
                partitions: 1,
                configs,
                replicas: vec![schedule.replicas.clone()],
            })
            .expect("creates the topic");
        let now = Instant::now();
        let nodes = NODES
            .iter()
            .map(|id| {
                let node = Node {
                    dir: dir.join(format!("node-{id}")),
                    live: None,
                    incarnations: 0,
                    applied: 0,
                    crashed: None,
                };
                (*id, node)
            })
            .collect();
        Arc::new(Sim {
            rng: Mutex::new(Rng::new(schedule.seed.wrapping_mul(31).wrapping_add(1))),
            link_rngs: Mutex::new(
                NODES
                    .iter()
                    .flat_map(|from| NODES.iter().map(move |to| (*from, *to)))
                    .map(|(from, to)| {
                        let stream = schedule.seed ^ (from << 40) ^ (to << 48);
                        (
                            (from, to),
                            Rng::new(stream.wrapping_mul(0x2545_F491_4F6C_DD1D)),
                        )
                    })
                    .collect(),
            ),
            net: Mutex::new(Net {
                delay_ms_max: schedule.delay_ms_max,
                loss_chance: schedule.loss_chance,
                ..Net::default()
            }),
            nodes: Mutex::new(nodes),
            controller: Mutex::new(Controller {
                states: vec![Arc::new(state.clone())],
                state,
                heard: NODES.iter().map(|id| (*id, now)).collect(),
                next_isr_round: now,
            }),
            history: Mutex::new(History::default()),
            stop_producing: AtomicBool::new(false),
            healed: AtomicBool::new(false),
            schedule,
            start: now,
        })
    }

    pub(crate) fn now_ms(&self) -> u64 {
        Instant::now().duration_since(self.start).as_millis() as u64
    }

    pub(crate) fn trace(&self, line: impl Into<String>) {
        let line = format!("{:>6} ms  {}", self.now_ms(), line.into());
        self.history.lock().trace.push(line);
    }

    pub(crate) fn violation(&self, what: impl Into<String>) {
        let what = format!("at {} ms: {}", self.now_ms(), what.into());
        let mut history = self.history.lock();
        history.trace.push(format!("VIOLATION {what}"));
        history.violations.push(what);
    }

    // -- nodes --

    /// Opens node `id` (again), with the metadata state it applied last.
    pub(crate) fn open_node(self: &Arc<Self>, id: u64) {
        let (dir, incarnation, applied) = {
            let mut nodes = self.nodes.lock();
            let node = nodes.get_mut(&id).expect("a node");
            assert!(node.live.is_none(), "node {id} is running already");
            node.incarnations += 1;
            (node.dir.clone(), node.incarnations, node.applied)
        };
        let state = Arc::clone(&self.controller.lock().states[applied]);
        let mut config = BrokerConfig::new(dir);
        config.node_id = id as i32;
        config.replica_lag_time_max = REPLICA_LAG_MAX;
        config.replication_timeout = REPLICATION_TIMEOUT;
        config.disk_free_limit_bytes = 0;
        let broker = Arc::new(Broker::open(config).expect("a node's broker opens"));
        let quorum = Arc::new(SimQuorum {
            view: Mutex::new(Arc::new(view_of(&state))),
        });
        let transport = Arc::new(SimTransport {
            sim: Arc::downgrade(self),
            from: id,
            incarnation,
        });
        broker.join_cluster(Arc::clone(&quorum) as Arc<dyn MetadataQuorum>, transport);
        broker
            .reconcile(&state, &BTreeSet::new())
            .expect("a node reconciles");
        let live = Live {
            broker,
            incarnation,
            uuid: incarnation_uuid(id, incarnation),
            quorum,
            killed: tokio::sync::watch::Sender::new(false),
        };
        self.nodes.lock().get_mut(&id).expect("a node").live = Some(live);
    }

    pub(crate) fn live_broker(&self, id: u64) -> Option<(Arc<Broker>, u64)> {
        let nodes = self.nodes.lock();
        let live = nodes.get(&id)?.live.as_ref()?;
        Some((Arc::clone(&live.broker), live.incarnation))
    }

    pub(crate) fn is_alive(&self, id: u64, incarnation: u64) -> bool {
        self.nodes
            .lock()
            .get(&id)
            .and_then(|node| node.live.as_ref())
            .is_some_and(|live| live.incarnation == incarnation)
    }

    pub(crate) fn crash(self: &Arc<Self>, id: u64, kind: CrashKind) -> bool {
        let live = {
            let mut nodes = self.nodes.lock();
            let node = nodes.get_mut(&id).expect("a node");
            let Some(live) = node.live.take() else {
                return false;
            };
            live
        };
        let Some(partition) = partition_of(&live.broker) else {
            panic!("node {id} has no partition");
        };
        let durable_end = partition.log().durable_end_offset();
        if kind == CrashKind::Clean {
            if let Err(error) = live.broker.shutdown() {
                self.trace(format!("node {id}: shutdown failed: {error}"));
            }
        }
        live.killed.send_replace(true);
        let crashed = Crashed {
            broker: Arc::downgrade(&live.broker),
            partition,
            kind,
            durable_end,
        };
        drop(live);
        self.nodes.lock().get_mut(&id).expect("a node").crashed = Some(crashed);
        true
    }

    /// Opens a crashed node again; false while the crashed broker is still
    /// referenced (its last requests end at this virtual instant).
    pub(crate) fn restart(self: &Arc<Self>, id: u64) -> bool {
        let crashed = {
            let mut nodes = self.nodes.lock();
            let node = nodes.get_mut(&id).expect("a node");
            if node.live.is_some() {
                return true;
            }
            let Some(crashed) = node.crashed.take() else {
                return true;
            };
            if crashed.broker.strong_count() > 0 {
                node.crashed = Some(crashed);
                return false;
            }
            crashed
        };
        if crashed.kind == CrashKind::PowerLoss {
            let end = crashed.partition.log().offsets().log_end_offset;
            let keep = self
                .rng
                .lock()
                .range(crashed.durable_end.min(end), end.max(crashed.durable_end));
            let dir = self.nodes.lock()[&id]
                .dir
                .join("topics")
                .join(TOPIC)
                .join("0");
            let mut log = Log::open(&dir, LogConfig::default(), false).expect("the log opens");
            log.truncate_to(keep).expect("the power cut truncates");
            let kept = log.log_end_offset();
            drop(log);
            self.trace(format!(
                "node {id}: power loss kept {kept} of {end} (synced {})",
                crashed.durable_end
            ));
        }
        drop(crashed);
        self.open_node(id);
        true
    }

    // -- network --

    pub(crate) fn link_up(&self, a: End, b: End) -> bool {
        !self.net.lock().cut.contains_key(&link(a, b))
    }

    pub(crate) fn cut(&self, a: End, b: End) {
        *self.net.lock().cut.entry(link(a, b)).or_insert(0) += 1;
    }

    pub(crate) fn heal(&self, a: End, b: End) {
        let mut net = self.net.lock();
        if let Some(count) = net.cut.get_mut(&link(a, b)) {
            *count -= 1;
            if *count == 0 {
                net.cut.remove(&link(a, b));
            }
        }
    }

    /// How long a message from `from` to `to` takes, whether it is lost,
    /// and if so when its sender learns it.
    pub(crate) fn message_fate(&self, from: u64, to: u64) -> (Duration, Option<Duration>) {
        let (delay_ms_max, loss_chance, fixed) = {
            let net = self.net.lock();
            let slow = net.slow.iter().copied().max().unwrap_or(0);
            let fixed = net
                .fixed_delays
                .get(&link(End::Node(from), End::Node(to)))
                .and_then(|delays| delays.iter().copied().max());
            (net.delay_ms_max.max(slow), net.loss_chance, fixed)
        };
        if let Some(fixed) = fixed {
            return (Duration::from_millis(fixed), None);
        }
        let mut rngs = self.link_rngs.lock();
        let rng = rngs.get_mut(&(from, to)).expect("a link");
        let delay = Duration::from_millis(rng.range(0, delay_ms_max));
        let noticed = Duration::from_millis(rng.range(10, 500));
        (delay, rng.chance(loss_chance).then_some(noticed))
    }

    /// A lost message: the caller learns it after `noticed`.
    pub(crate) async fn lost(noticed: Duration) -> std::io::Result<ReplicaReply> {
        tokio::time::sleep(noticed).await;
        Err(broken("connection lost"))
    }

    pub(crate) async fn call(
        &self,
        from: u64,
        incarnation: u64,
        to: u64,
        request: ReplicaRequest,
    ) -> std::io::Result<ReplicaReply> {
        if !self.is_alive(from, incarnation) {
            // A crashed incarnation's task: it no longer has a network.
            return Err(broken("crashed"));
        }
        let (delay, lost) = self.message_fate(from, to);
        let noticed = lost.unwrap_or(delay + Duration::from_millis(100));
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if lost.is_some() || !self.link_up(End::Node(from), End::Node(to)) {
            return Sim::lost(noticed).await;
        }
        let target = {
            let nodes = self.nodes.lock();
            nodes[&to]
                .live
                .as_ref()
                .map(|live| (Arc::clone(&live.broker), live.killed.subscribe()))
        };
        let Some((broker, mut killed)) = target else {
            return Sim::lost(noticed).await;
        };
        let reply = tokio::select! {
            reply = broker.serve_replica(request) => Some(reply),
            _ = killed.wait_for(|killed| *killed) => None,
        };
        drop(broker);
        let Some(reply) = reply else {
            return Sim::lost(noticed).await;
        };
        let (delay, lost) = self.message_fate(to, from);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if lost.is_some()
            || !self.link_up(End::Node(from), End::Node(to))
            || !self.is_alive(from, incarnation)
        {
            return Sim::lost(lost.unwrap_or(noticed)).await;
        }
        Ok(reply)
    }

    // -- the controller --

    /// Applies `command`; false when the state refuses it (a stale version).
    pub(crate) fn commit(&self, controller: &mut Controller, command: &MetadataCommand) -> bool {
        if controller.state.apply(command).is_err() {
            return false;
        }
        controller.states.push(Arc::new(controller.state.clone()));
        let leadership = controller
            .state
            .topic(TOPIC)
            .and_then(|image| image.leadership(0));
        let what = match command {
            MetadataCommand::RegisterNode { node } => format!("register node {}", node.id),
            MetadataCommand::FenceNode { id, .. } => format!("fence node {id}"),
            MetadataCommand::UnfenceNode { id, .. } => format!("unfence node {id}"),
            MetadataCommand::ChangeLeadership { leader, isr, .. } => {
                format!("change leadership: leader {leader:?} isr {isr:?}")
            }
            other => format!("{other:?}"),
        };
        self.trace(format!("controller: {what} -> {}", describe(&leadership)));
        true
    }

    pub(crate) fn leadership(&self) -> Option<Leadership> {
        self.controller
            .lock()
            .state
            .topic(TOPIC)
            .and_then(|image| image.leadership(0))
    }

    /// One round of the controller: hears nodes, registers restarted ones,
    /// fences silent ones, elects, takes the leaders' in-sync set
    /// proposals, and brings nodes up to date.
    pub(crate) fn controller_tick(self: &Arc<Self>) {
        let now = Instant::now();
        let mut order = NODES.to_vec();
        self.rng.lock().shuffle(&mut order);
        let reachable: Vec<(u64, Uuid, Arc<Broker>)> = order
            .iter()
            .filter(|id| self.link_up(End::Node(**id), End::Controller))
            .filter_map(|id| {
                let nodes = self.nodes.lock();
                let live = nodes[id].live.as_ref()?;
                Some((*id, live.uuid, Arc::clone(&live.broker)))
            })
            .collect();
        {
            let mut controller = self.controller.lock();
            for (id, uuid, _) in &reachable {
                let registered = controller.state.nodes()[id].clone();
                if registered.incarnation != *uuid {
                    let command = MetadataCommand::RegisterNode {
                        node: registration(*id, *uuid),
                    };
                    self.commit(&mut controller, &command);
                } else if registered.fenced {
                    let command = MetadataCommand::UnfenceNode {
                        id: *id,
                        incarnation: *uuid,
                    };
                    self.commit(&mut controller, &command);
                }
                controller.heard.insert(*id, now);
            }
            let silent: Vec<MetadataCommand> = controller
                .state
                .nodes()
                .iter()
                .filter(|(id, node)| {
                    !node.fenced && now.duration_since(controller.heard[*id]) > SESSION_TIMEOUT
                })
                .map(|(id, node)| MetadataCommand::FenceNode {
                    id: *id,
                    incarnation: node.incarnation,
                })
                .collect();
            for command in &silent {
                self.commit(&mut controller, command);
            }
            for command in controller.state.elections() {
                self.commit(&mut controller, &command);
            }
        }
        let isr_round = {
            let mut controller = self.controller.lock();
            let due = now >= controller.next_isr_round;
            if due {
                controller.next_isr_round = now + ISR_PROPOSAL_INTERVAL;
            }
            due
        };
        if isr_round {
            for (_, _, broker) in &reachable {
                for command in broker.wanted_isr_changes() {
                    let mut controller = self.controller.lock();
                    self.commit(&mut controller, &command);
                }
            }
        }
        let lag = if self.healed.load(Ordering::SeqCst) {
            0.0
        } else {
            self.schedule.metadata_lag_chance
        };
        for (id, _, broker) in reachable {
            let lagging = self.rng.lock().chance(lag);
            if lagging || self.net.lock().stale.contains_key(&id) {
                continue;
            }
            self.publish_to(id, &broker);
        }
    }

    /// Brings node `id` up to the controller's latest state.
    pub(crate) fn publish_to(&self, id: u64, broker: &Broker) {
        let (latest, state) = {
            let controller = self.controller.lock();
            let latest = controller.states.len() - 1;
            (latest, Arc::clone(&controller.states[latest]))
        };
        let quorum = {
            let mut nodes = self.nodes.lock();
            let node = nodes.get_mut(&id).expect("a node");
            if node.applied == latest {
                return;
            }
            node.applied = latest;
            node.live.as_ref().map(|live| Arc::clone(&live.quorum))
        };
        if let Some(quorum) = quorum {
            *quorum.view.lock() = Arc::new(view_of(&state));
        }
        if let Err(error) = broker.reconcile(&state, &BTreeSet::new()) {
            self.violation(format!("node {id} could not apply the metadata: {error}"));
        }
    }

    // -- faults --

    pub(crate) fn resolve(&self, target: Target) -> u64 {
        let leader = self.leadership().and_then(|leadership| leadership.leader);
        match target {
            Target::Node(id) => id,
            Target::Leader => leader.unwrap_or_else(|| self.rng.lock().pick(&NODES)),
            Target::Follower => {
                let others: Vec<u64> = NODES
                    .iter()
                    .copied()
                    .filter(|id| Some(*id) != leader)
                    .collect();
                self.rng.lock().pick(&others)
            }
        }
    }

    /// The other end of a fault on node `id`.
    pub(crate) fn resolve_peer(&self, id: u64, peer: Peer) -> End {
        match peer {
            Peer::Controller => End::Controller,
            Peer::AnotherNode => {
                let others: Vec<u64> = NODES.iter().copied().filter(|n| *n != id).collect();
                End::Node(self.rng.lock().pick(&others))
            }
            Peer::Node(other) => End::Node(other),
        }
    }

    /// Starts `fault`; returns what ends it, and when.
    pub(crate) fn begin(self: &Arc<Self>, fault: Fault) -> Vec<(Duration, Action)> {
        match fault {
            Fault::Delay {
                node,
                peer,
                ms,
                delay_ms,
            } => {
                let id = self.resolve(node);
                let other = self.resolve_peer(id, peer);
                let key = link(End::Node(id), other);
                self.net
                    .lock()
                    .fixed_delays
                    .entry(key)
                    .or_default()
                    .push(delay_ms);
                self.trace(format!(
                    "messages between node {id} and {other:?} take {delay_ms} ms for {ms} ms"
                ));
                vec![(Duration::from_millis(ms), Action::EndDelay(key, delay_ms))]
            }
            Fault::Crash {
                node,
                kind,
                down_ms,
            } => {
                let id = self.resolve(node);
                if !self.crash(id, kind) {
                    self.trace(format!("node {id} is down already"));
                    return Vec::new();
                }
                self.trace(format!("crash node {id} ({kind:?}) for {down_ms} ms"));
                vec![(Duration::from_millis(down_ms), Action::Restart(id))]
            }
            Fault::Cut { node, peer, ms } => {
                let id = self.resolve(node);
                let other = self.resolve_peer(id, peer);
                self.cut(End::Node(id), other);
                self.trace(format!("cut node {id} from {other:?} for {ms} ms"));
                vec![(
                    Duration::from_millis(ms),
                    Action::Heal(vec![(End::Node(id), other)]),
                )]
            }
            Fault::Isolate { node, ms } => {
                let id = self.resolve(node);
                let links: Vec<(End, End)> = NODES
                    .iter()
                    .filter(|other| **other != id)
                    .map(|other| End::Node(*other))
                    .chain([End::Controller])
                    .map(|other| (End::Node(id), other))
                    .collect();
                for (a, b) in &links {
                    self.cut(*a, *b);
                }
                self.trace(format!("isolate node {id} for {ms} ms"));
                vec![(Duration::from_millis(ms), Action::Heal(links))]
            }
            Fault::Stale { node, ms } => {
                let id = self.resolve(node);
                *self.net.lock().stale.entry(id).or_insert(0) += 1;
                self.trace(format!("node {id} applies no metadata for {ms} ms"));
                vec![(Duration::from_millis(ms), Action::EndStale(id))]
            }
            Fault::Slow { ms, delay_ms } => {
                self.net.lock().slow.push(delay_ms);
                self.trace(format!("messages slow (up to {delay_ms} ms) for {ms} ms"));
                vec![(Duration::from_millis(ms), Action::EndSlow(delay_ms))]
            }
        }
    }

    pub(crate) fn end(self: &Arc<Self>, action: Action) -> Option<Action> {
        match action {
            Action::Restart(id) => {
                if !self.restart(id) {
                    return Some(Action::Restart(id));
                }
                self.trace(format!("restart node {id}"));
            }
            Action::Heal(links) => {
                for (a, b) in &links {
                    self.heal(*a, *b);
                }
                self.trace(format!("heal {links:?}"));
            }
            Action::EndDelay(key, delay_ms) => {
                let mut net = self.net.lock();
                if let Some(delays) = net.fixed_delays.get_mut(&key) {
                    if let Some(at) = delays.iter().position(|d| *d == delay_ms) {
                        delays.remove(at);
                    }
                    if delays.is_empty() {
                        net.fixed_delays.remove(&key);
                    }
                }
            }
            Action::EndStale(id) => {
                let mut net = self.net.lock();
                if let Some(count) = net.stale.get_mut(&id) {
                    *count -= 1;
                    if *count == 0 {
                        net.stale.remove(&id);
                    }
                }
            }
            Action::EndSlow(delay_ms) => {
                let mut net = self.net.lock();
                if let Some(at) = net.slow.iter().position(|d| *d == delay_ms) {
                    net.slow.remove(at);
                }
            }
        }
        None
    }

    /// Ends every fault: links heal, messages arrive promptly, crashed nodes
    /// come back.
    pub(crate) fn heal_all(self: &Arc<Self>) -> Vec<u64> {
        self.healed.store(true, Ordering::SeqCst);
        {
            let mut net = self.net.lock();
            net.cut.clear();
            net.slow.clear();
            net.stale.clear();
            net.fixed_delays.clear();
            net.loss_chance = 0.0;
            net.delay_ms_max = net.delay_ms_max.min(2);
        }
        self.trace("heal everything");
        self.nodes
            .lock()
            .iter()
            .filter(|(_, node)| node.live.is_none())
            .map(|(id, _)| *id)
            .collect()
    }
}

/// What ends a fault.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Restart(u64),
    Heal(Vec<(End, End)>),
    EndStale(u64),
    EndSlow(u64),
    EndDelay((End, End), u64),
}

/// What a node's brokers read of the cluster when it applied `state`.
pub(crate) fn view_of(state: &MetadataState) -> ClusterView {
    ClusterView {
        nodes: state.nodes().clone(),
        cluster_id: state.cluster_id(),
        state: state.clone(),
        ..ClusterView::default()
    }
}

pub(crate) fn incarnation_uuid(id: u64, incarnation: u64) -> Uuid {
    Uuid::from_u128((u128::from(id) << 64) | u128::from(incarnation))
}

pub(crate) fn registration(id: u64, incarnation: Uuid) -> NodeRegistration {
    NodeRegistration {
        id,
        incarnation,
        kafka: Some(format!("127.0.0.1:{}", 9090 + id)),
        amqp: None,
        http: None,
    }
}

pub(crate) fn describe(leadership: &Option<Leadership>) -> String {
    match leadership {
        Some(l) => format!(
            "leader {:?} epoch {} isr {:?} v{}",
            l.leader, l.epoch, l.isr, l.version
        ),
        None => "none".to_owned(),
    }
}
