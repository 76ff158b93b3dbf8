//! A deterministic simulation of replicated partitions, in the manner of
//! FoundationDB's simulator and TigerBeetle's VOPR: three real brokers in
//! one process, on real files, with a simulated network, controller and
//! clock, run through thousands of seeded random schedules of crashes,
//! network partitions, lost and delayed messages — and the same invariants
//! checked after every one.
//!
//! # What is simulated
//!
//! * **Clock**: a paused tokio runtime (one thread per case). Virtual time
//!   only moves when every task waits on a timer and no blocking job (a
//!   write, an fsync) is running, so a case covers seconds of cluster life
//!   in milliseconds. Replication reads the same clock (fetch waits,
//!   `replica.lag.time.max.ms`, `acks=all` timeouts).
//! * **Network**: a [`ReplicaTransport`] that hands each request to the
//!   target node's [`Broker::serve_replica`] after a random delay, and the
//!   reply back after another; a message can be lost (the call fails after
//!   a while), every message or one link's can be slowed, and links
//!   between nodes, or between a node and the controller, can be cut and
//!   healed. Clients reach every live node.
//! * **Controller**: the openraft quorum abstracted to one always-available
//!   state machine applying [`MetadataCommand`]s in one order: nodes
//!   register (a restart is a new incarnation), are fenced when not heard
//!   for the session timeout and unfenced when heard again, elections come
//!   from [`MetadataState::elections`], and in-sync set changes are the ones
//!   the leaders propose ([`Broker::wanted_isr_changes`], what
//!   `maintain_isr` commits). Each node applies the controller's states in
//!   order but only while it reaches the controller, and possibly late (or
//!   not at all for a while: a node whose metadata log lags) — so a
//!   cut-off leader keeps its old view, as a real one does.
//! * **Crashes**: a node's broker is dropped without shutdown, its tasks
//!   are cut off from the network, and it is opened again later from its
//!   data directory, with the metadata state it had applied last. Three
//!   kinds: *kill* (what was written survives, as after `kill -9`), *power
//!   loss* (the partition log also loses a random part of what it had not
//!   synced at the crash), *clean* (a [`Broker::shutdown`] first).
//! * **Clients**: a few producers, each sending batches one at a time with
//!   `acks=all` to a node that believes it leads the partition (a deposed
//!   leader that has not heard of its successor included); a reader that
//!   reads every leader's log below its high watermark, as consumers would.
//!
//! # Invariants
//!
//! * No acknowledged write is lost, changed, duplicated or reordered: after
//!   the cluster heals, every acknowledged record is in the final log at
//!   the offset it was acknowledged with; no record appears twice; each
//!   producer's records are in the order it sent them.
//! * Offsets never go back: a leader's high watermark never moves back in
//!   one leader epoch, and a record a reader saw below a leader's high
//!   watermark stays at its offset forever (in the final log).
//! * Every replica's committed prefix is identical: once healed, the three
//!   logs are byte for byte the same.
//! * Liveness: once every fault ends, the cluster reaches a steady state
//!   (every node back, in sync, on the same log) within a minute of
//!   simulated time and acknowledges a new write.
//! * A deposed leader never acknowledges: when a write is acknowledged by a
//!   node the controller no longer names leader, the node it does name
//!   already holds the write.
//!
//! # What is not simulated
//!
//! The controller quorum's own faults (it is always available and never
//! loses a command); torn or failed writes and fsyncs (`weir-log`'s own
//! simulated disk tests those); retention; idempotent and transactional
//! producers; several partitions; the TCP transport's framing; a paused
//! process (a crash, a cut or a slow link stand in for it). The thread
//! pool that runs writes and fsyncs is real, and tokio's `select!` picks
//! among ready branches at random, so a seed fixes the schedule (faults,
//! delays, lost messages, client timing) exactly, but two runs of one seed
//! can still interleave differently within one virtual instant: a failing
//! seed replays its schedule, and in practice its failure (most seeds run
//! identically every time).
//!
//! The hand-written schedules after the random ones are the bugs this
//! simulation found, each cut down to the faults that cause it; their
//! docs say what went wrong and where it is fixed.
//!
//! # Running
//!
//! `cargo test --release -p weir-core --test replication_sim` runs
//! `WEIR_SIM_CASES` cases (default below) from seed `WEIR_SIM_SEED_BASE`
//! (default 0) on `WEIR_SIM_THREADS` threads (default: the cores), and
//! fails with the first failing seed's schedule, violations and trace;
//! `WEIR_SIM_KEEP_GOING=1` runs every case and lists every failing seed.
//! `WEIR_SIM_SEED=n` replays one seed (`WEIR_SIM_VERBOSE=1` prints the
//! trace of a passing case too). Data lives under `WEIR_SIM_DIR` (default
//! `/dev/shm` when present: fsyncs cost nothing there).

