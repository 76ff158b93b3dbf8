//! The metadata state machine and its log: invalid commands change
//! nothing, invariants always hold, replay from any snapshot gives the same
//! state, and a torn tail at any byte recovers the commands before it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use uuid::Uuid;
use weir_core::metadata::{
    ArgumentValue, Arguments, BindingDestination, BindingSpec, ConfigUpdate, ExchangeType,
    MetadataCommand, MetadataError, MetadataOptions, MetadataState, MetadataStore,
};

// ---- strategies: small pools, so names and ids collide often ----

/// Mostly one of `valid`, sometimes one of `invalid`.
fn pick(valid: &[&'static str], invalid: &[&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        8 => prop::sample::select(valid.to_vec()).prop_map(String::from),
        1 => prop::sample::select(invalid.to_vec()).prop_map(String::from),
    ]
    .boxed()
}

fn topic_name() -> impl Strategy<Value = String> {
    prop_oneof![
        12 => pick(&["a", "b", "c.d", "e_f-1"], &["", ".", "bad name", "ü"]),
        1 => Just("x".repeat(250)),
    ]
}

fn id() -> impl Strategy<Value = Uuid> {
    prop_oneof![
        12 => (1u128..8).prop_map(Uuid::from_u128),
        1 => Just(Uuid::nil()),
    ]
}

fn configs() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop_oneof![
        6 => prop::collection::btree_map(
            pick(&["retention.ms", "retention.bytes", "flush.ms"], &["no.such"]),
            pick(&["2048", " 4096 ", "-1", "0"], &["soon", "-2"]),
            0..3,
        ),
        1 => Just([("cleanup.policy".to_owned(), "compact".to_owned())].into_iter().collect()),
    ]
}

fn config_updates() -> impl Strategy<Value = Vec<ConfigUpdate>> {
    prop::collection::vec(
        (
            pick(&["retention.ms", "segment.bytes", "flush.ms"], &["nope"]),
            prop::option::of(pick(&["5000", "4096", "0"], &["x", "10"])),
        )
            .prop_map(|(name, value)| ConfigUpdate { name, value }),
        0..3,
    )
}

fn vhost() -> impl Strategy<Value = String> {
    pick(&["/", "v"], &["", "missing"])
}

fn exchange_name() -> impl Strategy<Value = String> {
    pick(
        &["e1", "e2", "e3", "amq.direct", "amq.topic"],
        &["", "amq.custom"],
    )
}

fn queue_name() -> impl Strategy<Value = String> {
    pick(&["q1", "q2", "q3", "amq.gen-x"], &["amq.q", ""])
}

fn argument_value() -> impl Strategy<Value = ArgumentValue> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(ArgumentValue::Bool),
        any::<i32>().prop_map(ArgumentValue::I32),
        any::<i64>().prop_map(ArgumentValue::I64),
        any::<u64>().prop_map(ArgumentValue::F64Bits),
        any::<u8>().prop_map(|scale| ArgumentValue::Decimal { scale, value: 7 }),
        "[a-z]{0,4}".prop_map(ArgumentValue::Text),
        prop::collection::vec(any::<u8>(), 0..3).prop_map(ArgumentValue::Bytes),
        Just(ArgumentValue::Void),
    ];
    leaf.prop_recursive(3, 8, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(ArgumentValue::List),
            prop::collection::btree_map("[a-c]", inner, 0..3).prop_map(ArgumentValue::Table),
        ]
    })
}

fn arguments() -> impl Strategy<Value = Arguments> {
    prop_oneof![
        3 => Just(Arguments::new()),
        1 => prop::collection::btree_map(
            prop::sample::select(vec!["x-max-length", "x-queue-type"]).prop_map(String::from),
            argument_value(),
            1..2,
        ),
    ]
}

