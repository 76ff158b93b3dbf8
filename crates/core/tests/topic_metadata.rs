//! The broker's topics through the metadata log: migration from the
//! `topic.json` files, crash windows between a command and its directory,
//! stray directories, and `weir data check` reading the log.

use std::fs;
use std::path::Path;

use weir_core::data_check::check_data_dir;
use weir_core::{Broker, BrokerConfig, ConfigChange, Principal, Replication, TopicConfig};

fn open(dir: &Path) -> Broker {
    Broker::open(BrokerConfig::new(dir)).expect("open")
}

fn create(broker: &Broker, name: &str, partitions: i32) -> uuid::Uuid {
    broker
        .create_topic(
            name,
            Some(partitions),
            Replication::Default,
            TopicConfig::default(),
            false,
            &Principal::internal(),
        )
        .expect("create")
        .id
}

fn quarantined(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir.join("quarantine/topics")) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn retention_ms(broker: &Broker, topic: &str) -> String {
    broker
        .describe_topic_config(topic, &Principal::internal())
        .expect("describe")
        .into_iter()
        .find(|entry| entry.name == "retention.ms")
        .expect("listed")
        .value
}

#[tokio::test]
async fn a_data_directory_from_before_the_metadata_log_is_migrated() {
    let data = tempfile::tempdir().expect("tempdir");
    let topics = data.path().join("topics");
    let id = uuid::Uuid::new_v4();
    let old = topics.join("old");
    fs::create_dir_all(old.join("0")).expect("mkdir");
    fs::create_dir_all(old.join("1")).expect("mkdir");
    fs::write(
        old.join("topic.json"),
        format!(r#"{{"id": "{id}", "partitions": 2, "config": {{"overrides": {{"retention.ms": "1000"}}}}}}"#),
    )
    .expect("write");
    fs::create_dir_all(topics.join("half").join("0")).expect("mkdir");

    {
        let broker = open(data.path());
        let topic = broker.topic("old").expect("migrated");
        assert_eq!(topic.id(), id);
        assert_eq!(topic.partition_count(), 2);
        assert_eq!(retention_ms(&broker, "old"), "1000");
        assert!(broker.topic("half").is_err());
        broker.shutdown().expect("shutdown");
    }
    assert!(data.path().join("metadata").is_dir());
    assert!(!data.path().join("metadata.new").exists());
    assert!(
        !old.join("topic.json").exists(),
        "the stale copy stays behind"
    );
    let moved = quarantined(data.path());
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(moved[0].starts_with("half."));

    // The next start reads the metadata log, not the (removed) topic.json.
    let broker = open(data.path());
    assert_eq!(broker.topic("old").expect("kept").id(), id);
    assert_eq!(retention_ms(&broker, "old"), "1000");
    assert!(check_data_dir(data.path())
        .expect("check")
        .problems
        .is_empty());
}

#[tokio::test]
async fn topic_changes_survive_a_restart_without_topic_json() {
    let data = tempfile::tempdir().expect("tempdir");
    let id = {
        let broker = open(data.path());
        let id = create(&broker, "t", 1);
        broker
            .create_partitions("t", 3, None, false, &Principal::internal())
            .expect("grow");
        broker
            .alter_topic_config(
                "t",
                &[("retention.ms".into(), ConfigChange::Set("5000".into()))],
                false,
                &Principal::internal(),
            )
            .expect("alter");
        create(&broker, "gone", 2);
        broker
            .delete_topic("gone", &Principal::internal())
            .expect("delete");
        assert!(!data.path().join("topics/gone").exists());
        // Dropped without a shutdown, as after kill -9.
        id
    };
    assert!(!data.path().join("topics/t/topic.json").exists());
    let broker = open(data.path());
    let topic = broker.topic("t").expect("t");
    assert_eq!((topic.id(), topic.partition_count()), (id, 3));
    assert_eq!(retention_ms(&broker, "t"), "5000");
    assert!(broker.topic("gone").is_err());
    assert!(quarantined(data.path()).is_empty());
    broker
        .replace_topic_config("t", &[], false, &Principal::internal())
        .expect("replace");
    drop(broker);
    let broker = open(data.path());
    assert_ne!(retention_ms(&broker, "t"), "5000");
}

#[tokio::test]
async fn a_topic_whose_directory_a_crash_prevented_is_created_on_start() {
    let data = tempfile::tempdir().expect("tempdir");
    let id = {
        let broker = open(data.path());
        let id = create(&broker, "t", 4);
        // A clean stop, so the next open trusts checkpoints: the new
        // directory must open without any.
        broker.shutdown().expect("shutdown");
        id
    };
    // As if the broker died after the command was durable and before the
    // directory was renamed into place.
    fs::remove_dir_all(data.path().join("topics/t")).expect("remove");
    let notes = check_data_dir(data.path()).expect("check").notes;
    assert!(
        notes.iter().any(|note| note.contains("creates it empty")),
        "{notes:?}"
    );
    let broker = open(data.path());
    let topic = broker.topic("t").expect("t");
    assert_eq!((topic.id(), topic.partition_count()), (id, 4));
    for index in 0..4 {
        assert!(data.path().join(format!("topics/t/{index}")).is_dir());
    }
}

#[tokio::test]
async fn a_directory_the_metadata_log_does_not_name_is_quarantined() {
    let data = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(data.path());
        create(&broker, "kept", 1);
    }
    fs::create_dir_all(data.path().join("topics/stray/0")).expect("mkdir");
    let check = check_data_dir(data.path()).expect("check");
    assert!(
        check
            .problems
            .iter()
            .any(|p| p.contains("stray") && p.contains("metadata log")),
        "{:?}",
        check.problems
    );
    let broker = open(data.path());
    assert!(broker.topic("stray").is_err());
    assert!(broker.topic("kept").is_ok());
    assert_eq!(quarantined(data.path()).len(), 1);
    create(&broker, "stray", 2);
}