#[path = "replication_sim/cluster.rs"]
mod cluster;
#[path = "replication_sim/history.rs"]
mod history;
#[path = "replication_sim/run.rs"]
mod run;
#[path = "replication_sim/schedule.rs"]
mod schedule;

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::run::{data_root, env_u64, run_case, Outcome};
use crate::schedule::{CrashKind, Fault, Peer, Schedule, Target};

/// Cases run by default on a RAM disk (`/dev/shm`), about 30 s on two
/// cores; a tenth elsewhere, where every fsync reaches a disk. Raise with
/// `WEIR_SIM_CASES`.
const CASES_DEFAULT: u64 = 4000;

/// Thousands of random schedules (see the module docs).
#[test]
fn random_schedules_keep_every_acknowledged_write() {
    let root = data_root();
    if let Some(seed) = env_u64("WEIR_SIM_SEED") {
        let schedule = Schedule::generate(seed);
        match run_case(schedule, &root) {
            Ok(outcome) => println!("seed {seed}: {outcome:?}"),
            Err(report) => panic!("{report}"),
        }
        return;
    }
    let on_ram_disk = root.starts_with("/dev/shm");
    let cases = env_u64("WEIR_SIM_CASES").unwrap_or(if on_ram_disk {
        CASES_DEFAULT
    } else {
        CASES_DEFAULT / 10
    });
    let base = env_u64("WEIR_SIM_SEED_BASE").unwrap_or(0);
    let threads = env_u64("WEIR_SIM_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u64));
    // Runs every case even after a failure, listing each failing seed.
    let keep_going = std::env::var_os("WEIR_SIM_KEEP_GOING").is_some();
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let totals = Mutex::new(Outcome::default());
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let case = next.fetch_add(1, Ordering::SeqCst);
                if case >= cases || (!keep_going && !failures.lock().is_empty()) {
                    return;
                }
                let seed = base + case;
                match run_case(Schedule::generate(seed), &root) {
                    Ok(outcome) => {
                        let mut totals = totals.lock();
                        totals.acks += outcome.acks;
                        totals.attempts += outcome.attempts;
                        totals.crashes += outcome.crashes;
                        totals.virtual_ms += outcome.virtual_ms;
                    }
                    Err(report) => failures.lock().push((seed, report)),
                }
            });
        }
    });
    let totals = totals.into_inner();
    println!(
        "{} cases in {:.1} s: {} simulated seconds, {} crashes, {} of {} writes acknowledged",
        next.load(Ordering::SeqCst).min(cases),
        started.elapsed().as_secs_f64(),
        totals.virtual_ms / 1000,
        totals.crashes,
        totals.acks,
        totals.attempts
    );
    let mut failures = failures.into_inner();
    failures.sort_by_key(|(seed, _)| *seed);
    for (seed, report) in &failures {
        let first = report
            .lines()
            .skip_while(|line| *line != "violations:")
            .nth(1)
            .unwrap_or("");
        println!("seed {seed} fails:{first}");
    }
    if let Some((_, report)) = failures.first() {
        panic!("{report}");
    }
}

/// A schedule without faults, for the hand-written cases below.
fn calm(seed: u64, replicas: [u64; 3]) -> Schedule {
    Schedule {
        seed,
        replicas: replicas.to_vec(),
        segment_bytes: 1 << 20,
        delay_ms_max: 0,
        loss_chance: 0.0,
        metadata_lag_chance: 0.0,
        producers: 2,
        think_ms_max: 10,
        fault_ms: 4_000,
        faults: Vec::new(),
    }
}

/// Runs a hand-written schedule a few times (the blocking pool's timing
/// varies the interleaving).
fn assert_holds(schedule: Schedule) {
    let root = data_root();
    for _ in 0..5 {
        if let Err(report) = run_case(schedule.clone(), &root) {
            panic!("{report}");
        }
    }
}