fn exchange_type() -> impl Strategy<Value = ExchangeType> {
    prop::sample::select(vec![
        ExchangeType::Direct,
        ExchangeType::Fanout,
        ExchangeType::Topic,
        ExchangeType::Headers,
    ])
}

fn binding() -> impl Strategy<Value = BindingSpec> {
    (
        exchange_name(),
        prop_oneof![
            queue_name().prop_map(BindingDestination::Queue),
            exchange_name().prop_map(BindingDestination::Exchange),
        ],
        prop_oneof![
            8 => prop::sample::select(vec!["", "k", "a.*"]).prop_map(String::from),
            1 => Just("k".repeat(256)),
        ],
        arguments(),
    )
        .prop_map(
            |(source, destination, routing_key, arguments)| BindingSpec {
                source,
                destination,
                routing_key,
                arguments,
            },
        )
}

/// A binding from a small pool, so that unbinds find what binds made.
fn common_binding() -> impl Strategy<Value = BindingSpec> {
    (
        prop::sample::select(vec!["e1", "amq.direct"]),
        prop::sample::select(vec![
            BindingDestination::Queue("q1".into()),
            BindingDestination::Exchange("e2".into()),
        ]),
    )
        .prop_map(|(source, destination)| BindingSpec {
            source: source.into(),
            destination,
            routing_key: "k".into(),
            arguments: Arguments::new(),
        })
}

fn command() -> impl Strategy<Value = MetadataCommand> {
    prop_oneof![
        4 => (topic_name(), id(), 0u32..5, configs()).prop_map(|(name, id, partitions, configs)| {
            MetadataCommand::CreateTopic { name, id, partitions, configs, replicas: Vec::new() }
        }),
        2 => (topic_name(), id()).prop_map(|(name, id)| MetadataCommand::DeleteTopic { name, id }),
        3 => (topic_name(), 0u32..8)
            .prop_map(|(name, total)| MetadataCommand::CreatePartitions { name, total, replicas: Vec::new() }),
        2 => (topic_name(), config_updates())
            .prop_map(|(name, changes)| MetadataCommand::AlterTopicConfig { name, changes }),
        1 => (topic_name(), configs())
            .prop_map(|(name, configs)| MetadataCommand::ReplaceTopicConfig { name, configs }),
        1 => vhost().prop_map(|name| MetadataCommand::CreateVhost { name }),
        1 => (vhost(), 0..4).prop_map(|(name, rare)| if rare == 0 {
            MetadataCommand::DeleteVhost { name }
        } else {
            MetadataCommand::CreateVhost { name }
        }),
        3 => (vhost(), exchange_name(), exchange_type(), any::<bool>(), any::<bool>(), arguments())
            .prop_map(|(vhost, name, kind, auto_delete, internal, arguments)| {
                MetadataCommand::DeclareExchange { vhost, name, kind, auto_delete, internal, arguments }
            }),
        1 => (vhost(), exchange_name())
            .prop_map(|(vhost, name)| MetadataCommand::DeleteExchange { vhost, name }),
        3 => (vhost(), queue_name(), id(), any::<bool>(), arguments())
            .prop_map(|(vhost, name, id, auto_delete, arguments)| {
                MetadataCommand::DeclareQueue { vhost, name, id, auto_delete, arguments }
            }),
        1 => (vhost(), queue_name())
            .prop_map(|(vhost, name)| MetadataCommand::DeleteQueue { vhost, name }),
        3 => (vhost(), binding()).prop_map(|(vhost, binding)| MetadataCommand::Bind { vhost, binding }),
        3 => (vhost(), common_binding())
            .prop_map(|(vhost, binding)| MetadataCommand::Bind { vhost, binding }),
        1 => (vhost(), binding()).prop_map(|(vhost, binding)| MetadataCommand::Unbind { vhost, binding }),
        3 => (vhost(), common_binding())
            .prop_map(|(vhost, binding)| MetadataCommand::Unbind { vhost, binding }),
    ]
}

