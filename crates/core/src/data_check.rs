//! `weir data check`: verifies a stopped data directory offline, changing
//! nothing — every log's batches, CRCs, offsets and indexes
//! ([`weir_log::verify`]) and the metadata that names them (topics and
//! their partitions, the committed-offsets log, AMQP definitions and queue
//! logs), as Kafka's `kafka-dump-log --deep-iteration` does for one file.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use weir_log::verify::{verify_log_dir, VerifyReport};

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
    check_topics(&data_dir.join("topics"), &mut check);
    check_log(&data_dir.join("__consumer_offsets"), &mut check);
    let vhosts = data_dir.join("amqp").join("vhosts");
    for vhost in sorted_entries(&vhosts, &mut check) {
        check_vhost(&vhost, &mut check);
    }
    note_leftovers(
        &data_dir.join("staging"),
        "interrupted topic creations (removed on the next start)",
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

fn check_topics(topics: &Path, check: &mut DataCheck) {
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
        let partitions = match crate::topic::read_partition_count(&topic) {
            Ok(partitions) => partitions,
            Err(error) => {
                check.problems.push(format!(
                    "{error} (the broker quarantines the topic on start)"
                ));
                continue;
            }
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
                    "{}: not in topic.json (an interrupted CreatePartitions; replaced by the next one)",
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
