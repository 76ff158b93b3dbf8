//! `weir bench kafka rebalance`: start K consumers of one group together on one
//! topic and time how long it takes until the group has settled.
//!
//! The topic is first seeded with a few messages in every partition, so that
//! a consumer that holds a partition always has something to read. The
//! clock starts just before the consumers are created (each in its own
//! thread, each subscribing at once). The group counts as *ready* when
//!
//! * every consumer holds at least one partition,
//! * together they hold every partition of the topic exactly once, and
//! * every consumer has read a message from a partition it currently holds,
//!   after it was assigned that partition.
//!
//! The reported `ready_s` is the moment the last consumer read that first
//! message. With the eager protocol a member's assignment is empty between a
//! revocation and the next assignment, so a disjoint cover held by K
//! non-empty members can only come from one generation. After that the
//! consumers keep polling for `--settle-s` to show whether the group stays
//! as it is (`stable`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientContext;
use serde::Serialize;
use serde_json::{json, Value};

use super::{apply_properties, base_config, create_topic, unique_name, KafkaArgs};
use crate::payload::{filler, stamp};
use crate::report::Report;
use crate::run::{finish_report, validate_clients, OutputArgs};

/// How often the main thread looks at the members' state.
const CHECK_INTERVAL_MS: u64 = 1;

/// Arguments of `weir bench kafka rebalance`.
#[derive(Clone, Args, Debug, Serialize)]
pub struct RebalanceArgs {
    /// Broker and topic.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Output.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Consumers started together in the one group.
    #[arg(long, default_value_t = 3)]
    pub consumers: usize,
    /// Do not create the topic (by default it is created through the Admin
    /// API, and "already exists" is fine).
    #[arg(long)]
    pub no_create_topic: bool,
    /// Partitions of the topic when it is created.
    #[arg(long, default_value_t = 6)]
    pub topic_partitions: i32,
    /// Messages written to every partition (acks=all) before the clock
    /// starts, so that each has something to read. 0 = write none.
    #[arg(long, default_value_t = 10)]
    pub seed_per_partition: u64,
    /// Value size of the seeded messages.
    #[arg(long = "size", short = 's', default_value_t = 100)]
    pub size_bytes: usize,
    /// group.id (default: a new group per run).
    #[arg(long)]
    pub group: Option<String>,
    /// Once the group is ready, keep polling this long and report whether
    /// it rebalanced again.
    #[arg(long, default_value_t = 2.0)]
    pub settle_s: f64,
    /// Give up when the group is not ready after this long.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_s: f64,
}

/// One consumer, as its callbacks and poll loop saw it.
#[derive(Default, Debug)]
struct MemberState {
    /// Partitions held now, each with the time (seconds since the start) of
    /// the first message read from it since it was assigned.
    held: BTreeMap<i32, Option<f64>>,
    assign_events: u32,
    revoke_events: u32,
    first_assigned_s: Option<f64>,
    last_change_s: Option<f64>,
    messages: u64,
    errors: u64,
    first_error: Option<String>,
}

impl MemberState {
    /// When this member first read from what it holds now, if it has.
    fn reading_since_s(&self) -> Option<f64> {
        self.held.values().flatten().copied().min_by(f64::total_cmp)
    }

    fn note_error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    fn report(&self) -> Value {
        json!({
            "partitions": self.held.keys().collect::<Vec<_>>(),
            "assign_events": self.assign_events,
            "revoke_events": self.revoke_events,
            "first_assigned_s": self.first_assigned_s,
            "last_change_s": self.last_change_s,
            "reading_since_s": self.reading_since_s(),
            "messages": self.messages,
            "errors": self.errors,
            "first_error": self.first_error,
        })
    }
}

/// The members' states, shared by their threads and the main thread.
struct Shared {
    started: Instant,
    members: Mutex<Vec<MemberState>>,
}

