//! What the clients saw, and the checks of every invariant against it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use weir_core::{Partition, SharedLog};
use weir_log::batch::{decode_records, split_batches};

use crate::cluster::{partition_of, Sim, NODES, PROBE, TOPIC};

/// A node's partition as the trace last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Look {
    pub(crate) incarnation: u64,
    pub(crate) leads: bool,
    pub(crate) epoch: i32,
    /// The log's leader epochs and where each starts.
    pub(crate) epochs: Vec<(i32, u64)>,
    pub(crate) log_end: u64,
    pub(crate) high_watermark: u64,
}

/// An acknowledged write.
#[derive(Debug, Clone)]
pub(crate) struct Ack {
    pub(crate) producer: usize,
    pub(crate) values: Vec<String>,
    pub(crate) base_offset: u64,
    pub(crate) node: u64,
    pub(crate) at_ms: u64,
}

#[derive(Debug, Default)]
pub(crate) struct History {
    pub(crate) trace: Vec<String>,
    pub(crate) acks: Vec<Ack>,
    pub(crate) attempts: u64,
    /// Failed appends by error.
    pub(crate) failures: BTreeMap<String, u64>,
    /// Acknowledgements from an incarnation that had crashed (ignored).
    pub(crate) zombie_acks: u64,
    /// Records readers saw below a leader's high watermark, by offset.
    pub(crate) seen: BTreeMap<u64, String>,
    /// The highest high watermark seen per (node, incarnation, epoch) while leading.
    pub(crate) high_watermarks: BTreeMap<(u64, u64, i32), u64>,
    /// Where the reader of each (node, incarnation) goes on.
    pub(crate) read_from: BTreeMap<(u64, u64), u64>,
    /// What the trace last said of each node: whether it leads, its
    /// epoch, its log's epochs, log end and high watermark.
    pub(crate) looks: BTreeMap<u64, Look>,
    pub(crate) violations: Vec<String>,
}

pub(crate) fn value_text(value: &Option<Bytes>) -> String {
    value
        .as_ref()
        .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        .unwrap_or_else(|| "<null>".to_owned())
}

/// `(producer, sequence, index)` of a record value `p<producer>.<sequence>.<index>`.
pub(crate) fn parse_value(value: &str) -> Option<(usize, u64, u64)> {
    let mut parts = value.strip_prefix('p')?.split('.');
    let producer = match parts.next()? {
        "probe" => PROBE,
        number => number.parse().ok()?,
    };
    let sequence = parts.next()?.parse().ok()?;
    let index = parts.next()?.parse().ok()?;
    parts
        .next()
        .is_none()
        .then_some((producer, sequence, index))
}

pub(crate) fn value_of(producer: usize, sequence: u64, index: u64) -> String {
    if producer == PROBE {
        format!("pprobe.{sequence}.{index}")
    } else {
        format!("p{producer}.{sequence}.{index}")
    }
}

/// Every batch of `log` from its start to its end (synced or not).
pub(crate) fn batches_of(log: &SharedLog) -> Result<Vec<Bytes>, String> {
    let offsets = log.offsets();
    let mut offset = offsets.log_start_offset;
    let mut batches = Vec::new();
    while offset < offsets.log_end_offset {
        let bytes = log
            .read_unsynced(offset, 1 << 20)
            .map_err(|error| format!("reading at {offset}: {error}"))?;
        if bytes.is_empty() {
            return Err(format!("nothing read at {offset}"));
        }
        for (header, batch) in
            split_batches(bytes).map_err(|error| format!("splitting at {offset}: {error}"))?
        {
            offset = header.last_offset() + 1;
            batches.push(batch);
        }
    }
    Ok(batches)
}

/// `(offset, value)` of every record in `batches`.
pub(crate) fn records_of(batches: &[Bytes]) -> Result<Vec<(u64, String)>, String> {
    let mut records = Vec::new();
    for batch in batches {
        for record in decode_records(batch).map_err(|error| format!("decoding: {error}"))? {
            records.push((record.offset, value_text(&record.value)));
        }
    }
    Ok(records)
}

impl Sim {
    /// A deposed leader never acknowledges: if the controller names another
    /// leader now, that leader must hold the write already.
    pub(crate) fn check_successor_holds(&self, ack: &Ack) {
        let Some(leader) = self.leadership().and_then(|leadership| leadership.leader) else {
            return;
        };
        if leader == ack.node {
            return;
        }
        let Some((broker, _)) = self.live_broker(leader) else {
            return;
        };
        let Some(partition) = partition_of(&broker) else {
            return;
        };
        let held = partition
            .log()
            .read_unsynced(ack.base_offset, 1 << 16)
            .ok()
            .and_then(|bytes| split_batches(bytes).ok())
            .and_then(|batches| {
                records_of(&batches.into_iter().map(|(_, b)| b).collect::<Vec<_>>()).ok()
            })
            .unwrap_or_default();
        for (index, value) in ack.values.iter().enumerate() {
            let offset = ack.base_offset + index as u64;
            let found = held.iter().find(|(at, _)| *at == offset).map(|(_, v)| v);
            if found != Some(value) {
                self.violation(format!(
                    "node {} acknowledged {value} at offset {offset} while the controller names node {leader} leader, which holds {found:?} there",
                    ack.node
                ));
            }
        }
    }

