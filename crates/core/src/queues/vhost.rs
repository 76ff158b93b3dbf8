//! A virtual host: its exchanges, queues and bindings, the operations AMQP
//! clients (and later the HTTP API) call on them, and their persistence.
//!
//! Definitions of durable exchanges, queues and bindings are kept in
//! `definitions.json`, rewritten atomically on every change. Durable
//! queues' logs live under `queues/<id>/`, transient ones under
//! `transient/<id>/`, which is emptied on every start. A durable queue that
//! cannot be opened at start-up is moved to `quarantine/queues/` beside them
//! (crate::quarantine) and dropped from the definitions; the rest is served.
//!
//! In the default virtual host a stream queue *is* the broker's topic of
//! the same name: declaring one creates the topic (one partition), every
//! topic can be used as a stream queue, and deleting the queue deletes the
//! topic. Its definition (stored with an empty id) only keeps the declared
//! arguments. A queue over a topic (`x-source-topic`) keeps its settlement
//! state under `queues/<id>/<partition>/`; the topic cannot be deleted
//! while the queue reads it. Stream queues written by releases before
//! topics backed them (their log in `queues/<id>/0/`) become topics on the
//! first start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use amq_protocol::types::FieldTable;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_log::checkpoint::write_atomically;
use weir_log::{LogConfig, SharedLog, Written};

use crate::broker::{Broker, Replication};
use crate::config::TopicConfig;
use crate::error::CoreError;
use crate::logging::Escaped;
use crate::principal::Principal;
use crate::quarantine::quarantine;
use crate::queues::args::{check_equivalent, QueueArguments, QueueType};
use crate::queues::dead_letter::DeadLetter;
use crate::queues::error::QueueError;
use crate::queues::exchange::ExchangeKind;
use crate::queues::message::Message;
use crate::queues::queue::{Queue, QueueSpec};

const DEFINITIONS_FILE: &str = "definitions.json";
/// Longest exchange or queue name (AMQP short string).
pub const NAME_BYTES_MAX: usize = 255;

/// Where a binding sends what matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// An exchange, by name (exchange-to-exchange binding).
    Exchange(String),
}

/// A binding of a source exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    /// Where matching messages go.
    pub destination: Destination,
    /// Binding key (a pattern for topic exchanges).
    pub routing_key: String,
    /// Binding arguments (headers exchanges match on them).
    pub arguments: FieldTable,
}

/// An exchange and its bindings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Exchange {
    /// Name ("" is the default exchange).
    pub name: String,
    /// Routing rule.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding goes.
    pub auto_delete: bool,
    /// Takes messages only from other exchanges.
    pub internal: bool,
    /// Arguments as declared.
    pub arguments: FieldTable,
    /// Its bindings.
    pub bindings: Vec<Binding>,
}

/// What `queue.declare` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredQueue {
    /// The name (server-generated when asked with "").
    pub name: String,
    /// Ready messages.
    pub message_count: u64,
    /// Consumers.
    pub consumer_count: u32,
}

/// What a publish did to one message.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    /// Reached at least one queue.
    pub routed: bool,
    /// Some queue refused it (`x-overflow` reject-publish): a confirm nack.
    pub rejected: bool,
}

/// What storing a batch of messages did.
#[derive(Debug, Default)]
pub struct Stored {
    /// Per message, in the order given.
    pub published: Vec<Published>,
    /// Logs that must be durable up to an offset before the batch's
    /// persistent messages are confirmed (one entry per log written).
    pub syncs: Vec<(Arc<SharedLog>, Written)>,
}

/// The stored form of a durable queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredQueue {
    name: String,
    id: String,
    auto_delete: bool,
    arguments: FieldTable,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredDefinitions {
    exchanges: Vec<Exchange>,
    queues: Vec<StoredQueue>,
}

#[derive(Debug, Default)]
struct Definitions {
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, (Arc<Queue>, String)>,
}

/// A virtual host.
#[derive(Debug)]
pub struct VirtualHost {
    name: String,
    dir: PathBuf,
    log_config: LogConfig,
    /// Where stream queues and the topics queues read live.
    broker: Arc<Broker>,
    definitions: RwLock<Definitions>,
    dead_letters: mpsc::UnboundedSender<DeadLetter>,
}