impl Shared {
    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn members(&self) -> MutexGuard<'_, Vec<MemberState>> {
        // A poisoned lock only means another member thread panicked; its
        // state is still worth reporting.
        self.members
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Records every rebalance of one member.
struct MemberContext {
    index: usize,
    shared: Arc<Shared>,
}

impl ClientContext for MemberContext {}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let now = self.shared.elapsed_s();
        // The whole assignment after this event (with the cooperative
        // protocol an event carries only the increment).
        let held: BTreeSet<i32> = consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let mut members = self.shared.members();
        let Some(member) = members.get_mut(self.index) else {
            return;
        };
        match rebalance {
            Rebalance::Assign(_) => {
                member.assign_events += 1;
                member.first_assigned_s.get_or_insert(now);
            }
            Rebalance::Revoke(_) => member.revoke_events += 1,
            Rebalance::Error(error) => member.note_error(format!("rebalance: {error}")),
        }
        member.held.retain(|partition, _| held.contains(partition));
        for partition in held {
            member.held.entry(partition).or_insert(None);
        }
        member.last_change_s = Some(now);
    }
}

/// When the group became ready (see the module documentation), if it has.
fn ready_at_s(members: &[MemberState], partitions: usize) -> Option<f64> {
    let mut covered = BTreeSet::new();
    let mut held = 0;
    let mut ready_s: f64 = 0.0;
    for member in members {
        ready_s = ready_s.max(member.reading_since_s()?);
        held += member.held.len();
        covered.extend(member.held.keys().copied());
    }
    (held == partitions && covered.len() == partitions).then_some(ready_s)
}

fn events(members: &[MemberState]) -> Vec<(u32, u32)> {
    members
        .iter()
        .map(|m| (m.assign_events, m.revoke_events))
        .collect()
}

/// Writes `seed_per_partition` messages to every partition and waits for
/// their acknowledgements.
fn seed(args: &RebalanceArgs, partitions: i32) -> Result<f64, String> {
    let started = Instant::now();
    let mut config = base_config(&args.kafka);
    config.set("acks", "all").set("linger.ms", "5");
    apply_properties(&mut config, &args.kafka);
    let producer: BaseProducer = config
        .create()
        .map_err(|error| format!("seed producer: {error}"))?;
    let mut value = filler(args.size_bytes);
    for partition in 0..partitions {
        for sequence in 0..args.seed_per_partition {
            stamp(&mut value, sequence, crate::payload::clock_ns());
            let record = BaseRecord::<(), [u8]>::to(&args.kafka.topic)
                .partition(partition)
                .payload(&value[..]);
            producer
                .send(record)
                .map_err(|(error, _)| format!("seed send: {error}"))?;
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|error| format!("seed flush: {error}"))?;
    Ok(started.elapsed().as_secs_f64())
}

fn topic_partitions(args: &RebalanceArgs) -> Result<i32, String> {
    let config = base_config(&args.kafka);
    let probe: BaseConsumer = config
        .create()
        .map_err(|error| format!("metadata client: {error}"))?;
    let metadata = probe
        .fetch_metadata(Some(&args.kafka.topic), Duration::from_secs(30))
        .map_err(|error| format!("metadata: {error}"))?;
    let count = metadata
        .topics()
        .iter()
        .find(|topic| topic.name() == args.kafka.topic)
        .map_or(0, |topic| topic.partitions().len() as i32);
    if count == 0 {
        return Err(format!("topic {} has no partitions", args.kafka.topic));
    }
    Ok(count)
}

fn member_config(args: &RebalanceArgs, group: &str) -> ClientConfig {
    let mut config = base_config(&args.kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    apply_properties(&mut config, &args.kafka);
    config
}

/// One member's thread: create, subscribe, poll until told to stop, then
/// close (which leaves the group). Returns how long closing took.
fn run_member(
    index: usize,
    config: &ClientConfig,
    topic: &str,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
) -> f64 {
    let context = MemberContext {
        index,
        shared: Arc::clone(shared),
    };
    let consumer: BaseConsumer<MemberContext> = match config.create_with_context(context) {
        Ok(consumer) => consumer,
        Err(error) => {
            shared.members()[index].note_error(format!("consumer: {error}"));
            return 0.0;
        }
    };
    if let Err(error) = consumer.subscribe(&[topic]) {
        shared.members()[index].note_error(format!("subscribe: {error}"));
        return 0.0;
    }
    while !stop.load(Relaxed) {
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(message)) => {
                let now = shared.elapsed_s();
                let mut members = shared.members();
                let member = &mut members[index];
                member.messages += 1;
                if let Some(first) = member.held.get_mut(&message.partition()) {
                    first.get_or_insert(now);
                }
            }
            Some(Err(error)) => shared.members()[index].note_error(error.to_string()),
            None => {}
        }
    }
    let closing = Instant::now();
    drop(consumer);
    closing.elapsed().as_secs_f64()
}