/// Random commands after the two vhosts are created, so that most of them
/// have something to act on.
fn commands(max: usize) -> impl Strategy<Value = Vec<MetadataCommand>> {
    prop::collection::vec(command(), 0..max).prop_map(|random| {
        let mut commands = vec![
            MetadataCommand::CreateVhost { name: "/".into() },
            MetadataCommand::CreateVhost { name: "v".into() },
        ];
        commands.extend(random);
        commands
    })
}

/// The commands of `commands` the state machine accepts, in order, with
/// the state after each.
fn accepted(commands: &[MetadataCommand]) -> (Vec<MetadataCommand>, Vec<MetadataState>) {
    let mut state = MetadataState::new();
    let mut kept = Vec::new();
    let mut states = vec![state.clone()];
    for command in commands {
        if state.apply(command).is_ok() {
            kept.push(command.clone());
            states.push(state.clone());
        }
    }
    (kept, states)
}

/// Partition counts of each topic id never shrink; a topic id, once gone,
/// never comes back with fewer partitions than it had.
fn check_growth(before: &MetadataState, after: &MetadataState) -> Result<(), String> {
    for (name, old) in before.topics() {
        if let Some(new) = after.topic(name) {
            if new.id == old.id && new.partitions < old.partitions {
                return Err(format!(
                    "{name} shrank from {} to {}",
                    old.partitions, new.partitions
                ));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invalid_commands_change_nothing_and_invariants_always_hold(
        commands in commands(80)
    ) {
        let mut state = MetadataState::new();
        for command in &commands {
            let before = state.clone();
            let verdict = state.validate(command);
            let applied = state.apply(command);
            prop_assert_eq!(verdict.is_ok(), applied.is_ok(), "validate and apply disagree on {:?}", command);
            match applied {
                Err(error) => {
                    prop_assert!(error.is_refusal(), "{error}");
                    prop_assert_eq!(&state, &before, "a refused {:?} changed the state", command);
                }
                Ok(()) => {
                    prop_assert_eq!(state.check_invariants(), Ok(()), "after {:?}", command);
                    prop_assert_eq!(check_growth(&before, &state), Ok(()));
                }
            }
        }
    }

    #[test]
    fn replay_from_any_snapshot_equals_full_replay(
        commands in commands(80)
    ) {
        let (log, states) = accepted(&commands);
        let full = states.last().expect("the empty state").clone();
        let full_bytes = serde_json::to_vec(&full).expect("serializes");
        for point in 0..=log.len() {
            // A snapshot is the state serialized and read back.
            let snapshot = serde_json::to_vec(&states[point]).expect("serializes");
            let mut state: MetadataState = serde_json::from_slice(&snapshot).expect("deserializes");
            for command in &log[point..] {
                prop_assert!(state.apply(command).is_ok(), "{:?} no longer applies", command);
            }
            prop_assert_eq!(&state, &full);
            prop_assert_eq!(serde_json::to_vec(&state).expect("serializes"), full_bytes.clone());
        }
    }

    #[test]
    fn commands_survive_their_serialized_form(command in command()) {
        let json = serde_json::to_vec(&command).expect("serializes");
        let back: MetadataCommand = serde_json::from_slice(&json).expect("deserializes");
        prop_assert_eq!(back, command);
    }
}

// ---- the log on disk ----

fn options(snapshot_interval_commands: u64) -> MetadataOptions {
    MetadataOptions {
        snapshot_interval_commands,
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn commands_file(dir: &Path) -> PathBuf {
    let name = files(dir)
        .into_iter()
        .find(|name| name.starts_with("commands-"))
        .expect("a commands file");
    dir.join(name)
}

fn create_topic(name: &str, n: u128) -> MetadataCommand {
    MetadataCommand::CreateTopic {
        name: name.to_owned(),
        id: Uuid::from_u128(n),
        partitions: 1,
        configs: BTreeMap::new(),
        replicas: Vec::new(),
    }
}

/// Commits every command the state machine accepts; returns the states
/// after each and the commands file's length after each.
fn commit_all(store: &mut MetadataStore, commands: &[MetadataCommand]) -> Vec<MetadataState> {
    let mut states = vec![store.state().clone()];
    for command in commands {
        if store.commit(command.clone()).is_ok() {
            states.push(store.state().clone());
        }
    }
    states
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn reopening_after_any_snapshot_interval_gives_the_same_state(
        commands in commands(40),
        interval in 1u64..6,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata");
        let mut store = MetadataStore::create(&path, MetadataState::new(), options(interval)).expect("create");
        let states = commit_all(&mut store, &commands);
        let last_index = store.last_index();
        drop(store);
        let (reopened, recovery) = MetadataStore::open(&path, options(interval)).expect("open");
        prop_assert_eq!(reopened.state(), states.last().expect("a state"));
        prop_assert_eq!(reopened.last_index(), last_index);
        prop_assert_eq!(recovery.cut, None);
        // Truncation: one snapshot and one commands file, the commands
        // after the snapshot fewer than the interval.
        let names = files(&path);
        prop_assert_eq!(names.len(), 2, "{:?}", names);
        prop_assert!(reopened.last_index() - reopened.snapshot_index() < interval);
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_tail(
        garbage in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("metadata");
        let mut store = MetadataStore::create(&path, MetadataState::new(), options(1000)).expect("create");
        let commands = [create_topic("a", 1), create_topic("b", 2)];
        let states = commit_all(&mut store, &commands);
        drop(store);
        let file = commands_file(&path);
        let length = fs::metadata(&file).expect("stat").len();
        let mut bytes = fs::read(&file).expect("read");
        bytes.extend_from_slice(&garbage);
        fs::write(&file, &bytes).expect("write");
        let (mut store, recovery) = MetadataStore::open(&path, options(1000)).expect("open");
        prop_assert_eq!(store.state(), &states[2]);
        prop_assert_eq!(recovery.cut, Some((file.clone(), length, garbage.len() as u64)));
        prop_assert_eq!(fs::metadata(&file).expect("stat").len(), length);
        prop_assert_eq!(store.commit(create_topic("c", 3)).expect("commit"), 3);
    }
}

#[test]
fn a_torn_tail_at_every_byte_recovers_the_commands_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let mut store =
        MetadataStore::create(&path, MetadataState::new(), options(1000)).expect("create");
    let file = commands_file(&path);
    let mut ends = vec![fs::metadata(&file).expect("stat").len()];
    let commands = vec![
        create_topic("a", 1),
        MetadataCommand::CreatePartitions {
            name: "a".into(),
            total: 3,
            replicas: Vec::new(),
        },
        MetadataCommand::CreateVhost { name: "/".into() },
        MetadataCommand::DeclareQueue {
            vhost: "/".into(),
            name: "q".into(),
            id: Uuid::from_u128(9),
            auto_delete: false,
            arguments: [(
                "x-queue-type".to_owned(),
                ArgumentValue::Text("quorum".into()),
            )]
            .into_iter()
            .collect(),
        },
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: BindingSpec {
                source: "amq.direct".into(),
                destination: BindingDestination::Queue("q".into()),
                routing_key: "k".into(),
                arguments: Arguments::new(),
            },
        },
        MetadataCommand::AlterTopicConfig {
            name: "a".into(),
            changes: vec![ConfigUpdate {
                name: "retention.ms".into(),
                value: Some("1000".into()),
            }],
        },
        MetadataCommand::DeleteTopic {
            name: "a".into(),
            id: Uuid::from_u128(1),
        },
    ];
    let mut states = vec![store.state().clone()];
    for command in commands {
        store.commit(command).expect("commit");
        states.push(store.state().clone());
        ends.push(fs::metadata(&file).expect("stat").len());
    }
    drop(store);
    let whole = fs::read(&file).expect("read");
    let header = ends[0] as usize;
    for cut in header..=whole.len() {
        let copy = tempfile::tempdir().expect("tempdir");
        let copy_path = copy.path().join("metadata");
        fs::create_dir(&copy_path).expect("mkdir");
        for name in files(&path) {
            fs::copy(path.join(&name), copy_path.join(&name)).expect("copy");
        }
        let copy_file = copy_path.join(file.file_name().expect("name"));
        fs::write(&copy_file, &whole[..cut]).expect("write");
        let (store, recovery) = MetadataStore::open(&copy_path, options(1000))
            .unwrap_or_else(|error| panic!("cut at {cut}: {error}"));
        let kept = ends
            .iter()
            .rposition(|&end| end as usize <= cut)
            .expect("the header");
        assert_eq!(store.state(), &states[kept], "cut at {cut}");
        assert_eq!(store.last_index(), kept as u64, "cut at {cut}");
        assert_eq!(
            recovery.cut.is_some(),
            cut as u64 != ends[kept],
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(&copy_file).expect("stat").len(),
            ends[kept],
            "cut at {cut}"
        );
    }
}

#[test]
fn damage_followed_by_a_valid_record_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let mut store =
        MetadataStore::create(&path, MetadataState::new(), options(1000)).expect("create");
    store.commit(create_topic("a", 1)).expect("commit");
    store.commit(create_topic("b", 2)).expect("commit");
    drop(store);
    let file = commands_file(&path);
    let mut bytes = fs::read(&file).expect("read");
    // A byte inside the first record's payload.
    bytes[24 + 8 + 5] ^= 0x40;
    fs::write(&file, &bytes).expect("write");
    let error = MetadataStore::open(&path, options(1000)).expect_err("corrupt");
    match &error {
        MetadataError::Corrupt { path, position, .. } => {
            assert_eq!(path, &file);
            assert_eq!(*position, 24);
        }
        other => panic!("{other}"),
    }
    assert!(error.to_string().contains("commands-"), "{error}");
    // Nothing was cut: the damage is for an operator to look at.
    assert_eq!(fs::read(&file).expect("read"), bytes);
}

#[test]
fn a_damaged_snapshot_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let mut store = MetadataStore::create(&path, MetadataState::new(), options(2)).expect("create");
    store.commit(create_topic("a", 1)).expect("commit");
    store.commit(create_topic("b", 2)).expect("commit");
    drop(store);
    let snapshot = path.join(
        files(&path)
            .into_iter()
            .find(|name| name.starts_with("snapshot-"))
            .expect("a snapshot"),
    );
    assert!(snapshot.ends_with("snapshot-00000000000000000002.snap"));
    let mut bytes = fs::read(&snapshot).expect("read");
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    fs::write(&snapshot, &bytes).expect("write");
    match MetadataStore::open(&path, options(2)).expect_err("corrupt") {
        MetadataError::Corrupt { path, .. } => assert_eq!(path, snapshot),
        other => panic!("{other}"),
    }
}

#[test]
fn snapshots_truncate_the_log_and_leftovers_are_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let mut store = MetadataStore::create(&path, MetadataState::new(), options(3)).expect("create");
    for n in 1..=7 {
        store
            .commit(create_topic(&format!("t{n}"), n))
            .expect("commit");
    }
    assert_eq!(store.snapshot_index(), 6);
    assert_eq!(
        files(&path),
        [
            "commands-00000000000000000007.log",
            "snapshot-00000000000000000006.snap"
        ]
    );
    let state = store.state().clone();
    drop(store);
    // A crash between writing a snapshot and removing what it supersedes,
    // and a snapshot write interrupted before its rename.
    fs::write(path.join("snapshot-00000000000000000003.snap"), b"old").expect("write");
    fs::write(path.join("commands-00000000000000000004.log"), b"old").expect("write");
    fs::write(path.join("snapshot-00000000000000000009.tmp"), b"half").expect("write");
    let inspection = weir_core::metadata::inspect(&path).expect("inspect");
    assert_eq!(inspection.stale.len(), 3);
    let (store, _) = MetadataStore::open(&path, options(3)).expect("open");
    assert_eq!(store.state(), &state);
    assert_eq!(files(&path).len(), 2);
}

#[test]
fn a_snapshot_without_the_commands_file_after_it_continues_the_old_one() {
    // A crash after a snapshot is durable but before the next commands
    // file exists: the old file ends at the snapshot and is continued.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let mut store =
        MetadataStore::create(&path, MetadataState::new(), options(1000)).expect("create");
    store.commit(create_topic("a", 1)).expect("commit");
    store.commit(create_topic("b", 2)).expect("commit");
    store.snapshot();
    let state = store.state().clone();
    drop(store);
    fs::remove_file(path.join("commands-00000000000000000003.log")).expect("remove");
    let old = fs::read(
        dir.path()
            .join("metadata/snapshot-00000000000000000002.snap"),
    );
    assert!(old.is_ok());
    let (mut store, _) = MetadataStore::open(&path, options(1000)).expect("open");
    assert_eq!(store.state(), &state);
    assert_eq!(store.commit(create_topic("c", 3)).expect("commit"), 3);
    drop(store);
    let (store, _) = MetadataStore::open(&path, options(1000)).expect("open");
    assert!(store.state().topic("c").is_some());
}

#[test]
fn a_gap_between_snapshot_and_commands_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let store = MetadataStore::create(&path, MetadataState::new(), options(1000)).expect("create");
    drop(store);
    fs::rename(
        path.join("commands-00000000000000000001.log"),
        path.join("commands-00000000000000000005.log"),
    )
    .expect("rename");
    assert!(matches!(
        MetadataStore::open(&path, options(1000)),
        Err(MetadataError::Corrupt { .. })
    ));
}