/// Found by the random schedules: the leader (3) proposed the
/// preferred replica (2) back into the in-sync set once it had caught up;
/// the controller committed that and at once made 2 leader, while 3 (and
/// 1, its follower) had not applied either change yet. 3 went on
/// acknowledging writes that only 1 had copied — its high watermark
/// counted the in-sync set it knew, [3, 1] — and 2 lacked them: when 3
/// followed 2 it truncated them. Fixed in `ReplicaState` (replica.rs): the
/// replicas a pending proposal adds hold the high watermark until its
/// outcome is applied (Kafka's "maximal ISR").
#[test]
fn a_leader_deposed_while_proposing_a_replica_back_loses_no_acknowledged_write() {
    let mut schedule = calm(37_001, [2, 3, 1]);
    schedule.faults = vec![
        (
            300,
            Fault::Cut {
                node: Target::Node(2),
                peer: Peer::Controller,
                ms: 800,
            },
        ),
        (
            1_000,
            Fault::Stale {
                node: Target::Node(3),
                ms: 1_500,
            },
        ),
        (
            1_000,
            Fault::Stale {
                node: Target::Node(1),
                ms: 1_500,
            },
        ),
    ];
    assert_holds(schedule);
}

/// Found by the random schedules: a leader killed with a tail
/// its followers had not copied restarted, registered, led again (a new
/// epoch) — and its high watermark was its log end, as for any log opened
/// after a crash, so readers saw the tail. Cut off, it was fenced, 2 led,
/// and other writes took those offsets. Fixed in
/// `Partition::apply_leadership` (topic.rs): a replicated log's high
/// watermark starts again from its log start when it opens, and
/// replication raises it (`SharedLog::lower_high_watermark`).
#[test]
fn a_restarted_leader_exposes_only_what_replication_commits() {
    let mut schedule = calm(59_001, [1, 2, 3]);
    schedule.faults = vec![
        (
            500,
            Fault::Cut {
                node: Target::Node(1),
                peer: Peer::Node(2),
                ms: 3_000,
            },
        ),
        (
            500,
            Fault::Cut {
                node: Target::Node(1),
                peer: Peer::Node(3),
                ms: 3_000,
            },
        ),
        (
            700,
            Fault::Crash {
                node: Target::Node(1),
                kind: CrashKind::Kill,
                down_ms: 50,
            },
        ),
        (
            800,
            Fault::Cut {
                node: Target::Node(1),
                peer: Peer::Controller,
                ms: 2_500,
            },
        ),
    ];
    assert_holds(schedule);
}

/// The same with a node that restarts cut off from everything: it starts
/// from the metadata it applied last, which names it leader of its old
/// epoch, and it must not expose its uncommitted tail either.
#[test]
fn a_restarted_node_with_old_metadata_exposes_only_what_replication_commits() {
    let mut schedule = calm(59_002, [1, 2, 3]);
    schedule.faults = vec![
        (
            500,
            Fault::Isolate {
                node: Target::Node(1),
                ms: 3_000,
            },
        ),
        (
            700,
            Fault::Crash {
                node: Target::Node(1),
                kind: CrashKind::Kill,
                down_ms: 50,
            },
        ),
    ];
    assert_holds(schedule);
}

/// Found by the random schedules: node 3 led epoch 2 with an
/// empty log (it had copied nothing of node 1's), wrote there and
/// crashed; node 2, holding node 1's epochs 0 and 1, led epoch 3. Node 3
/// came back as its follower and asked where its epoch 2 ends: node 2
/// answered "epoch 1 ends at my log end", and since node 3 had no epoch
/// 1 it took that end for its own and cut nothing — keeping its epoch-2
/// records at offsets node 2 holds others at, and copying the rest after
/// them. Fixed in `Fetcher::truncate` (replication.rs): a follower that
/// lacks the epoch the leader answers with cuts everything from its next
/// epoch on and asks again (KIP-279).
#[test]
fn a_follower_lacking_the_leaders_epoch_cuts_what_the_leader_never_had() {
    let mut schedule = calm(1_418_001, [1, 3, 2]);
    schedule.faults = vec![
        (
            0,
            Fault::Cut {
                node: Target::Node(3),
                peer: Peer::Node(1),
                ms: 5_000,
            },
        ),
        (
            0,
            Fault::Cut {
                node: Target::Node(3),
                peer: Peer::Node(2),
                ms: 5_000,
            },
        ),
        (
            500,
            Fault::Crash {
                node: Target::Node(1),
                kind: CrashKind::Kill,
                down_ms: 4_000,
            },
        ),
        (
            1_400,
            Fault::Crash {
                node: Target::Node(3),
                kind: CrashKind::Kill,
                down_ms: 1_000,
            },
        ),
    ];
    assert_holds(schedule);
}

