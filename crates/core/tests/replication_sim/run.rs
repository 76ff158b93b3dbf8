//! One case: the clients, the schedule's faults, healing, and the end.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use weir_core::{Acks, Broker, CoreError, Partition, Principal};
use weir_log::batch::{encode_batch, NewRecord};

use crate::cluster::{
    partition_of, Action, Sim, CONTROLLER_TICK, CONVERGENCE_TIME_MAX, NODES, PROBE, READ_INTERVAL,
    TOPIC,
};
use crate::history::{batches_of, check_final_log, records_of, report, value_of, Ack};
use crate::schedule::{Fault, Rng, Schedule};

/// What one case did, for the summary.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outcome {
    pub(crate) acks: u64,
    pub(crate) attempts: u64,
    pub(crate) crashes: u64,
    pub(crate) virtual_ms: u64,
}

impl Sim {
    /// A node that believes it leads the partition (at random among them).
    pub(crate) fn pick_leader(
        &self,
        rng: &mut Rng,
    ) -> Option<(u64, u64, Arc<Broker>, Arc<Partition>)> {
        let candidates: Vec<(u64, u64, Arc<Broker>, Arc<Partition>)> = NODES
            .iter()
            .filter_map(|id| {
                let (broker, incarnation) = self.live_broker(*id)?;
                let partition = partition_of(&broker)?;
                partition
                    .is_leader_here()
                    .then_some((*id, incarnation, broker, partition))
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let at = rng.range(0, candidates.len() as u64 - 1) as usize;
        candidates.into_iter().nth(at)
    }

    /// Sends one batch with `acks=all` through a node that believes it
    /// leads; records the acknowledgement. Returns whether it was acknowledged.
    pub(crate) async fn produce_once(
        self: &Arc<Self>,
        rng: &mut Rng,
        producer: usize,
        sequence: u64,
    ) -> Option<bool> {
        let (node, incarnation, broker, _) = self.pick_leader(rng)?;
        let count = rng.range(1, 3);
        let values: Vec<String> = (0..count)
            .map(|index| value_of(producer, sequence, index))
            .collect();
        let records: Vec<NewRecord> = values
            .iter()
            .map(|value| NewRecord {
                timestamp: weir_core::now_ms(),
                key: None,
                value: Some(Bytes::from(value.clone())),
                headers: Vec::new(),
            })
            .collect();
        self.history.lock().attempts += 1;
        let pending = broker.append(
            TOPIC,
            0,
            encode_batch(&records),
            Acks::All,
            &Principal::internal(),
        );
        // Only the crashed incarnation's partition may outlive it, never
        // its broker (which holds the data directory's lock).
        drop(broker);
        let outcome = async {
            let appended = pending?.written().await?;
            appended.durable().await?;
            Ok::<u64, CoreError>(appended.base_offset)
        }
        .await;
        match outcome {
            Ok(base_offset) if self.is_alive(node, incarnation) => {
                let ack = Ack {
                    producer,
                    values,
                    base_offset,
                    node,
                    at_ms: self.now_ms(),
                };
                self.check_successor_holds(&ack);
                self.history.lock().acks.push(ack);
                Some(true)
            }
            Ok(_) => {
                self.history.lock().zombie_acks += 1;
                Some(false)
            }
            Err(error) => {
                let kind = format!("{error:?}");
                let kind = kind.split(['(', ' ', '{']).next().unwrap_or("").to_owned();
                *self.history.lock().failures.entry(kind).or_insert(0) += 1;
                Some(false)
            }
        }
    }
}

pub(crate) async fn producer_loop(sim: Arc<Sim>, producer: usize) {
    let mut rng = Rng::new(sim.schedule.seed ^ ((producer as u64 + 1) << 56));
    let mut sequence = 0;
    while !sim.stop_producing.load(Ordering::SeqCst) {
        let think = rng.range(0, sim.schedule.think_ms_max);
        tokio::time::sleep(Duration::from_millis(think.max(1))).await;
        if sim.stop_producing.load(Ordering::SeqCst) {
            break;
        }
        sequence += 1;
        if sim
            .produce_once(&mut rng, producer, sequence)
            .await
            .is_none()
        {
            // Nobody leads: the same sequence number next time.
            sequence -= 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Runs the schedule: faults, then healing, then the final checks.
pub(crate) async fn simulate(sim: &Arc<Sim>) -> Result<Outcome, String> {
    for id in NODES {
        sim.open_node(id);
    }
    let producers: Vec<_> = (0..sim.schedule.producers)
        .map(|producer| tokio::spawn(producer_loop(Arc::clone(sim), producer)))
        .collect();
    let mut faults: VecDeque<(u64, Fault)> = sim.schedule.faults.iter().copied().collect();
    // Ends of faults, by when they happen.
    let mut endings: Vec<(Instant, Action)> = Vec::new();
    let fault_end = sim.start + Duration::from_millis(sim.schedule.fault_ms);
    let mut next_tick = sim.start;
    let mut next_read = sim.start;
    let mut crashes = 0;
    let mut healed_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= next_tick {
            sim.controller_tick();
            next_tick = now + CONTROLLER_TICK;
        }
        if now >= next_read {
            sim.look_at_nodes();
            sim.read_leaders();
            next_read = now + READ_INTERVAL;
        }
        while let Some((at, fault)) = faults.front().copied() {
            if healed_at.is_some() || sim.start + Duration::from_millis(at) > now {
                break;
            }
            faults.pop_front();
            if matches!(fault, Fault::Crash { .. }) {
                crashes += 1;
            }
            for (after, action) in sim.begin(fault) {
                endings.push((now + after.max(Duration::from_millis(1)), action));
            }
        }
        let mut index = 0;
        while index < endings.len() {
            if endings[index].0 <= now {
                let (_, action) = endings.remove(index);
                if let Some(again) = sim.end(action) {
                    endings.push((now + Duration::from_millis(1), again));
                }
            } else {
                index += 1;
            }
        }
        if healed_at.is_none() && now >= fault_end {
            healed_at = Some(now);
            faults.clear();
            sim.stop_producing.store(true, Ordering::SeqCst);
            endings.retain(|(_, action)| matches!(action, Action::Restart(_)));
            // Healing ended every other fault.
            for id in sim.heal_all() {
                if !endings
                    .iter()
                    .any(|(_, action)| matches!(action, Action::Restart(n) if *n == id))
                {
                    endings.push((now + Duration::from_millis(1), Action::Restart(id)));
                }
            }
            for (at, action) in &mut endings {
                if matches!(action, Action::Restart(_)) {
                    *at = now + Duration::from_millis(1);
                }
            }
        }
        if let Some(healed_at) = healed_at {
            let producers_done = producers.iter().all(|task| task.is_finished());
            if producers_done && endings.is_empty() && sim.converged().is_ok() {
                break;
            }
            if now.duration_since(healed_at) > CONVERGENCE_TIME_MAX {
                let why = sim.converged().err().unwrap_or_default();
                let producers_left = producers.iter().filter(|task| !task.is_finished()).count();
                sim.violation(format!(
                    "no steady state {} s after healing: {why}; producers still running: {producers_left}",
                    CONVERGENCE_TIME_MAX.as_secs()
                ));
                return Err(report(sim));
            }
        }
        let mut wake = next_tick.min(next_read);
        if let Some((at, _)) = faults.front() {
            wake = wake.min(sim.start + Duration::from_millis(*at));
        }
        for (at, _) in &endings {
            wake = wake.min(*at);
        }
        if healed_at.is_none() {
            wake = wake.min(fault_end);
        }
        tokio::time::sleep_until(wake.max(now + Duration::from_millis(1))).await;
    }
    probe(sim).await;
    finish(sim, crashes)
}

/// After healing, the cluster acknowledges a new write, and is steady again.
pub(crate) async fn probe(sim: &Arc<Sim>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rng = Rng::new(sim.schedule.seed ^ 0x9B0B);
    let mut sequence = 0;
    loop {
        sequence += 1;
        if sim.produce_once(&mut rng, PROBE, sequence).await == Some(true) {
            break;
        }
        if Instant::now() > deadline {
            sim.violation("the healed cluster acknowledged no write in 20 s");
            return;
        }
        sim.controller_tick();
        tokio::time::sleep(CONTROLLER_TICK).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(why) = sim.converged() {
        if Instant::now() > deadline {
            sim.violation(format!("not steady again after the probe: {why}"));
            return;
        }
        sim.controller_tick();
        sim.read_leaders();
        tokio::time::sleep(CONTROLLER_TICK).await;
    }
    sim.read_leaders();
}

/// The final checks, on the healed cluster's logs.
pub(crate) fn finish(sim: &Arc<Sim>, crashes: u64) -> Result<Outcome, String> {
    let leader = match sim.converged() {
        Ok(leader) => leader,
        Err(why) => {
            sim.violation(format!("not steady at the end: {why}"));
            return Err(report(sim));
        }
    };
    let mut logs = BTreeMap::new();
    for id in NODES {
        let (broker, _) = sim.live_broker(id).expect("every node is up");
        let partition = partition_of(&broker).expect("a partition");
        match batches_of(partition.log()) {
            Ok(batches) => {
                logs.insert(id, batches);
            }
            Err(error) => sim.violation(format!("node {id}: {error}")),
        }
    }
    if logs.len() != NODES.len() {
        return Err(report(sim));
    }
    for id in NODES {
        if logs[&id] != logs[&leader] {
            let first = logs[&id]
                .iter()
                .zip(&logs[&leader])
                .position(|(a, b)| a != b)
                .unwrap_or(logs[&id].len().min(logs[&leader].len()));
            sim.violation(format!(
                "node {id}'s log differs from leader {leader}'s from batch {first} ({} and {} batches)",
                logs[&id].len(),
                logs[&leader].len()
            ));
        }
    }
    let records = match records_of(&logs[&leader]) {
        Ok(records) => records,
        Err(error) => {
            sim.violation(format!("the final log: {error}"));
            return Err(report(sim));
        }
    };
    check_final_log(sim, &records);
    let history = sim.history.lock();
    if history.violations.is_empty() {
        Ok(Outcome {
            acks: history.acks.len() as u64,
            attempts: history.attempts,
            crashes,
            virtual_ms: sim.now_ms(),
        })
    } else {
        drop(history);
        Err(report(sim))
    }
}

pub(crate) fn run_case(schedule: Schedule, root: &Path) -> Result<Outcome, String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("sim-{}-", schedule.seed))
        .tempdir_in(root)
        .expect("a case directory");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let result = runtime.block_on(async {
        let sim = Sim::new(schedule, dir.path());
        let result = simulate(&sim).await;
        if result.is_ok() && std::env::var_os("WEIR_SIM_VERBOSE").is_some() {
            println!("{}", report(&sim));
        }
        (result, sim)
    });
    let (result, sim) = result;
    // Ends every task (crashed incarnations' included) before the brokers go.
    drop(runtime);
    drop(sim);
    result
}

pub(crate) fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

pub(crate) fn data_root() -> PathBuf {
    if let Ok(dir) = std::env::var("WEIR_SIM_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    }
}