#[tokio::test]
async fn a_topic_that_cannot_be_opened_leaves_the_metadata_too() {
    let data = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(data.path());
        create(&broker, "bad", 1);
        create(&broker, "good", 1);
    }
    // A file where the partition's directory belongs: its log cannot open.
    fs::remove_dir_all(data.path().join("topics/bad/0")).expect("remove");
    fs::write(data.path().join("topics/bad/0"), b"not a directory").expect("write");
    {
        let broker = open(data.path());
        assert!(broker.topic("bad").is_err());
        assert!(broker.topic("good").is_ok());
    }
    assert_eq!(quarantined(data.path()).len(), 1);
    // The next start does not bring it back empty.
    let broker = open(data.path());
    assert!(broker.topic("bad").is_err());
    assert!(!data.path().join("topics/bad").exists());
}

#[tokio::test]
async fn data_check_reports_a_torn_tail_and_refuses_corruption() {
    let data = tempfile::tempdir().expect("tempdir");
    {
        let broker = open(data.path());
        create(&broker, "a", 1);
        create(&broker, "b", 1);
        broker.shutdown().expect("shutdown");
    }
    let clean = check_data_dir(data.path()).expect("check");
    assert!(clean.is_clean(), "{:?}", clean.problems);
    let log = data
        .path()
        .join("metadata/commands-00000000000000000001.log");
    let whole = fs::read(&log).expect("read");

    // Half of a record header: an append a crash interrupted.
    let mut torn_bytes = whole.clone();
    torn_bytes.extend_from_slice(&[7, 0, 0]);
    fs::write(&log, &torn_bytes).expect("write");
    let torn = check_data_dir(data.path()).expect("check");
    assert!(torn.is_clean(), "{:?}", torn.problems);
    assert!(
        torn.notes.iter().any(|n| n.contains("torn tail")),
        "{:?}",
        torn.notes
    );
    assert_eq!(
        fs::read(&log).expect("read"),
        torn_bytes,
        "the check changed the file"
    );

    let mut damaged = whole.clone();
    damaged[30] ^= 0xff;
    fs::write(&log, &damaged).expect("write");
    let corrupt = check_data_dir(data.path()).expect("check");
    assert!(!corrupt.is_clean());
    assert!(
        corrupt
            .problems
            .iter()
            .any(|p| p.contains("commands-00000000000000000001.log")),
        "{:?}",
        corrupt.problems
    );
    let error = Broker::open(BrokerConfig::new(data.path())).expect_err("refuses to start");
    assert!(
        error
            .to_string()
            .contains("commands-00000000000000000001.log"),
        "{error}"
    );
}
