//! Seeded randomness and the schedules of faults a case runs.

use crate::cluster::NODES;

/// SplitMix64: small, fast, and the same sequence on every platform.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5EED_CAFE_F00D_D00D)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    pub(crate) fn chance(&mut self, probability: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < probability
    }

    pub(crate) fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() % items.len() as u64) as usize]
    }

    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Which node a fault hits, decided when it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The node the controller names leader.
    Leader,
    /// Any other replica.
    Follower,
    Node(u64),
}

/// The other end of a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Controller,
    /// Another node, chosen when the cut happens.
    AnotherNode,
    Node(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CrashKind {
    /// The process dies; what it wrote survives (`kill -9`).
    Kill,
    /// The machine loses power: the partition log keeps what it had synced
    /// at the crash and a random part of the rest.
    PowerLoss,
    /// A clean shutdown (`Broker::shutdown`), then a restart.
    Clean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The node goes down for `down_ms`.
    Crash {
        node: Target,
        kind: CrashKind,
        down_ms: u64,
    },
    /// The link between the node and `peer` is cut both ways for `ms`.
    Cut { node: Target, peer: Peer, ms: u64 },
    /// Every link of the node (its peers and the controller) is cut for
    /// `ms`; its clients still reach it.
    Isolate { node: Target, ms: u64 },
    /// For `ms`, every message may take up to `delay_ms` more.
    Slow { ms: u64, delay_ms: u64 },
    /// For `ms`, every message between the node and `peer` takes exactly
    /// `delay_ms`, both ways.
    Delay {
        node: Target,
        peer: Peer,
        ms: u64,
        delay_ms: u64,
    },
    /// For `ms`, the node applies no metadata (its proposals still reach
    /// the controller): a node whose copy of the metadata log lags.
    Stale { node: Target, ms: u64 },
}

/// Everything a case does that is decided before it runs.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    pub(crate) seed: u64,
    /// The partition's replicas, the preferred leader first.
    pub(crate) replicas: Vec<u64>,
    pub(crate) segment_bytes: u32,
    /// Most time one message takes, one way.
    pub(crate) delay_ms_max: u64,
    /// Chance that a message is lost.
    pub(crate) loss_chance: f64,
    /// Chance that a controller tick does not bring a node up to date.
    pub(crate) metadata_lag_chance: f64,
    pub(crate) producers: usize,
    /// Most time a producer waits between two writes.
    pub(crate) think_ms_max: u64,
    /// How long faults happen; the cluster heals afterwards.
    pub(crate) fault_ms: u64,
    /// Faults, by the time they begin (ms).
    pub(crate) faults: Vec<(u64, Fault)>,
}

impl Schedule {
    pub(crate) fn generate(seed: u64) -> Schedule {
        let mut rng = Rng::new(seed);
        let mut replicas = NODES.to_vec();
        rng.shuffle(&mut replicas);
        let fault_ms = rng.range(1_000, 5_000);
        let count = rng.range(0, 8);
        let mut faults: Vec<(u64, Fault)> = (0..count)
            .map(|_| (rng.range(0, fault_ms), Schedule::random_fault(&mut rng)))
            .collect();
        faults.sort_by_key(|(at, _)| *at);
        Schedule {
            seed,
            replicas,
            segment_bytes: rng.pick(&[1024, 4096, 1 << 20]),
            delay_ms_max: rng.pick(&[0, 1, 5, 30, 150]),
            loss_chance: rng.pick(&[0.0, 0.0, 0.01, 0.05, 0.2]),
            metadata_lag_chance: rng.pick(&[0.0, 0.5, 0.9]),
            producers: rng.range(1, 3) as usize,
            think_ms_max: rng.pick(&[10, 40, 100]),
            fault_ms,
            faults,
        }
    }

    pub(crate) fn random_fault(rng: &mut Rng) -> Fault {
        let node = match rng.range(0, 9) {
            0..=4 => Target::Leader,
            5..=6 => Target::Follower,
            _ => Target::Node(rng.pick(&NODES)),
        };
        match rng.range(0, 9) {
            0..=3 => Fault::Crash {
                node,
                kind: rng.pick(&[
                    CrashKind::Kill,
                    CrashKind::Kill,
                    CrashKind::PowerLoss,
                    CrashKind::PowerLoss,
                    CrashKind::Clean,
                ]),
                down_ms: rng.range(1, 2_500),
            },
            4..=5 => Fault::Isolate {
                node,
                ms: rng.range(50, 3_000),
            },
            6 => Fault::Cut {
                node,
                peer: Peer::Controller,
                ms: rng.range(50, 3_000),
            },
            7 => Fault::Cut {
                node,
                peer: Peer::AnotherNode,
                ms: rng.range(50, 3_000),
            },
            8 => Fault::Stale {
                node,
                ms: rng.range(50, 2_000),
            },
            9 if rng.chance(0.5) => Fault::Delay {
                node,
                peer: Peer::AnotherNode,
                ms: rng.range(100, 3_000),
                delay_ms: rng.range(100, 1_500),
            },
            _ => Fault::Slow {
                ms: rng.range(100, 2_000),
                delay_ms: rng.range(100, 1_500),
            },
        }
    }
}