    /// Traces each node's partition when its role, epoch or epochs change,
    /// or its log shrinks.
    pub(crate) fn look_at_nodes(&self) {
        for id in NODES {
            let Some((broker, incarnation)) = self.live_broker(id) else {
                continue;
            };
            let Some(partition) = partition_of(&broker) else {
                continue;
            };
            drop(broker);
            let offsets = partition.offsets();
            let epochs = partition
                .log()
                .with_log(|log| log.epochs().entries().to_vec());
            let look = Look {
                incarnation,
                leads: partition.is_leader_here(),
                epoch: partition.leader_epoch(),
                epochs,
                log_end: offsets.log_end_offset,
                high_watermark: offsets.high_watermark,
            };
            let mut history = self.history.lock();
            let changed = history.looks.get(&id).is_none_or(|before| {
                let same_role = (
                    before.incarnation,
                    before.leads,
                    before.epoch,
                    &before.epochs,
                ) == (look.incarnation, look.leads, look.epoch, &look.epochs);
                let shrank =
                    before.incarnation == look.incarnation && look.log_end < before.log_end;
                !same_role || shrank
            });
            if changed {
                let line = format!(
                    "{:>6} ms  node {id}.{}: {} epoch {}, log epochs {:?}, log end {}, high watermark {}",
                    self.now_ms(),
                    look.incarnation,
                    if look.leads { "leads" } else { "follows" },
                    look.epoch,
                    look.epochs,
                    look.log_end,
                    look.high_watermark
                );
                history.trace.push(line);
            }
            history.looks.insert(id, look);
        }
    }

    /// Reads what each leader exposes below its high watermark, as a
    /// consumer would, and checks it against everything read before.
    pub(crate) fn read_leaders(&self) {
        for id in NODES {
            let Some((broker, incarnation)) = self.live_broker(id) else {
                continue;
            };
            let Some(partition) = partition_of(&broker) else {
                continue;
            };
            drop(broker);
            if partition.is_leader_here() {
                self.read_leader(id, incarnation, &partition);
            }
        }
    }

    pub(crate) fn read_leader(&self, id: u64, incarnation: u64, partition: &Partition) {
        let epoch = partition.leader_epoch();
        let offsets = partition.offsets();
        let high_watermark = offsets.high_watermark;
        let (went_back, mut from) = {
            let mut history = self.history.lock();
            let highest = history
                .high_watermarks
                .entry((id, incarnation, epoch))
                .or_insert(high_watermark);
            let went_back = (high_watermark < *highest).then_some(*highest);
            // Reported once per drop: from here on it is measured anew.
            *highest = high_watermark;
            let from = *history.read_from.entry((id, incarnation)).or_insert(0);
            (
                went_back,
                from.min(high_watermark).max(offsets.log_start_offset),
            )
        };
        if let Some(before) = went_back {
            self.violation(format!(
                "node {id}'s high watermark went back from {before} to {high_watermark} in leader epoch {epoch}"
            ));
        }
        while from < high_watermark {
            let records = partition
                .log()
                .read(from, 1 << 20)
                .map_err(|error| error.to_string())
                .and_then(|bytes| split_batches(bytes).map_err(|error| error.to_string()))
                .and_then(|batches| {
                    records_of(
                        &batches
                            .into_iter()
                            .map(|(_, bytes)| bytes)
                            .collect::<Vec<_>>(),
                    )
                });
            let records = match records {
                Ok(records) => records,
                Err(error) => {
                    self.violation(format!("node {id}: reading at {from}: {error}"));
                    break;
                }
            };
            let Some(last) = records.last().map(|(offset, _)| *offset) else {
                break;
            };
            for (offset, value) in records {
                if offset >= high_watermark {
                    self.violation(format!(
                        "node {id} served offset {offset} at or above its high watermark {high_watermark}"
                    ));
                    continue;
                }
                let before = {
                    let mut history = self.history.lock();
                    let seen = history.seen.entry(offset).or_insert_with(|| value.clone());
                    (*seen != value).then(|| seen.clone())
                };
                if let Some(before) = before {
                    self.violation(format!(
                        "offset {offset} was read as {before} and now as {value} from node {id} (epoch {epoch})"
                    ));
                }
            }
            from = last + 1;
        }
        self.history
            .lock()
            .read_from
            .insert((id, incarnation), from);
    }