/// Runs `kafka rebalance`.
///
/// # Errors
///
/// Bad arguments, or a broker that cannot be reached.
pub fn run(args: &RebalanceArgs) -> Result<Report, String> {
    validate_clients("--consumers", args.consumers)?;
    let topic_created = if args.no_create_topic {
        "not-asked".to_string()
    } else {
        create_topic(&args.kafka, args.topic_partitions)?
    };
    let partitions = topic_partitions(args)?;
    let seed_s = if args.seed_per_partition > 0 {
        Some(seed(args, partitions)?)
    } else {
        None
    };
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| unique_name("weir-bench-rebalance"));
    let config = member_config(args, &group);

    let shared = Arc::new(Shared {
        started: Instant::now(),
        members: Mutex::new(
            (0..args.consumers)
                .map(|_| MemberState::default())
                .collect(),
        ),
    });
    let stop = AtomicBool::new(false);
    let mut ready_s = None;
    let mut stable = None;
    let mut close_s: f64 = 0.0;
    // The members as they were when the measurement ended, before closing
    // revoked everything.
    let mut snapshot = Vec::new();
    let mut all_assigned_s = None;
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..args.consumers)
            .map(|index| {
                let (config, shared, stop) = (&config, &shared, &stop);
                scope.spawn(move || run_member(index, config, &args.kafka.topic, shared, stop))
            })
            .collect();
        ready_s = wait_until_ready(&shared, partitions as usize, args.timeout_s);
        if let Some(ready_s) = ready_s {
            let members = shared.members();
            all_assigned_s = members
                .iter()
                .filter_map(|m| m.last_change_s)
                .filter(|&changed_s| changed_s <= ready_s)
                .max_by(f64::total_cmp);
            let before = events(&members);
            drop(members);
            std::thread::sleep(Duration::from_secs_f64(args.settle_s));
            stable = Some(events(&shared.members()) == before);
        }
        let members = shared.members();
        snapshot = members.iter().map(MemberState::report).collect();
        drop(members);
        stop.store(true, Relaxed);
        for thread in threads {
            close_s = close_s.max(thread.join().unwrap_or(f64::NAN));
        }
    });

    let members = shared.members();
    let errors: u64 = members.iter().map(|m| m.errors).sum();
    let generations_seen = snapshot
        .iter()
        .filter_map(|member| member["assign_events"].as_u64())
        .max();
    let assignor = args
        .kafka
        .property
        .iter()
        .find(|(key, _)| key == "partition.assignment.strategy")
        .map_or("range,roundrobin (librdkafka default)", |(_, v)| v.as_str());
    let details = json!({
        "topic": args.kafka.topic,
        "topic_created": topic_created,
        "topic_partitions": partitions,
        "seed_per_partition": args.seed_per_partition,
        "seed_s": seed_s,
        "group": group,
        "consumers": args.consumers,
        "assignor": assignor,
        "properties": args.kafka.property.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "ready_s": ready_s,
        "all_assigned_s": all_assigned_s,
        "generations_seen": generations_seen,
        "settle_s": args.settle_s,
        "stable": stable,
        "close_s": close_s,
        "errors": errors,
        "members": snapshot,
        "complete": ready_s.is_some() && stable == Some(true),
    });
    drop(members);
    let mut report = Report::new("kafka rebalance", 0, 0, ready_s.unwrap_or(0.0));
    report.complete = ready_s.is_some() && stable == Some(true);
    report.details = details;
    finish_report(&mut report, &args.output, &args.kafka.broker, args, None);
    Ok(report)
}

/// Polls the members' state until the group is ready or `timeout_s` passed.
fn wait_until_ready(shared: &Shared, partitions: usize, timeout_s: f64) -> Option<f64> {
    loop {
        if let Some(ready_s) = ready_at_s(&shared.members(), partitions) {
            return Some(ready_s);
        }
        if shared.elapsed_s() > timeout_s {
            return None;
        }
        std::thread::sleep(Duration::from_millis(CHECK_INTERVAL_MS));
    }
}