/// Found by the random schedules: node 2, leading epoch 3,
/// held a fetch of node 3's at its log end; meanwhile it learnt that node
/// 1 led epoch 4, truncated its own tail and copied node 1's records to
/// those offsets — and the held fetch, woken by the longer log, sent them
/// to node 3, which still followed epoch 3 and appended them after the
/// tail node 2 had just cut. Fixed in `Broker::serve_fetch`
/// (replication.rs): the leader epoch is checked again after the read.
#[test]
fn a_held_fetch_answers_nothing_after_its_leader_was_deposed() {
    let mut schedule = calm(449_001, [1, 3, 2]);
    schedule.faults = vec![
        (
            500,
            Fault::Cut {
                node: Target::Node(1),
                peer: Peer::Controller,
                ms: 650,
            },
        ),
        (
            800,
            Fault::Stale {
                node: Target::Node(2),
                ms: 2_000,
            },
        ),
        (
            900,
            Fault::Cut {
                node: Target::Node(1),
                peer: Peer::Node(3),
                ms: 300,
            },
        ),
    ];
    assert_holds(schedule);
}

/// Found by the random schedules: node 1 came back from a
/// crash following node 3 in epoch 1, as its metadata said, and asked
/// node 3 where its epoch ends; the question and the answer were slow.
/// Meanwhile node 1 was made leader, wrote, and acknowledged writes that
/// node 2 had copied. Then the answer came — and node 1, a leader by now,
/// cut its log to it, acknowledged writes included. Fixed in
/// `Partition::truncate_to` (topic.rs) and `SharedLog::truncate_to_if`:
/// a follower's truncation happens only if the node still follows that
/// epoch once the log is locked.
#[test]
fn a_late_answer_to_a_follower_cuts_nothing_once_it_leads() {
    let mut schedule = calm(5_068_001, [3, 1, 2]);
    schedule.producers = 3;
    schedule.fault_ms = 6_000;
    schedule.faults = vec![
        (
            300,
            Fault::Cut {
                node: Target::Node(3),
                peer: Peer::Controller,
                ms: 5_500,
            },
        ),
        (
            350,
            Fault::Crash {
                node: Target::Node(1),
                kind: CrashKind::Kill,
                down_ms: 100,
            },
        ),
        (
            400,
            Fault::Delay {
                node: Target::Node(1),
                peer: Peer::Node(3),
                ms: 5_000,
                delay_ms: 2_000,
            },
        ),
    ];
    assert_holds(schedule);
}

/// Found by the random schedules: node 2 led epoch 3 after
/// a restart, its high watermark not yet raised again by its follower,
/// whose fetches were slow. Node 1 came back with an almost empty log
/// and fetched: it held everything below the high watermark, so node 2
/// proposed it into the in-sync set, and the controller, node 1 being the
/// preferred replica, made it leader — without the writes node 2 and 3
/// had acknowledged. Any new leader's high watermark can lag what its
/// predecessor committed. Fixed in `ReplicaState::wanted_isr`
/// (replica.rs): a replica joins only once it also holds everything below
/// where the leader's epoch began (Kafka's `leaderEpochStartOffset`).
#[test]
fn a_replica_joins_the_in_sync_set_only_with_what_its_leader_holds() {
    let mut schedule = calm(105_892_001, [1, 2, 3]);
    schedule.faults = vec![
        (
            5,
            Fault::Crash {
                node: Target::Node(1),
                kind: CrashKind::Kill,
                down_ms: 1_500,
            },
        ),
        (
            900,
            Fault::Delay {
                node: Target::Node(2),
                peer: Peer::Node(3),
                ms: 2_000,
                delay_ms: 1_000,
            },
        ),
        (
            1_000,
            Fault::Crash {
                node: Target::Node(2),
                kind: CrashKind::Kill,
                down_ms: 200,
            },
        ),
        (
            1_400,
            Fault::Delay {
                node: Target::Node(1),
                peer: Peer::Node(2),
                ms: 1_000,
                delay_ms: 300,
            },
        ),
    ];
    assert_holds(schedule);
}