#[test]
fn refused_commands_write_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("metadata");
    let mut store =
        MetadataStore::create(&path, MetadataState::new(), options(1000)).expect("create");
    store.commit(create_topic("a", 1)).expect("commit");
    let file = commands_file(&path);
    let length = fs::metadata(&file).expect("stat").len();
    assert!(matches!(
        store.commit(create_topic("a", 2)),
        Err(MetadataError::TopicAlreadyExists(_))
    ));
    assert!(matches!(
        store.commit(create_topic("b", 1)),
        Err(MetadataError::DuplicateId(_))
    ));
    assert!(matches!(
        store.commit(MetadataCommand::CreatePartitions {
            name: "a".into(),
            total: 1,
            replicas: Vec::new(),
        }),
        Err(MetadataError::InvalidPartitions(_))
    ));
    assert_eq!(fs::metadata(&file).expect("stat").len(), length);
    assert_eq!(store.last_index(), 1);
}

// ---- the vhost rules, one by one ----

fn vhost_with(commands: &[MetadataCommand]) -> MetadataState {
    let mut state = MetadataState::new();
    state
        .apply(&MetadataCommand::CreateVhost { name: "/".into() })
        .expect("vhost");
    for command in commands {
        state
            .apply(command)
            .unwrap_or_else(|error| panic!("{command:?}: {error}"));
    }
    state
}

