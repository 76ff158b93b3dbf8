//! `weir data check`: verifies a stopped data directory offline, changing
//! nothing — every log's batches, CRCs, offsets and indexes
//! ([`weir_log::verify`]) and the metadata that names them (the metadata
//! log — snapshot, commands, torn tail — and the topics and partitions it
//! names, the committed-offsets log, AMQP definitions and queue logs), as
//! Kafka's `kafka-dump-log --deep-iteration` does for one file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use weir_log::verify::{verify_log_dir, VerifyReport};

use crate::metadata::MetadataState;
use crate::quarantine::QUARANTINE_DIR;

/// What [`check_data_dir`] found.
#[derive(Debug, Default)]
pub struct DataCheck {
    /// One report per log directory checked.
    pub logs: Vec<VerifyReport>,
    /// Metadata problems: what the broker would quarantine or could not
    /// serve, each naming its path.
    pub problems: Vec<String>,
    /// Facts worth knowing that are not damage (an unclean stop, leftovers
    /// the next start removes, quarantined entries).
    pub notes: Vec<String>,
}

impl DataCheck {
    /// Whether neither a log nor the metadata has a problem.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty() && self.logs.iter().all(VerifyReport::is_clean)
    }
}

/// Checks the data directory `data_dir` of a stopped broker.
///
/// # Errors
///
/// When `data_dir` itself cannot be read; damage inside it is reported in
/// the result instead.
pub fn check_data_dir(data_dir: &Path) -> io::Result<DataCheck> {
    if !data_dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a directory", data_dir.display()),
        ));
    }
    let mut check = DataCheck::default();
    check_meta(data_dir, &mut check);
    let topics = check_metadata_log(data_dir, &mut check);
    check_topics(&data_dir.join("topics"), &topics, &mut check);
    check_log(&data_dir.join("__consumer_offsets"), &mut check);
    let vhosts = data_dir.join("amqp").join("vhosts");
    for vhost in sorted_entries(&vhosts, &mut check) {
        check_vhost(&vhost, &mut check);
    }
    note_leftovers(
        &data_dir.join("staging"),
        "interrupted topic creations or deletions (removed on the next start)",
        &mut check,
    );
    note_leftovers(
        &data_dir.join(QUARANTINE_DIR).join("topics"),
        "quarantined topics",
        &mut check,
    );
    Ok(check)
}

fn check_meta(data_dir: &Path, check: &mut DataCheck) {
    let meta = data_dir.join("meta.json");
    match fs::read(&meta).map(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes)) {
        Ok(Ok(value)) if value.get("cluster_id").is_some() => {}
        Ok(_) => check.problems.push(format!(
            "{}: not the broker's metadata (no cluster_id)",
            meta.display()
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            check.notes.push(format!(
                "{}: missing (a new data directory?)",
                meta.display()
            ));
        }
        Err(error) => check.problems.push(format!("{}: {error}", meta.display())),
    }
    if !data_dir.join(".clean-shutdown").exists() {
        check.notes.push(
            "the broker did not stop cleanly (or is running): the next start recovers each active segment"
                .to_owned(),
        );
    }
}

/// Where the topics' descriptions come from.
enum TopicSource {
    /// The metadata log, read as the next start would.
    MetadataLog(MetadataState),
    /// No metadata log yet: each topic's `topic.json`, which the next start
    /// migrates into one.
    Legacy,
    /// The metadata log is unreadable: partition directories are checked
    /// as found.
    Unknown,
}

/// Reads the metadata log as a start-up would, without cutting or
/// removing anything, and reports what the start would do.
fn check_metadata_log(data_dir: &Path, check: &mut DataCheck) -> TopicSource {
    let dir = data_dir.join(crate::broker::METADATA_DIR);
    let staged = dir.with_extension("new");
    if staged.exists() {
        check.notes.push(format!(
            "{}: an interrupted creation of the metadata log (redone on the next start)",
            staged.display()
        ));
    }
    if !dir.exists() {
        check.notes.push(format!(
            "{}: missing; the next start builds the metadata log from each topic's topic.json",
            dir.display()
        ));
        return TopicSource::Legacy;
    }
    match crate::metadata::inspect(&dir) {
        Ok(inspection) => {
            if let Some(torn) = &inspection.torn_tail {
                check.notes.push(format!(
                    "{}: torn tail of {} bytes at byte {} ({}): a command a crash interrupted, never acknowledged; the next start cuts it",
                    torn.path.display(),
                    torn.bytes,
                    torn.position,
                    torn.reason
                ));
            }
            for stale in &inspection.stale {
                check.notes.push(format!(
                    "{}: superseded by a newer snapshot (removed on the next start)",
                    stale.display()
                ));
            }
            if let Err(why) = inspection.state.check_invariants() {
                check.problems.push(format!(
                    "{}: the metadata breaks an invariant: {why}",
                    dir.display()
                ));
            }
            TopicSource::MetadataLog(inspection.state)
        }
        Err(error) => {
            check.problems.push(format!(
                "{error} (the broker does not start on a metadata log it cannot read)"
            ));
            TopicSource::Unknown
        }
    }
}