    /// Whether the healed cluster is in one steady state: every node up,
    /// registered and unfenced, up to date with the controller, all three
    /// in sync with the same log, and the leader's high watermark at its
    /// log end.
    pub(crate) fn converged(&self) -> Result<u64, String> {
        let (leadership, latest, fenced) = {
            let controller = self.controller.lock();
            let leadership = controller
                .state
                .topic(TOPIC)
                .and_then(|image| image.leadership(0));
            let fenced: Vec<u64> = controller
                .state
                .nodes()
                .iter()
                .filter(|(_, node)| node.fenced)
                .map(|(id, _)| *id)
                .collect();
            (leadership, controller.states.len() - 1, fenced)
        };
        let leadership = leadership.ok_or("no leadership")?;
        let leader = leadership.leader.ok_or("no leader")?;
        if !fenced.is_empty() {
            return Err(format!("fenced: {fenced:?}"));
        }
        if leadership.isr.len() != NODES.len() {
            return Err(format!("in-sync set {:?}", leadership.isr));
        }
        let mut ends = BTreeMap::new();
        for id in NODES {
            let nodes = self.nodes.lock();
            let node = &nodes[&id];
            let live = node.live.as_ref().ok_or(format!("node {id} down"))?;
            let registered = self.controller.lock().state.nodes()[&id].incarnation;
            if registered != live.uuid {
                return Err(format!("node {id} not registered"));
            }
            if node.applied != latest {
                return Err(format!("node {id} behind the controller"));
            }
            let partition = partition_of(&live.broker).ok_or("no partition")?;
            let offsets = partition.offsets();
            if id == leader && offsets.high_watermark != offsets.log_end_offset {
                return Err(format!(
                    "leader {id}: high watermark {} below log end {}",
                    offsets.high_watermark, offsets.log_end_offset
                ));
            }
            ends.insert(id, offsets.log_end_offset);
        }
        let leader_end = ends[&leader];
        if ends.values().any(|end| *end != leader_end) {
            return Err(format!("log ends {ends:?}"));
        }
        Ok(leader)
    }
}

/// Checks the final log against every acknowledgement and every read.
pub(crate) fn check_final_log(sim: &Sim, records: &[(u64, String)]) {
    let mut violations = Vec::new();
    let mut at: BTreeMap<u64, &str> = BTreeMap::new();
    let mut where_is: BTreeMap<&str, u64> = BTreeMap::new();
    let mut expected = records.first().map_or(0, |(offset, _)| *offset);
    for (offset, value) in records {
        if *offset != expected {
            violations.push(format!(
                "the final log has offset {offset} where {expected} was next"
            ));
        }
        expected = offset + 1;
        at.insert(*offset, value);
        if parse_value(value).is_none() {
            violations.push(format!(
                "offset {offset} holds {value:?}, which nobody sent"
            ));
        }
        if let Some(first) = where_is.insert(value, *offset) {
            violations.push(format!("{value} is at offsets {first} and {offset}"));
        }
    }
    // Each producer's records in the order it sent them.
    let mut last: BTreeMap<usize, (u64, u64, u64)> = BTreeMap::new();
    for (offset, value) in records {
        let Some((producer, sequence, index)) = parse_value(value) else {
            continue;
        };
        if let Some((before_sequence, before_index, before_offset)) =
            last.insert(producer, (sequence, index, *offset))
        {
            if (sequence, index) <= (before_sequence, before_index) {
                violations.push(format!(
                    "producer {producer}: {value} at offset {offset} after p{producer}.{before_sequence}.{before_index} at {before_offset}"
                ));
            }
        }
    }
    let history = sim.history.lock();
    for ack in &history.acks {
        for (index, value) in ack.values.iter().enumerate() {
            let offset = ack.base_offset + index as u64;
            match at.get(&offset) {
                Some(found) if *found == value => {}
                found => violations.push(format!(
                    "{value}, acknowledged to producer {} by node {} at {} ms with offset {offset}, is lost: the final log holds {found:?} there{}",
                    ack.producer,
                    ack.node,
                    ack.at_ms,
                    where_is
                        .get(value.as_str())
                        .map(|o| format!(" and the value at {o}"))
                        .unwrap_or_default()
                )),
            }
        }
    }
    for (offset, value) in &history.seen {
        match at.get(offset) {
            Some(found) if *found == value => {}
            found => violations.push(format!(
                "{value} was read at offset {offset} below a leader's high watermark, but the final log holds {found:?} there"
            )),
        }
    }
    drop(history);
    for violation in violations {
        sim.violation(violation);
    }
}

/// The seed, schedule, violations and trace of a failed case.
pub(crate) fn report(sim: &Sim) -> String {
    let history = sim.history.lock();
    let mut text = String::new();
    let schedule = &sim.schedule;
    let _ = writeln!(
        text,
        "seed {} (replay: WEIR_SIM_SEED={} cargo test --release -p weir-core --test replication_sim -- --nocapture)",
        schedule.seed, schedule.seed
    );
    let _ = writeln!(text, "schedule: {schedule:#?}");
    let _ = writeln!(text, "violations:");
    for violation in &history.violations {
        let _ = writeln!(text, "  {violation}");
    }
    let _ = writeln!(
        text,
        "{} attempts, {} acknowledged, {} acknowledged by crashed incarnations, failures {:?}",
        history.attempts,
        history.acks.len(),
        history.zombie_acks,
        history.failures
    );
    let _ = writeln!(text, "trace:");
    for line in &history.trace {
        let _ = writeln!(text, "  {line}");
    }
    text
}