fn exchange(name: &str, auto_delete: bool) -> MetadataCommand {
    MetadataCommand::DeclareExchange {
        vhost: "/".into(),
        name: name.into(),
        kind: ExchangeType::Fanout,
        auto_delete,
        internal: false,
        arguments: Arguments::new(),
    }
}

fn queue(name: &str, id: u128) -> MetadataCommand {
    MetadataCommand::DeclareQueue {
        vhost: "/".into(),
        name: name.into(),
        id: Uuid::from_u128(id),
        auto_delete: false,
        arguments: Arguments::new(),
    }
}

fn bind(source: &str, destination: BindingDestination) -> BindingSpec {
    BindingSpec {
        source: source.into(),
        destination,
        routing_key: String::new(),
        arguments: Arguments::new(),
    }
}

#[test]
fn deleting_a_queue_removes_its_bindings_and_empties_auto_delete_exchanges_in_turn() {
    // q <- a (auto-delete) <- b (auto-delete) <- c
    let mut state = vhost_with(&[
        queue("q", 1),
        exchange("a", true),
        exchange("b", true),
        exchange("c", false),
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: bind("a", BindingDestination::Queue("q".into())),
        },
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: bind("b", BindingDestination::Exchange("a".into())),
        },
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: bind("c", BindingDestination::Exchange("b".into())),
        },
    ]);
    state
        .apply(&MetadataCommand::DeleteQueue {
            vhost: "/".into(),
            name: "q".into(),
        })
        .expect("delete");
    let host = &state.vhosts()["/"];
    assert!(!host.exchanges.contains_key("a"));
    assert!(!host.exchanges.contains_key("b"));
    assert!(host.exchanges["c"].bindings.is_empty());
    assert_eq!(state.check_invariants(), Ok(()));
}