/// The partition count of the topic at `topic` by `source`; `None` (with
/// a problem recorded) when the start would quarantine it.
fn described_partitions(
    topic: &Path,
    name: &str,
    source: &TopicSource,
    check: &mut DataCheck,
) -> Option<u32> {
    match source {
        TopicSource::MetadataLog(state) => match state.topic(name) {
            Some(image) => Some(image.partitions),
            None => {
                check.problems.push(format!(
                    "{}: no topic of this name in the metadata log (the broker quarantines it on start)",
                    topic.display()
                ));
                None
            }
        },
        TopicSource::Legacy => match crate::topic::read_legacy_record(topic) {
            Ok(image) => Some(image.partitions),
            Err(error) => {
                check.problems.push(format!(
                    "{error} (the broker quarantines the topic on start)"
                ));
                None
            }
        },
        TopicSource::Unknown => {
            let found = sorted_entries(topic, check)
                .iter()
                .filter_map(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
                .map(|index| index + 1)
                .max();
            Some(found.unwrap_or(0))
        }
    }
}

fn check_topics(topics: &Path, source: &TopicSource, check: &mut DataCheck) {
    if let TopicSource::MetadataLog(state) = source {
        for name in state.topics().keys() {
            if !topics.join(name).is_dir() {
                check.notes.push(format!(
                    "{}: named by the metadata log but missing (a creation interrupted by a crash); the next start creates it empty",
                    topics.join(name).display()
                ));
            }
        }
    }
    for topic in sorted_entries(topics, check) {
        let name = topic
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if crate::validate_topic_name(&name).is_err() || !topic.is_dir() {
            check.problems.push(format!(
                "{}: not a topic directory (the broker quarantines it on start)",
                topic.display()
            ));
            continue;
        }
        let Some(partitions) = described_partitions(&topic, &name, source, check) else {
            continue;
        };
        for index in 0..partitions {
            let partition = topic.join(index.to_string());
            if partition.is_dir() {
                check_log(&partition, check);
            } else {
                check.problems.push(format!(
                    "{}: partition directory missing",
                    partition.display()
                ));
            }
        }
        for extra in sorted_entries(&topic, check) {
            let is_partition = extra
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|index| index >= partitions);
            if is_partition {
                check.notes.push(format!(
                    "{}: beyond the topic's partition count (an interrupted CreatePartitions; replaced by the next one)",
                    extra.display()
                ));
            }
        }
    }
}

fn check_vhost(vhost: &Path, check: &mut DataCheck) {
    let definitions = vhost.join("definitions.json");
    let ids: Vec<String> = match fs::read(&definitions) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => {
            check
                .problems
                .push(format!("{}: {error}", definitions.display()));
            return;
        }
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(value) => value["queues"]
                .as_array()
                .map(|queues| {
                    queues
                        .iter()
                        .filter_map(|q| q["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            Err(error) => {
                check
                    .problems
                    .push(format!("{}: {error}", definitions.display()));
                return;
            }
        },
    };
    let queues = vhost.join("queues");
    for id in &ids {
        let queue = queues.join(id);
        if !queue.is_dir() {
            check.problems.push(format!(
                "{}: the directory of a durable queue is missing",
                queue.display()
            ));
            continue;
        }
        for lane in sorted_entries(&queue, check)
            .into_iter()
            .filter(|p| p.is_dir())
        {
            check_log(&lane, check);
        }
    }
    for stray in sorted_entries(&queues, check) {
        let known = stray
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| ids.iter().any(|id| id == n));
        if !known {
            check.notes.push(format!(
                "{}: not a queue in definitions.json",
                stray.display()
            ));
        }
    }
    note_leftovers(
        &vhost.join(QUARANTINE_DIR).join("queues"),
        "quarantined queues",
        check,
    );
}

fn check_log(dir: &Path, check: &mut DataCheck) {
    if !dir.is_dir() {
        return;
    }
    match verify_log_dir(dir) {
        Ok(report) => check.logs.push(report),
        Err(error) => check
            .problems
            .push(format!("{}: cannot be read: {error}", dir.display())),
    }
}

fn note_leftovers(dir: &Path, what: &str, check: &mut DataCheck) {
    let entries = sorted_entries(dir, check);
    if !entries.is_empty() {
        let names: Vec<String> = entries.iter().map(|p| p.display().to_string()).collect();
        check
            .notes
            .push(format!("{} {what}: {}", entries.len(), names.join(", ")));
    }
}

/// Entries of `dir` by name; none when it does not exist.
fn sorted_entries(dir: &Path, check: &mut DataCheck) -> Vec<PathBuf> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            check.problems.push(format!("{}: {error}", dir.display()));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    paths
}