/// The exchanges every virtual host has.
const STANDARD_EXCHANGES: &[(&str, ExchangeKind)] = &[
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

impl VirtualHost {
    /// Opens the virtual host stored in `dir`; starts its dead-letter router.
    ///
    /// # Errors
    ///
    /// Storage errors, or unreadable definitions.
    pub fn open(
        name: &str,
        dir: &Path,
        log_config: LogConfig,
        broker: Arc<Broker>,
    ) -> Result<Arc<VirtualHost>, QueueError> {
        std::fs::create_dir_all(dir.join("queues"))?;
        let transient = dir.join("transient");
        if transient.exists() {
            std::fs::remove_dir_all(&transient)?;
        }
        let stored: StoredDefinitions = match std::fs::read(dir.join(DEFINITIONS_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                QueueError::Internal(format!("{}: {e}", dir.join(DEFINITIONS_FILE).display()))
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                StoredDefinitions::default()
            }
            Err(error) => return Err(error.into()),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let vhost = Arc::new(VirtualHost {
            name: name.to_owned(),
            dir: dir.to_owned(),
            log_config,
            broker,
            definitions: RwLock::new(Definitions::default()),
            dead_letters: sender,
        });
        {
            let mut definitions = vhost.definitions.write();
            for &(exchange, kind) in STANDARD_EXCHANGES {
                definitions
                    .exchanges
                    .insert(exchange.to_owned(), standard_exchange(exchange, kind));
            }
            for exchange in stored.exchanges {
                definitions
                    .exchanges
                    .insert(exchange.name.clone(), exchange);
            }
            let mut quarantined = Vec::new();
            let mut changed = false;
            for mut stored_queue in stored.queues {
                let (queue_name, id) = (stored_queue.name.clone(), stored_queue.id.clone());
                let opened = vhost
                    .migrate_stream_queue(&mut stored_queue)
                    .and_then(|migrated| {
                        changed |= migrated;
                        let id = stored_queue.id.clone();
                        vhost
                            .open_stored_queue(stored_queue)
                            .map(|queue| (queue, id))
                    });
                match opened {
                    Ok((queue, id)) => {
                        definitions.queues.insert(queue_name, (queue, id));
                    }
                    Err(error) => {
                        let queue_dir = dir.join("queues").join(&id);
                        if !id.is_empty() && queue_dir.exists() {
                            quarantine(dir, "queues", &queue_dir, &error)?;
                        } else {
                            tracing::error!(queue = ?queue_name, error = %Escaped(&error), "cannot open a durable queue; it is dropped");
                        }
                        quarantined.push(queue_name);
                    }
                }
            }
            for exchange in definitions.exchanges.values_mut() {
                exchange.bindings.retain(|binding| {
                    !matches!(&binding.destination, Destination::Queue(q) if quarantined.contains(q))
                });
            }
            if changed || !quarantined.is_empty() {
                // Without this the next start would recreate the queues empty.
                vhost.persist(&definitions)?;
            }
        }
        tokio::spawn(route_dead_letters(Arc::downgrade(&vhost), receiver));
        Ok(vhost)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn open_stored_queue(&self, stored: StoredQueue) -> Result<Arc<Queue>, QueueError> {
        let spec = self.queue_spec(
            stored.name,
            true,
            None,
            stored.auto_delete,
            stored.arguments,
        )?;
        self.open_queue(spec, &stored.id)
    }

    /// A stream queue stored by an older release, with its own log in
    /// `queues/<id>/0/`, becomes the topic of its name (see the module
    /// note); true when the definition changed.
    fn migrate_stream_queue(&self, stored: &mut StoredQueue) -> Result<bool, QueueError> {
        let parsed = QueueArguments::parse(&stored.arguments, &stored.name, &self.name)?;
        if parsed.queue_type != QueueType::Stream || stored.id.is_empty() {
            return Ok(false);
        }
        let queue_dir = self.dir.join("queues").join(&stored.id);
        let lane_dir = queue_dir.join("0");
        if lane_dir.exists() {
            // Only the log moves: a stream's settlement state means nothing.
            for entry in std::fs::read_dir(&lane_dir)? {
                let path = entry?.path();
                if path.file_name().is_some_and(|n| n == "settled.state") {
                    std::fs::remove_file(&path)?;
                }
            }
            let topic = self
                .broker
                .adopt_topic(&stored.name, &queue_dir, stream_topic_config(&parsed)?)
                .map_err(|error| core_error(error, &stored.name))?;
            tracing::info!(queue = %Escaped(&stored.name), topic = topic.name(), "stream queue now stored as a topic");
        }
        // Renamed already (a crash came before the definitions were
        // rewritten), or moved just now.
        stored.id = String::new();
        Ok(true)
    }

    /// Opens a queue: a stream queue over its topic, a queue over a topic
    /// holding that topic, any other over its own logs under `id`.
    fn open_queue(&self, spec: QueueSpec, id: &str) -> Result<Arc<Queue>, QueueError> {
        let mut config = self.log_config.clone();
        let mut dir = self
            .dir
            .join(if spec.durable { "queues" } else { "transient" })
            .join(id);
        let mut held = None;
        let topic = if spec.parsed.queue_type == QueueType::Stream {
            if self.broker.is_internal_topic(&spec.name) {
                return Err(QueueError::AccessRefused(format!(
                    "'{}' is an internal topic of the broker",
                    spec.name
                )));
            }
            let topic = self.broker.topic(&spec.name).map_err(|_| {
                QueueError::NotFound(format!(
                    "stream queue '{}' in vhost '{}': its topic was deleted",
                    spec.name, self.name
                ))
            })?;
            dir = topic.dir().to_owned();
            Some(topic)
        } else if let Some(source) = spec.parsed.source_topic.clone() {
            let reader = self.reader_name(&spec.name);
            let topic = self.broker.hold_topic(&source, &reader).map_err(|_| {
                QueueError::NotFound(format!(
                    "no topic '{source}' for queue '{}' in vhost '{}'",
                    spec.name, self.name
                ))
            })?;
            held = Some((source, reader));
            Some(topic)
        } else {
            if !spec.durable {
                // Transient queues never sync: nothing of them survives a restart.
                config.flush_interval = Some(std::time::Duration::from_secs(365 * 86_400));
            }
            config.retention_ms = None;
            config.retention_bytes = None;
            None
        };
        Queue::open(
            spec,
            dir,
            config,
            topic,
            self.dead_letters.clone(),
            Arc::clone(self.broker.metrics()),
        )
        .inspect_err(|_| {
            if let Some((source, reader)) = &held {
                self.broker.release_topic(source, reader);
            }
        })
    }

    /// How a queue over a topic is named to the topic's deleters.
    fn reader_name(&self, queue: &str) -> String {
        format!("AMQP queue '{queue}' in vhost '{}'", self.name)
    }

    fn not_found_queue(&self, queue: &str) -> QueueError {
        QueueError::NotFound(format!("no queue '{queue}' in vhost '{}'", self.name))
    }

    fn not_found_exchange(&self, exchange: &str) -> QueueError {
        QueueError::NotFound(format!("no exchange '{exchange}' in vhost '{}'", self.name))
    }

    /// The queue called `name`, if the connection may use it.
    ///
    /// # Errors
    ///
    /// 404 when missing; 405 when exclusive to another connection.
    pub fn queue(&self, name: &str, principal: &Principal) -> Result<Arc<Queue>, QueueError> {
        let queue = self
            .find_queue(name)?
            .ok_or_else(|| self.not_found_queue(name))?;
        self.check_owner(&queue, principal)?;
        Ok(queue)
    }

    /// The queue `name`: a defined one, or in the default virtual host the
    /// stream queue of the topic of that name (defined on first use).
    ///
    /// # Errors
    ///
    /// Storage errors opening a stream queue.
    fn find_queue(&self, name: &str) -> Result<Option<Arc<Queue>>, QueueError> {
        if let Some((queue, _)) = self.definitions.read().queues.get(name) {
            if !queue.topic_deleted() {
                return Ok(Some(Arc::clone(queue)));
            }
        }
        let mut definitions = self.definitions.write();
        self.find_queue_in(&mut definitions, name)
    }

    /// [`VirtualHost::find_queue`] under the definitions' write lock: a
    /// stream queue whose topic was deleted (by a Kafka client) goes first.
    fn find_queue_in(
        &self,
        definitions: &mut Definitions,
        name: &str,
    ) -> Result<Option<Arc<Queue>>, QueueError> {
        if let Some((queue, _)) = definitions.queues.get(name) {
            if !queue.topic_deleted() {
                return Ok(Some(Arc::clone(queue)));
            }
            let queue = Arc::clone(queue);
            self.forget_queue(definitions, &queue)?;
            queue.close_for_delete();
        }
        if self.name != DEFAULT_VHOST
            || self.broker.is_internal_topic(name)
            || self.broker.topic(name).is_err()
        {
            return Ok(None);
        }
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-queue-type".into(),
            amq_protocol::types::AMQPValue::LongString("stream".into()),
        );
        let spec = self.queue_spec(name.to_owned(), true, None, false, arguments)?;
        let queue = self.open_queue(spec, "")?;
        definitions
            .queues
            .insert(name.to_owned(), (Arc::clone(&queue), String::new()));
        self.persist(definitions)?;
        Ok(Some(queue))
    }

    /// Removes a queue from the definitions with the bindings to it.
    fn forget_queue(&self, definitions: &mut Definitions, queue: &Queue) -> Result<(), QueueError> {
        definitions.queues.remove(queue.name());
        remove_bindings_to(definitions, &Destination::Queue(queue.name().to_owned()));
        if queue.spec().durable {
            self.persist(definitions)?;
        }
        Ok(())
    }

    fn queue_spec(
        &self,
        name: String,
        durable: bool,
        exclusive_owner: Option<u64>,
        auto_delete: bool,
        arguments: FieldTable,
    ) -> Result<QueueSpec, QueueError> {
        let parsed = QueueArguments::parse(&arguments, &name, &self.name)?;
        Ok(QueueSpec {
            name,
            vhost: self.name.clone(),
            durable,
            exclusive_owner,
            auto_delete,
            arguments,
            parsed,
        })
    }

    /// Every queue, by name.
    pub fn queues(&self) -> Vec<Arc<Queue>> {
        let mut queues: Vec<_> = self
            .definitions
            .read()
            .queues
            .values()
            .map(|(q, _)| Arc::clone(q))
            .collect();
        queues.sort_by(|a, b| a.name().cmp(b.name()));
        queues
    }

    /// Every exchange, by name.
    pub fn exchanges(&self) -> Vec<Exchange> {
        let mut exchanges: Vec<_> = self
            .definitions
            .read()
            .exchanges
            .values()
            .cloned()
            .collect();
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        exchanges
    }

    fn check_owner(&self, queue: &Queue, principal: &Principal) -> Result<(), QueueError> {
        match queue.spec().exclusive_owner {
            Some(owner) if owner != principal.connection() => Err(self.locked(queue)),
            _ => Ok(()),
        }
    }

    fn locked(&self, queue: &Queue) -> QueueError {
        QueueError::ResourceLocked(format!(
                "cannot obtain exclusive access to locked queue '{}' in vhost '{}'. It could be originally \
                 declared on another connection or the exclusive property value does not match that of the \
                 original declaration.",
            queue.name(),
            self.name
        ))
    }

    /// `exchange.declare`.
    ///
    /// # Errors
    ///
    /// 403 for reserved names, 404 for a passive miss, 406 when it exists
    /// with other properties.
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Result<(), QueueError> {
        if name.is_empty() {
            return Err(QueueError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        let mut definitions = self.definitions.write();
        if let Some(existing) = definitions.exchanges.get(name) {
            if passive {
                return Ok(());
            }
            let inequivalent = |arg: &str, received: &str, current: &str| {
                QueueError::PreconditionFailed(format!(
                    "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': received '{received}' but current is '{current}'",
                    self.name
                ))
            };
            if existing.kind != kind {
                return Err(inequivalent("type", kind.name(), existing.kind.name()));
            }
            if existing.durable != durable {
                return Err(inequivalent(
                    "durable",
                    &durable.to_string(),
                    &existing.durable.to_string(),
                ));
            }
            if existing.auto_delete != auto_delete {
                return Err(inequivalent(
                    "auto_delete",
                    &auto_delete.to_string(),
                    &existing.auto_delete.to_string(),
                ));
            }
            if existing.internal != internal {
                return Err(inequivalent(
                    "internal",
                    &internal.to_string(),
                    &existing.internal.to_string(),
                ));
            }
            return Ok(());
        }
        if passive {
            return Err(self.not_found_exchange(name));
        }
        if name.starts_with("amq.") {
            return Err(QueueError::AccessRefused(format!(
                "exchange name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let exchange = Exchange {
            name: name.to_owned(),
            kind,
            durable,
            auto_delete,
            internal,
            arguments,
            bindings: Vec::new(),
        };
        definitions.exchanges.insert(name.to_owned(), exchange);
        if durable {
            self.persist(&definitions)?;
        }
        Ok(())
    }

    /// `exchange.delete`; a missing exchange is not an error (as RabbitMQ).
    ///
    /// # Errors
    ///
    /// 403 for standard exchanges; 406 with `if_unused` when it has bindings.
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> Result<(), QueueError> {
        if name.is_empty() {
            return Err(QueueError::AccessRefused(
                "operation not permitted on the default exchange".into(),
            ));
        }
        if is_standard(name) {
            return Err(QueueError::AccessRefused(format!(
                "deletion of system exchange '{name}' in vhost '{}' not allowed",
                self.name
            )));
        }
        let mut definitions = self.definitions.write();
        let Some(exchange) = definitions.exchanges.get(name) else {
            return Ok(());
        };
        if if_unused && !exchange.bindings.is_empty() {
            return Err(QueueError::PreconditionFailed(format!(
                "exchange '{name}' in vhost '{}' in use",
                self.name
            )));
        }
        definitions.exchanges.remove(name);
        remove_bindings_to(&mut definitions, &Destination::Exchange(name.to_owned()));
        self.persist(&definitions)
    }

    /// `queue.declare`.
    ///
    /// # Errors
    ///
    /// 403 for reserved names, 404 for a passive miss, 405 for another
    /// connection's exclusive queue, 406 for inequivalent properties or
    /// invalid arguments; storage errors.
    #[allow(clippy::too_many_arguments)]
    pub fn declare_queue(
        &self,
        name: &str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: FieldTable,
        principal: &Principal,
    ) -> Result<DeclaredQueue, QueueError> {
        let mut definitions = self.definitions.write();
        if let Some(queue) = self.find_queue_in(&mut definitions, name)? {
            self.check_owner(&queue, principal)?;
            if !passive {
                self.check_redeclare(&queue, durable, exclusive, auto_delete, &arguments)?;
            }
            queue.touch();
            return Ok(DeclaredQueue {
                name: name.to_owned(),
                message_count: queue.message_count(),
                consumer_count: queue.consumer_count(),
            });
        }
        if passive {
            return Err(self.not_found_queue(name));
        }
        if name.starts_with("amq.") {
            return Err(QueueError::AccessRefused(format!(
                "queue name '{name}' contains reserved prefix 'amq.*'"
            )));
        }
        let name = if name.is_empty() {
            server_generated_name()
        } else {
            name.to_owned()
        };
        let spec = self.queue_spec(
            name.clone(),
            durable,
            exclusive.then_some(principal.connection()),
            auto_delete,
            arguments,
        )?;
        if spec.parsed.queue_type != QueueType::Classic {
            let invalid = |property: &str| {
                QueueError::PreconditionFailed(format!(
                    "invalid property '{property}' for queue '{name}' in vhost '{}'",
                    self.name
                ))
            };
            if !durable {
                return Err(invalid("non-durable"));
            }
            if exclusive {
                return Err(invalid("exclusive-owner"));
            }
            if auto_delete {
                return Err(invalid("auto-delete"));
            }
        }
        let id = if spec.parsed.queue_type == QueueType::Stream {
            self.create_stream_topic(&spec, principal)?;
            String::new()
        } else {
            uuid::Uuid::new_v4().simple().to_string()
        };
        let queue = self.open_queue(spec, &id)?;
        // A stream or a queue over a topic starts with the topic's records.
        let message_count = queue.message_count();
        definitions.queues.insert(name.clone(), (queue, id));
        if durable {
            self.persist(&definitions)?;
        }
        Ok(DeclaredQueue {
            name,
            message_count,
            consumer_count: 0,
        })
    }

    /// Creates the topic a new stream queue is (one partition, retention
    /// from `x-max-age` and `x-max-length-bytes`).
    fn create_stream_topic(
        &self,
        spec: &QueueSpec,
        principal: &Principal,
    ) -> Result<(), QueueError> {
        if self.name != DEFAULT_VHOST {
            return Err(QueueError::NotImplemented(format!(
                "stream queues live in vhost '{DEFAULT_VHOST}' only (queue '{}' in vhost '{}')",
                spec.name, self.name
            )));
        }
        let config = stream_topic_config(&spec.parsed)?;
        match self.broker.create_topic(
            &spec.name,
            Some(1),
            Replication::Default,
            config,
            false,
            principal,
        ) {
            Ok(_) | Err(CoreError::TopicAlreadyExists(_)) => Ok(()),
            Err(error) => Err(core_error(error, &spec.name)),
        }
    }

    fn check_redeclare(
        &self,
        queue: &Queue,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        arguments: &FieldTable,
    ) -> Result<(), QueueError> {
        let spec = queue.spec();
        let inequivalent = |arg: &str, received: bool, current: bool| {
            QueueError::PreconditionFailed(format!(
                "inequivalent arg '{arg}' for queue '{}' in vhost '{}': received '{received}' but current is '{current}'",
                spec.name, self.name
            ))
        };
        if spec.durable != durable {
            return Err(inequivalent("durable", durable, spec.durable));
        }
        if spec.exclusive_owner.is_some() != exclusive {
            // RabbitMQ treats a differing exclusive flag as a lock conflict.
            return Err(self.locked(queue));
        }
        if spec.auto_delete != auto_delete {
            return Err(inequivalent("auto_delete", auto_delete, spec.auto_delete));
        }
        check_equivalent(&spec.arguments, arguments, &spec.name, &self.name)
    }

    /// `queue.delete`: returns the ready messages it held; a missing queue
    /// answers 0 (as RabbitMQ).
    ///
    /// # Errors
    ///
    /// 405 for another connection's exclusive queue; 406 for `if_unused` /
    /// `if_empty` refusals; storage errors.
    pub fn delete_queue(
        &self,
        name: &str,
        if_unused: bool,
        if_empty: bool,
        principal: &Principal,
    ) -> Result<u64, QueueError> {
        let queue = {
            let Some(queue) = self.find_queue(name)? else {
                return Ok(0);
            };
            let queue = &queue;
            self.check_owner(queue, principal)?;
            if if_unused && queue.consumer_count() > 0 {
                return Err(QueueError::PreconditionFailed(format!(
                    "queue '{name}' in vhost '{}' in use",
                    self.name
                )));
            }
            if if_empty && queue.message_count() + queue.unacked_count() > 0 {
                return Err(QueueError::PreconditionFailed(format!(
                    "queue '{name}' in vhost '{}' not empty",
                    self.name
                )));
            }
            Arc::clone(queue)
        };
        self.remove_queue(&queue, principal)
    }

    fn remove_queue(&self, queue: &Arc<Queue>, principal: &Principal) -> Result<u64, QueueError> {
        let mut definitions = self.definitions.write();
        match definitions.queues.get(queue.name()) {
            Some((current, _)) if Arc::ptr_eq(current, queue) => {}
            _ => return Ok(0),
        }
        let is_stream = queue.spec().parsed.queue_type == QueueType::Stream;
        let stream_messages = if is_stream { queue.message_count() } else { 0 };
        if is_stream {
            match self.broker.delete_topic(queue.name(), principal) {
                Ok(()) | Err(CoreError::UnknownTopicOrPartition) => {}
                Err(error) => return Err(core_error(error, queue.name())),
            }
        }
        self.forget_queue(&mut definitions, queue)?;
        drop(definitions);
        let count = queue.close_for_delete() + stream_messages;
        if let Some(source) = &queue.spec().parsed.source_topic {
            self.broker
                .release_topic(source, &self.reader_name(queue.name()));
        }
        if !is_stream {
            queue.remove_files()?;
        }
        Ok(count)
    }

    /// Deletes an auto-delete queue whose last consumer went.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn auto_delete(&self, queue: &Arc<Queue>) -> Result<(), QueueError> {
        if queue.consumer_count() == 0 {
            self.remove_queue(queue, &Principal::internal())?;
        }
        Ok(())
    }

    /// Deletes the exclusive queues of a closed connection.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn connection_closed(&self, principal: &Principal) -> Result<(), QueueError> {
        let owned: Vec<Arc<Queue>> = self
            .definitions
            .read()
            .queues
            .values()
            .filter(|(q, _)| q.spec().exclusive_owner == Some(principal.connection()))
            .map(|(q, _)| Arc::clone(q))
            .collect();
        for queue in owned {
            self.remove_queue(&queue, principal)?;
        }
        Ok(())
    }

    /// `queue.bind` and `exchange.bind`: binds `destination` to `source`.
    ///
    /// # Errors
    ///
    /// 403 for the default exchange; 404 when either end is missing; 405
    /// for another connection's exclusive queue.
    pub fn bind(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: FieldTable,
        principal: &Principal,
    ) -> Result<(), QueueError> {
        let mut definitions = self.definitions.write();
        let durable_destination =
            self.check_binding_ends(&mut definitions, source, &destination, principal)?;
        let binding = Binding {
            destination,
            routing_key: routing_key.to_owned(),
            arguments,
        };
        let exchange = definitions
            .exchanges
            .get_mut(source)
            .expect("checked above");
        if !exchange.bindings.contains(&binding) {
            exchange.bindings.push(binding);
            if exchange.durable && durable_destination {
                self.persist(&definitions)?;
            }
        }
        Ok(())
    }

    /// `queue.unbind` and `exchange.unbind`; a missing binding is not an error.
    ///
    /// # Errors
    ///
    /// As [`VirtualHost::bind`].
    pub fn unbind(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        principal: &Principal,
    ) -> Result<(), QueueError> {
        let mut definitions = self.definitions.write();
        self.check_binding_ends(&mut definitions, source, &destination, principal)?;
        let exchange = definitions
            .exchanges
            .get_mut(source)
            .expect("checked above");
        let before = exchange.bindings.len();
        exchange.bindings.retain(|b| {
            !(b.destination == destination
                && b.routing_key == routing_key
                && &b.arguments == arguments)
        });
        if exchange.bindings.len() != before {
            let auto_delete = exchange.auto_delete && exchange.bindings.is_empty();
            if auto_delete {
                definitions.exchanges.remove(source);
            }
            self.persist(&definitions)?;
        }
        Ok(())
    }

    /// Checks both ends of a binding; returns whether the destination is durable.
    fn check_binding_ends(
        &self,
        definitions: &mut Definitions,
        source: &str,
        destination: &Destination,
        principal: &Principal,
    ) -> Result<bool, QueueError> {
        let default_exchange =
            || QueueError::AccessRefused("operation not permitted on the default exchange".into());
        let durable = match destination {
            Destination::Queue(name) => {
                let queue = self
                    .find_queue_in(definitions, name)?
                    .ok_or_else(|| self.not_found_queue(name))?;
                self.check_owner(&queue, principal)?;
                queue.spec().durable
            }
            Destination::Exchange(name) => {
                if name.is_empty() {
                    return Err(default_exchange());
                }
                definitions
                    .exchanges
                    .get(name)
                    .ok_or_else(|| self.not_found_exchange(name))?
                    .durable
            }
        };
        if source.is_empty() {
            return Err(default_exchange());
        }
        if !definitions.exchanges.contains_key(source) {
            return Err(self.not_found_exchange(source));
        }
        Ok(durable)
    }

    /// The queues a message published to `exchange` reaches.
    ///
    /// # Errors
    ///
    /// 404 for a missing exchange; 403 for an internal one.
    pub fn route(
        &self,
        exchange: &str,
        message: &Message,
        _principal: &Principal,
    ) -> Result<Vec<Arc<Queue>>, QueueError> {
        let mut queues = self.route_defined(exchange, message)?;
        if exchange.is_empty() && queues.is_empty() {
            // The default exchange reaches every queue by name, topics too.
            queues.extend(self.find_queue(&message.routing_key)?);
        }
        queues.retain(|queue| !queue.topic_deleted());
        Ok(queues)
    }

    /// [`VirtualHost::route`] among the queues in the definitions.
    fn route_defined(
        &self,
        exchange: &str,
        message: &Message,
    ) -> Result<Vec<Arc<Queue>>, QueueError> {
        let definitions = self.definitions.read();
        let start = definitions
            .exchanges
            .get(exchange)
            .ok_or_else(|| self.not_found_exchange(exchange))?;
        if start.internal {
            return Err(QueueError::AccessRefused(format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                self.name
            )));
        }
        let headers = message.properties.headers().as_ref();
        let no_headers = FieldTable::default();
        let headers = headers.unwrap_or(&no_headers);
        let mut queues: Vec<Arc<Queue>> = Vec::new();
        let mut add = |queue: &Arc<Queue>| {
            if !queues.iter().any(|known| Arc::ptr_eq(known, queue)) {
                queues.push(Arc::clone(queue));
            }
        };
        // Exchanges reached so far (exchange-to-exchange bindings may loop).
        let mut visited: Vec<&str> = vec![exchange];
        let mut next_index = 0;
        while let Some(&name) = visited.get(next_index) {
            next_index += 1;
            if name.is_empty() {
                if let Some((queue, _)) = definitions.queues.get(&message.routing_key) {
                    add(queue);
                }
                continue;
            }
            let Some(current) = definitions.exchanges.get(name) else {
                continue;
            };
            for binding in &current.bindings {
                if !current.kind.matches(
                    &binding.routing_key,
                    &binding.arguments,
                    &message.routing_key,
                    headers,
                ) {
                    continue;
                }
                match &binding.destination {
                    Destination::Queue(queue) => {
                        if let Some((queue, _)) = definitions.queues.get(queue) {
                            add(queue);
                        }
                    }
                    Destination::Exchange(next) => {
                        if !visited.contains(&next.as_str()) {
                            visited.push(next);
                        }
                    }
                }
            }
        }
        Ok(queues)
    }

    /// Routes a message and stores it in every queue it reaches.
    ///
    /// # Errors
    ///
    /// As [`VirtualHost::route`]; storage errors.
    pub fn publish(&self, message: &Message, principal: &Principal) -> Result<Stored, QueueError> {
        let queues = self.route(&message.exchange, message, principal)?;
        self.store(&[(queues, message)], principal)
    }

    /// Stores routed messages (each with the queues [`VirtualHost::route`]
    /// gave it), with one write per queue for the whole batch; the results
    /// are in the order of `routed`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn store(
        &self,
        routed: &[(Vec<Arc<Queue>>, &Message)],
        _principal: &Principal,
    ) -> Result<Stored, QueueError> {
        let published = routed
            .iter()
            .map(|(queues, _)| Published {
                routed: !queues.is_empty(),
                rejected: false,
            })
            .collect();
        let mut stored = Stored {
            published,
            syncs: Vec::new(),
        };
        self.broker
            .metrics()
            .count_published(routed.iter().map(|(_, message)| *message));
        let mut by_queue: Vec<(Arc<Queue>, Vec<usize>)> = Vec::new();
        for (index, (queues, _)) in routed.iter().enumerate() {
            for queue in queues {
                match by_queue.iter_mut().find(|(q, _)| Arc::ptr_eq(q, queue)) {
                    Some((_, indexes)) => indexes.push(index),
                    None => by_queue.push((Arc::clone(queue), vec![index])),
                }
            }
        }
        for (queue, indexes) in by_queue {
            let messages: Vec<&Message> = indexes.iter().map(|&index| routed[index].1).collect();
            let enqueued = queue.enqueue_many(&messages)?;
            self.broker
                .metrics()
                .count_stored(&self.name, queue.name(), &enqueued.accepted);
            for (&index, accepted) in indexes.iter().zip(enqueued.accepted) {
                stored.published[index].rejected |= !accepted;
            }
            // Each queue appears once here, so each lane log once.
            stored.syncs.extend(enqueued.syncs);
        }
        Ok(stored)
    }

    /// Periodic work for every queue; deletes queues whose `x-expires` passed.
    pub async fn maintain(&self, now: i64) {
        for queue in self.queues() {
            if queue.topic_deleted() {
                // Deleted by a Kafka client: the stream queue goes with it.
                let mut definitions = self.definitions.write();
                if let Err(error) = self.find_queue_in(&mut definitions, queue.name()) {
                    tracing::error!(queue = queue.name(), error = %Escaped(&error), "removing the stream queue of a deleted topic failed");
                }
                continue;
            }
            match queue.maintain(now).await {
                Ok(true) => {
                    if let Err(error) = self.remove_queue(&queue, &Principal::internal()) {
                        tracing::error!(queue = queue.name(), error = %Escaped(&error), "deleting expired queue failed");
                    }
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(queue = queue.name(), error = %Escaped(&error), "queue maintenance failed")
                }
            }
        }
    }

    /// Syncs and closes every queue (clean shutdown).
    pub fn close(&self) {
        for queue in self.queues() {
            if let Err(error) = queue.close() {
                tracing::error!(queue = queue.name(), error = %Escaped(&error), "closing queue failed");
            }
        }
    }

    fn persist(&self, definitions: &Definitions) -> Result<(), QueueError> {
        let mut exchanges: Vec<Exchange> = definitions
            .exchanges
            .values()
            .filter(|e| e.durable && !is_standard(&e.name))
            .cloned()
            .collect();
        // Standard exchanges keep their durable bindings too.
        for &(name, _) in STANDARD_EXCHANGES {
            if let Some(exchange) = definitions.exchanges.get(name) {
                if !exchange.bindings.is_empty() {
                    exchanges.push(exchange.clone());
                }
            }
        }
        let durable_queue = |name: &str| {
            definitions
                .queues
                .get(name)
                .is_some_and(|(q, _)| q.spec().durable)
        };
        let durable_exchange =
            |name: &str| definitions.exchanges.get(name).is_some_and(|e| e.durable);
        for exchange in &mut exchanges {
            exchange.bindings.retain(|b| match &b.destination {
                Destination::Queue(q) => durable_queue(q),
                Destination::Exchange(e) => durable_exchange(e),
            });
        }
        exchanges.sort_by(|a, b| a.name.cmp(&b.name));
        let mut queues: Vec<StoredQueue> = definitions
            .queues
            .values()
            .filter(|(q, _)| q.spec().durable)
            .map(|(q, id)| StoredQueue {
                name: q.name().to_owned(),
                id: id.clone(),
                auto_delete: q.spec().auto_delete,
                arguments: q.spec().arguments.clone(),
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        let stored = StoredDefinitions { exchanges, queues };
        let bytes =
            serde_json::to_vec_pretty(&stored).map_err(|e| QueueError::Internal(e.to_string()))?;
        write_atomically(&self.dir.join(DEFINITIONS_FILE), &bytes)?;
        Ok(())
    }
}

/// The virtual host whose stream queues are the broker's topics.
const DEFAULT_VHOST: &str = "/";

/// The topic settings a stream queue's arguments ask for: `x-max-age` as
/// `retention.ms`, `x-max-length-bytes` as `retention.bytes`,
/// `x-stream-max-segment-size-bytes` as `segment.bytes`.
fn stream_topic_config(arguments: &QueueArguments) -> Result<TopicConfig, QueueError> {
    let mut pairs = Vec::new();
    if let Some(age) = arguments.max_age_ms {
        pairs.push(("retention.ms", age.to_string()));
    }
    if let Some(bytes) = arguments.max_length_bytes {
        pairs.push(("retention.bytes", bytes.to_string()));
    }
    if let Some(bytes) = arguments.stream_segment_bytes {
        pairs.push(("segment.bytes", bytes.to_string()));
    }
    TopicConfig::from_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())))
        .map_err(|error| QueueError::PreconditionFailed(error.to_string()))
}

/// A core error from a topic operation, in AMQP's terms.
fn core_error(error: CoreError, queue: &str) -> QueueError {
    match error {
        CoreError::InvalidTopic(why) => QueueError::PreconditionFailed(format!(
            "stream queue '{queue}' must be a valid topic name: {why}"
        )),
        CoreError::TopicInUse(why) | CoreError::TopicAlreadyExists(why) => {
            QueueError::PreconditionFailed(why)
        }
        other => QueueError::Internal(format!("queue '{queue}': {other}")),
    }
}

fn is_standard(name: &str) -> bool {
    STANDARD_EXCHANGES
        .iter()
        .any(|(standard, _)| *standard == name)
}

fn standard_exchange(name: &str, kind: ExchangeKind) -> Exchange {
    Exchange {
        name: name.to_owned(),
        kind,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
        bindings: Vec::new(),
    }
}

/// Removes every binding to `destination`, and auto-delete exchanges left
/// without bindings.
fn remove_bindings_to(definitions: &mut Definitions, destination: &Destination) {
    let mut emptied = Vec::new();
    for exchange in definitions.exchanges.values_mut() {
        let before = exchange.bindings.len();
        exchange.bindings.retain(|b| &b.destination != destination);
        if exchange.auto_delete && before > 0 && exchange.bindings.is_empty() {
            emptied.push(exchange.name.clone());
        }
    }
    for name in emptied {
        definitions.exchanges.remove(&name);
    }
}

/// `amq.gen-` and 22 URL-safe characters, as RabbitMQ names them.
fn server_generated_name() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let random = uuid::Uuid::new_v4().as_u128();
    let suffix: String = (0..22)
        .map(|i| ALPHABET[((random >> (i * 6)) & 63) as usize] as char)
        .collect();
    format!("amq.gen-{suffix}")
}

/// Publishes dead letters to their exchanges, outside any queue lock.
async fn route_dead_letters(
    vhost: Weak<VirtualHost>,
    mut letters: mpsc::UnboundedReceiver<DeadLetter>,
) {
    while let Some(letter) = letters.recv().await {
        let Some(vhost) = vhost.upgrade() else { return };
        let result = letter
            .into_message()
            .and_then(|message| Ok(vhost.publish(&message, &Principal::internal())?.syncs));
        match result {
            // A missing dead-letter exchange drops the message, as RabbitMQ does.
            Err(QueueError::NotFound(_)) => {}
            Err(error) => tracing::error!(error = %Escaped(&error), "dead-lettering failed"),
            Ok(syncs) => {
                for (log, written) in syncs {
                    if let Err(error) = log.wait_committed(written).await {
                        tracing::error!(%error, "dead-letter sync failed");
                    }
                }
            }
        }
    }
}