#[test]
fn the_last_unbind_deletes_an_auto_delete_exchange() {
    let binding = bind("a", BindingDestination::Queue("q".into()));
    let mut state = vhost_with(&[
        queue("q", 1),
        exchange("a", true),
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: binding.clone(),
        },
    ]);
    state
        .apply(&MetadataCommand::Unbind {
            vhost: "/".into(),
            binding: binding.clone(),
        })
        .expect("unbind");
    assert!(!state.vhosts()["/"].exchanges.contains_key("a"));
    assert!(matches!(
        state.apply(&MetadataCommand::Unbind {
            vhost: "/".into(),
            binding
        }),
        Err(MetadataError::NotFound(_))
    ));
}

#[test]
fn standard_and_default_exchanges_are_protected() {
    let mut state = vhost_with(&[queue("q", 1)]);
    for refused in [
        exchange("amq.direct", false),
        exchange("amq.mine", false),
        exchange("", false),
        MetadataCommand::DeleteExchange {
            vhost: "/".into(),
            name: "amq.fanout".into(),
        },
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: bind("", BindingDestination::Queue("q".into())),
        },
        MetadataCommand::Bind {
            vhost: "/".into(),
            binding: bind("amq.direct", BindingDestination::Queue("missing".into())),
        },
        queue("other", 1),
    ] {
        let before = state.clone();
        assert!(state.apply(&refused).is_err(), "{refused:?} was accepted");
        assert_eq!(state, before);
    }
    // Identical redeclarations are accepted and change nothing.
    let before = state.clone();
    state.apply(&queue("q", 1)).expect("redeclare");
    assert_eq!(state, before);
    assert!(matches!(
        state.apply(&queue("q", 2)),
        Err(MetadataError::AlreadyExists(_))
    ));
}

#[test]
fn topic_configs_are_stored_normalized_and_validated() {
    let mut state = MetadataState::new();
    state
        .apply(&MetadataCommand::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(1),
            partitions: 2,
            configs: [("retention.ms".to_owned(), " 1000 ".to_owned())]
                .into_iter()
                .collect(),
            replicas: Vec::new(),
        })
        .expect("create");
    assert_eq!(state.topic("t").expect("t").configs["retention.ms"], "1000");
    assert!(matches!(
        state.apply(&MetadataCommand::AlterTopicConfig {
            name: "t".into(),
            changes: vec![
                ConfigUpdate {
                    name: "retention.ms".into(),
                    value: None
                },
                ConfigUpdate {
                    name: "segment.bytes".into(),
                    value: Some("1".into())
                },
            ],
        }),
        Err(MetadataError::InvalidConfig(_))
    ));
    assert_eq!(state.topic("t").expect("t").configs["retention.ms"], "1000");
}
