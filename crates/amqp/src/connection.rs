//! One AMQP connection: protocol header, `connection.*` handshake and close,
//! the frame loop, heartbeats, and writing what queues and confirms send.
//!
//! A connection is a single task: it reads frames and handles them in
//! order, and between reads writes deliveries (from the queues' dispatchers,
//! through an unbounded channel whose depth each queue bounds by prefetch
//! and [`weir_core::queues::UNSENT_DELIVERIES_MAX`]) and publisher confirms
//! (futures that finish when the fsync covering a publish is done, kept in
//! publish order). Writing waits for the socket, so a slow reader slows its
//! own connection only.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::protocol::{connection, parse_class, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use weir_core::queues::{Message, MessageId, Outbound, Queue, VirtualHost, UNSENT_DELIVERIES_MAX};
// Operator HTTP API hooks (registry, metrics): kept apart for easy merging.
use weir_core::connections::Registration;
use weir_core::metrics::{Metrics, Protocol};
use weir_core::{Escaped, Principal};

use crate::channel::Channel;
use crate::errors::*;
use crate::frames::{self, next_frame, put_heartbeat, put_method, RawFrame, PROTOCOL_HEADER};
use crate::server::{AmqpConfig, VirtualHosts};

/// Frame size every peer must accept before `tune` (AMQP's frame-min-size).
const FRAME_MIN_BYTES: u32 = 4096;
/// How long a client may take to send its protocol header and handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Outbound deliveries written per turn of the loop before reading again.
const DELIVERIES_PER_TURN: usize = 512;

/// Publisher confirms that resolve once their publishes are durable:
/// (channel, sequence number, ack = true / nack = false), in order.
pub(crate) type ConfirmFuture = Pin<Box<dyn Future<Output = Vec<(u16, u64, bool)>> + Send>>;

/// A routed publish waiting to be stored with the others of the same read.
#[derive(Debug)]
pub(crate) struct StagedPublish {
    pub(crate) channel: u16,
    /// Its confirm sequence number, in confirm mode.
    pub(crate) sequence: Option<u64>,
    pub(crate) queues: Vec<Arc<Queue>>,
    pub(crate) message: Message,
}

/// Publishes and acks gathered while handling one read from the socket:
/// storing them together costs one write per queue instead of one per
/// message. They are flushed before any other method is handled, so no
/// client can observe the difference.
#[derive(Debug, Default)]
pub(crate) struct Staged {
    pub(crate) publishes: Vec<StagedPublish>,
    pub(crate) acks: Vec<(Arc<Queue>, Vec<MessageId>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingStartOk,
    AwaitingTuneOk,
    AwaitingOpen,
    Open,
    /// The broker sent `connection.close` and waits for `close-ok`.
    Closing,
    Closed,
}

/// Capabilities the client announced in `start-ok`.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ClientCapabilities {
    pub(crate) consumer_cancel_notify: bool,
    pub(crate) connection_blocked: bool,
    pub(crate) authentication_failure_close: bool,
}

/// State of one connection.
pub struct Connection {
    pub(crate) id: u64,
    peer: SocketAddr,
    vhosts: Arc<VirtualHosts>,
    pub(crate) config: Arc<AmqpConfig>,
    pub(crate) vhost: Option<Arc<VirtualHost>>,
    pub(crate) user: String,
    /// Who the core is told makes this connection's requests.
    pub(crate) principal: Principal,
    pub(crate) frame_bytes_max: usize,
    channel_max: u16,
    heartbeat_s: u16,
    /// When the broker last sent a heartbeat.
    heartbeat_sent: Instant,
    phase: Phase,
    pub(crate) capabilities: ClientCapabilities,
    pub(crate) channels: HashMap<u16, Channel>,
    /// Bytes to write at the end of this turn of the loop.
    pub(crate) out: Vec<u8>,
    pub(crate) outbound_sender: mpsc::UnboundedSender<Outbound>,
    outbound: mpsc::UnboundedReceiver<Outbound>,
    pub(crate) confirms: FuturesOrdered<ConfirmFuture>,
    pub(crate) staged: Staged,
    /// The resource alarm (true: publishers are blocked).
    alarm: watch::Receiver<bool>,
    /// The connection has published (only publishers are blocked, as RabbitMQ).
    pub(crate) has_published: bool,
    /// `connection.blocked` was sent and not yet lifted.
    sent_blocked: bool,
    /// Its entry in the registry the HTTP API lists and closes.
    registration: Registration,
    /// The node's metrics.
    metrics: Arc<Metrics>,
}

impl Connection {
    /// A connection from `peer`, not yet past the protocol header, counted
    /// in the node's `metrics` and listed through its `registration`.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        vhosts: Arc<VirtualHosts>,
        config: Arc<AmqpConfig>,
        alarm: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        registration: Registration,
    ) -> Connection {
        let (outbound_sender, outbound) = mpsc::unbounded_channel();
        Connection {
            id,
            peer,
            vhosts,
            frame_bytes_max: config.frame_bytes_max as usize,
            channel_max: config.channels_per_connection_max,
            heartbeat_s: 0,
            heartbeat_sent: Instant::now(),
            config,
            vhost: None,
            user: String::new(),
            principal: Principal::anonymous(id),
            phase: Phase::AwaitingStartOk,
            capabilities: ClientCapabilities::default(),
            channels: HashMap::new(),
            out: Vec::with_capacity(64 * 1024),
            outbound_sender,
            outbound,
            confirms: FuturesOrdered::new(),
            staged: Staged::default(),
            alarm,
            has_published: false,
            sent_blocked: false,
            registration,
            metrics,
        }
    }

    /// Serves the connection until it closes, then releases everything it held.
    pub async fn run(mut self, socket: TcpStream, mut stop: watch::Receiver<bool>) {
        let (mut reader, mut writer) = socket.into_split();
        let mut buffer = BytesMut::with_capacity(64 * 1024);
        let mut header = [0u8; 8];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.read_exact(&mut header)).await {
            Ok(Ok(_)) if &header == PROTOCOL_HEADER => {}
            Ok(Ok(_)) => {
                // The spec's answer to a header we do not speak: ours, then close.
                let _ = writer.write_all(PROTOCOL_HEADER).await;
                return;
            }
            _ => return,
        }
        self.send_start();
        let mut last_read = Instant::now();
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let handshake_deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut closing_since: Option<Instant> = None;
        let mut alarm_alive = true;
        loop {
            if !self.out.is_empty() {
                if writer.write_all(&self.out).await.is_err() {
                    break;
                }
                self.metrics
                    .bytes_sent(Protocol::Amqp, self.out.len() as u64);
                self.out.clear();
            }
            self.registration.set_channels(self.channels.len());
            if self.phase == Phase::Closed {
                break;
            }
            if self.phase == Phase::Closing && closing_since.is_none() {
                closing_since = Some(Instant::now());
            }
            // A blocked publisher's socket is not read until the alarm clears.
            let blocked = *self.alarm.borrow() && self.has_published;
            tokio::select! {
                read = reader.read_buf(&mut buffer), if !blocked => {
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(bytes) => {
                            last_read = Instant::now();
                            self.metrics.bytes_received(Protocol::Amqp, bytes as u64);
                        }
                    }
                    if let Err(error) = self.handle_bytes(&mut buffer).await {
                        self.fail(error);
                    }
                    self.tell_blocked();
                }
                changed = self.alarm.changed(), if alarm_alive => {
                    alarm_alive = changed.is_ok();
                    self.tell_blocked();
                    if !*self.alarm.borrow() {
                        if let Err(error) = self.handle_bytes(&mut buffer).await {
                            self.fail(error);
                        }
                    }
                }
                Some(outbound) = self.outbound.recv() => self.write_outbound(outbound),
                Some(first) = self.confirms.next(), if !self.confirms.is_empty() => self.write_confirms(first),
                _ = heartbeat.tick() => {
                    if blocked {
                        // Not reading: the peer's heartbeats wait in the socket.
                        last_read = Instant::now();
                    }
                    if !self.heartbeat_due(last_read, handshake_deadline, closing_since) {
                        break;
                    }
                }
                () = self.registration.close_requested(), if self.phase == Phase::Open => {
                    tracing::info!(peer = %self.peer, "AMQP connection closed by an operator");
                    self.send_connection_close(CONNECTION_FORCED, "CONNECTION_FORCED - Closed via management plugin".into(), (0, 0));
                }
                _ = stop.changed() => {
                    self.send_connection_close(CONNECTION_FORCED, "CONNECTION_FORCED - broker shutdown".into(), (0, 0));
                    let _ = writer.write_all(&self.out).await;
                    break;
                }
            }
        }
        let _ = writer.shutdown().await;
        self.release_everything();
    }

    /// Sends `connection.blocked` / `unblocked` as the alarm and this
    /// connection's publishing require (to clients that announced the capability).
    fn tell_blocked(&mut self) {
        let blocked =
            *self.alarm.borrow_and_update() && self.has_published && self.phase == Phase::Open;
        if blocked == self.sent_blocked || !self.capabilities.connection_blocked {
            return;
        }
        let method = if blocked {
            connection::AMQPMethod::Blocked(connection::Blocked {
                reason: short("low on disk"),
            })
        } else {
            connection::AMQPMethod::Unblocked(connection::Unblocked {})
        };
        put_method(&mut self.out, 0, AMQPClass::Connection(method));
        self.sent_blocked = blocked;
    }

    /// Sends heartbeats and decides whether the peer is still there.
    fn heartbeat_due(
        &mut self,
        last_read: Instant,
        handshake_deadline: Instant,
        closing_since: Option<Instant>,
    ) -> bool {
        let now = Instant::now();
        if self.phase != Phase::Open && self.phase != Phase::Closing && now > handshake_deadline {
            return false;
        }
        if closing_since.is_some_and(|since| now - since > Duration::from_secs(2)) {
            return false;
        }
        if self.heartbeat_s == 0 {
            return true;
        }
        let interval = Duration::from_secs(u64::from(self.heartbeat_s));
        // Two missed heartbeats and the peer is gone, as RabbitMQ decides.
        if now - last_read > interval * 2 {
            tracing::info!(peer = %self.peer, "AMQP client missed heartbeats; closing");
            return false;
        }
        // Twice per interval, as RabbitMQ sends them.
        if now - self.heartbeat_sent >= interval / 2 {
            put_heartbeat(&mut self.out);
            self.heartbeat_sent = now;
        }
        true
    }

    /// Handles every whole frame in `buffer`.
    async fn handle_bytes(&mut self, buffer: &mut BytesMut) -> AmqpResult {
        let handled = self.handle_frames(buffer).await;
        // Also after an error: staged acks left the channel's unacked set.
        let flushed = self.flush_staged();
        handled.and(flushed)
    }

    async fn handle_frames(&mut self, buffer: &mut BytesMut) -> AmqpResult {
        loop {
            if self.phase == Phase::Closed || (*self.alarm.borrow() && self.has_published) {
                // Blocked: the rest waits in the buffer until the alarm clears.
                break;
            }
            let Some(frame) = next_frame(buffer, self.frame_bytes_max)? else {
                break;
            };
            if frame.kind == frames::METHOD && !is_publish_or_ack(&frame.payload) {
                self.flush_staged()?;
            }
            self.handle_frame(frame).await?;
        }
        Ok(())
    }

    /// Stores staged publishes (one write per queue) and queues their
    /// confirms; applies staged acks.
    pub(crate) fn flush_staged(&mut self) -> AmqpResult {
        let staged = std::mem::take(&mut self.staged);
        for (queue, ids) in staged.acks {
            queue.ack(&ids)?;
        }
        if staged.publishes.is_empty() {
            return Ok(());
        }
        let vhost = self.vhost();
        let routed: Vec<(Vec<Arc<Queue>>, &Message)> = staged
            .publishes
            .iter()
            .map(|p| (p.queues.clone(), &p.message))
            .collect();
        let stored = match vhost.store(&routed, &self.principal) {
            Ok(stored) => stored,
            Err(error) if staged.publishes.iter().all(|p| p.sequence.is_some()) => {
                // Nothing was stored (a full disk, say): every publisher is
                // in confirm mode and hears it as a nack, and may retry.
                tracing::warn!(%error, messages = staged.publishes.len(), "storing publishes failed; nacked");
                let nacks = staged
                    .publishes
                    .iter()
                    .filter_map(|p| p.sequence.map(|sequence| (p.channel, sequence, false)))
                    .collect::<Vec<_>>();
                self.confirms.push_back(Box::pin(async move { nacks }));
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        };
        let confirms: Vec<(u16, u64, bool)> = staged
            .publishes
            .iter()
            .zip(&stored.published)
            .filter_map(|(publish, published)| {
                publish
                    .sequence
                    .map(|sequence| (publish.channel, sequence, !published.rejected))
            })
            .collect();
        let syncs = stored.syncs;
        if !confirms.is_empty() {
            self.confirms.push_back(Box::pin(async move {
                let mut durable = true;
                for (log, written) in syncs {
                    durable &= log.wait_committed(written).await.is_ok();
                }
                confirms
                    .into_iter()
                    .map(|(channel, sequence, ack)| (channel, sequence, ack && durable))
                    .collect()
            }));
        }
        Ok(())
    }

    async fn handle_frame(&mut self, frame: RawFrame) -> AmqpResult {
        match frame.kind {
            frames::HEARTBEAT if frame.channel == 0 => Ok(()),
            frames::HEARTBEAT => Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                "type 8, all octets = <<>>",
            )),
            frames::METHOD => {
                refuse_prefetch_size(&frame.payload)?;
                let method = match parse_class(&frame.payload[..]) {
                    Ok(([], method)) => method,
                    _ => return Err(unparsable_method(&frame.payload)),
                };
                let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
                let started = Instant::now();
                let result = if self.phase == Phase::Closing {
                    self.while_closing(method)
                } else if frame.channel == 0 {
                    self.connection_method(method)
                } else if self.phase != Phase::Open {
                    Err(AmqpError::connection(
                        CHANNEL_ERROR,
                        "channel used before connection.open",
                    ))
                } else {
                    self.channel_method(frame.channel, method).await
                };
                let api = crate::method_names::method_name(ids.0, ids.1);
                self.metrics.request(Protocol::Amqp, api, started.elapsed());
                result.map_err(|error| error.during(ids))
            }
            _ if self.phase == Phase::Closing => Ok(()),
            _ if frame.channel == 0 || self.phase != Phase::Open => Err(AmqpError::connection(
                UNEXPECTED_FRAME,
                format!("content frame on channel {}", frame.channel),
            )),
            kind => self.content_frame(frame.channel, kind, frame.payload).await,
        }
    }

    fn while_closing(&mut self, method: AMQPClass) -> AmqpResult {
        match method {
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => self.phase = Phase::Closed,
            AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                put_method(
                    &mut self.out,
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.phase = Phase::Closed;
            }
            _ => {}
        }
        Ok(())
    }

    /// A connection exception: `connection.close`, then wait for `close-ok`;
    /// a channel exception: `channel.close` on that channel.
    pub(crate) fn fail(&mut self, error: AmqpError) {
        tracing::info!(peer = %self.peer, code = error.code, text = %Escaped(&error.text), "AMQP connection error");
        if self.phase == Phase::AwaitingStartOk || self.phase == Phase::Closing {
            self.phase = Phase::Closed;
            return;
        }
        self.send_connection_close(error.code, error.text, (error.class_id, error.method_id));
    }

    fn send_connection_close(&mut self, code: u16, text: String, ids: (u16, u16)) {
        let (class_id, method_id) = ids;
        let close = connection::Close {
            reply_code: code,
            reply_text: short(&text),
            class_id,
            method_id,
        };
        put_method(
            &mut self.out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Close(close)),
        );
        self.phase = Phase::Closing;
        self.release_channels();
    }

    fn send_start(&mut self) {
        let mut capabilities = FieldTable::default();
        for name in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "consumer_priorities",
            "authentication_failure_close",
            "per_consumer_qos",
        ] {
            capabilities.insert(name.into(), AMQPValue::Boolean(true));
        }
        capabilities.insert("direct_reply_to".into(), AMQPValue::Boolean(false));
        let mut properties = FieldTable::default();
        properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
        properties.insert("product".into(), long_string("Weir"));
        properties.insert("version".into(), long_string(env!("CARGO_PKG_VERSION")));
        properties.insert("platform".into(), long_string("Rust"));
        properties.insert("cluster_name".into(), long_string("weir"));
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: properties,
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        };
        put_method(
            &mut self.out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(start)),
        );
    }

    fn connection_method(&mut self, method: AMQPClass) -> AmqpResult {
        let AMQPClass::Connection(method) = method else {
            return Err(AmqpError::connection(
                CHANNEL_ERROR,
                "unexpected method in connection state running",
            ));
        };
        use connection::AMQPMethod as M;
        match (self.phase, method) {
            (Phase::AwaitingStartOk, M::StartOk(start_ok)) => self.start_ok(start_ok),
            (Phase::AwaitingTuneOk, M::TuneOk(tune_ok)) => {
                self.tune_ok(&tune_ok);
                self.phase = Phase::AwaitingOpen;
                Ok(())
            }
            (Phase::AwaitingOpen, M::Open(open)) => self.open(open.virtual_host.as_str()),
            (_, M::Close(_)) => {
                put_method(
                    &mut self.out,
                    0,
                    AMQPClass::Connection(M::CloseOk(connection::CloseOk {})),
                );
                self.phase = Phase::Closed;
                Ok(())
            }
            (_, M::Blocked(_) | M::Unblocked(_) | M::UpdateSecretOk(_)) => Ok(()),
            (_, method) => Err(AmqpError::connection(
                COMMAND_INVALID,
                format!("connection.{} not expected now", method_name(&method)),
            )),
        }
    }

    fn start_ok(&mut self, start_ok: connection::StartOk) -> AmqpResult {
        if let Some(AMQPValue::FieldTable(capabilities)) =
            start_ok.client_properties.inner().get("capabilities")
        {
            let flag = |name: &str| {
                matches!(
                    capabilities.inner().get(name),
                    Some(AMQPValue::Boolean(true))
                )
            };
            self.capabilities = ClientCapabilities {
                consumer_cancel_notify: flag("consumer_cancel_notify"),
                connection_blocked: flag("connection.blocked"),
                authentication_failure_close: flag("authentication_failure_close"),
            };
        }
        let mechanism = start_ok.mechanism.as_str().to_owned();
        let credentials = match mechanism.as_str() {
            "PLAIN" => plain_credentials(start_ok.response.as_bytes()),
            "AMQPLAIN" => amqplain_credentials(start_ok.response.as_bytes()),
            _ => None,
        };
        let accepted = credentials.as_ref().is_some_and(|(user, password)| {
            self.config
                .users
                .iter()
                .any(|(u, p)| u == user && p == password)
                && (user != "guest" || self.peer.ip().is_loopback())
        });
        let Some((user, _)) = credentials.filter(|_| accepted) else {
            tracing::info!(peer = %self.peer, mechanism = %Escaped(&mechanism), "AMQP login refused");
            if self.capabilities.authentication_failure_close {
                let text = format!(
                    "ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                );
                self.send_connection_close(ACCESS_REFUSED, text, (10, 11));
            } else {
                self.phase = Phase::Closed;
            }
            return Ok(());
        };
        self.principal = Principal::user(&user, self.id);
        self.user = user;
        self.registration.set_user(&self.user);
        if let Some(AMQPValue::LongString(product)) =
            start_ok.client_properties.inner().get("product")
        {
            self.registration
                .set_client(&String::from_utf8_lossy(product.as_bytes()));
        }
        let tune = connection::Tune {
            channel_max: self.config.channels_per_connection_max,
            frame_max: self.config.frame_bytes_max,
            heartbeat: self.config.heartbeat_s,
        };
        put_method(
            &mut self.out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(tune)),
        );
        self.phase = Phase::AwaitingTuneOk;
        Ok(())
    }

    fn tune_ok(&mut self, tune_ok: &connection::TuneOk) {
        let ours = self.config.frame_bytes_max;
        let frame_max = match tune_ok.frame_max {
            0 => ours,
            asked => asked.clamp(FRAME_MIN_BYTES, ours),
        };
        self.frame_bytes_max = frame_max as usize;
        self.channel_max = match tune_ok.channel_max {
            0 => self.config.channels_per_connection_max,
            asked => asked.min(self.config.channels_per_connection_max),
        };
        self.heartbeat_s = tune_ok.heartbeat;
    }

    fn open(&mut self, vhost: &str) -> AmqpResult {
        let Some(found) = self.vhosts.get(vhost) else {
            return Err(AmqpError::connection(
                NOT_ALLOWED,
                format!("vhost {vhost} not found"),
            ));
        };
        self.vhost = Some(Arc::clone(found));
        put_method(
            &mut self.out,
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        self.phase = Phase::Open;
        Ok(())
    }

    /// The highest channel number the client may open.
    pub(crate) fn channel_max(&self) -> u16 {
        self.channel_max
    }

    /// The virtual host (set once the connection is open).
    pub(crate) fn vhost(&self) -> Arc<VirtualHost> {
        Arc::clone(
            self.vhost
                .as_ref()
                .expect("channels exist only on open connections"),
        )
    }

    /// Writes a delivery or a server-initiated cancel.
    fn write_outbound(&mut self, first: Outbound) {
        self.write_one_outbound(first);
        for _ in 1..DELIVERIES_PER_TURN {
            match self.outbound.try_recv() {
                Ok(next) => self.write_one_outbound(next),
                Err(_) => break,
            }
        }
    }

    fn write_one_outbound(&mut self, outbound: Outbound) {
        match outbound {
            Outbound::Deliver(delivery) => {
                let channel = delivery.channel;
                let Some(open) = self.channels.get_mut(&channel).filter(|c| !c.closing) else {
                    // The channel closed after the queue sent this: back to the queue.
                    if delivery.needs_ack {
                        let _ = delivery.queue.reject(&[delivery.id], true);
                    }
                    return;
                };
                let unsent_before = open.handle.unsent.fetch_sub(1, Ordering::Relaxed);
                open.write_delivery(&mut self.out, delivery, self.frame_bytes_max);
                if unsent_before >= UNSENT_DELIVERIES_MAX {
                    open.wake_consumed_queues();
                }
            }
            Outbound::Cancel {
                channel,
                consumer_tag,
            } => {
                let Some(open) = self.channels.get_mut(&channel).filter(|c| !c.closing) else {
                    return;
                };
                if open.consumers.remove(&*consumer_tag).is_some()
                    && self.capabilities.consumer_cancel_notify
                {
                    let cancel = amq_protocol::protocol::basic::Cancel {
                        consumer_tag: short(&consumer_tag),
                        nowait: true,
                    };
                    put_method(
                        &mut self.out,
                        channel,
                        AMQPClass::Basic(amq_protocol::protocol::basic::AMQPMethod::Cancel(cancel)),
                    );
                }
            }
        }
    }

    /// Writes confirms that are ready, acks in runs as one `multiple` ack.
    fn write_confirms(&mut self, first: Vec<(u16, u64, bool)>) {
        let mut ready = first;
        while let Some(Some(next)) = self.confirms.next().now_or_never() {
            ready.extend(next);
        }
        let mut index = 0;
        while index < ready.len() {
            let (channel, sequence, ack) = ready[index];
            let mut last = sequence;
            let mut run = 1;
            while ack
                && index + run < ready.len()
                && ready[index + run].0 == channel
                && ready[index + run].2
            {
                last = ready[index + run].1;
                run += 1;
            }
            index += run;
            if self.channels.get(&channel).is_none_or(|c| c.closing) {
                continue;
            }
            crate::confirm::put_confirm(&mut self.out, channel, last, run > 1, ack);
        }
    }

    /// Requeues every unacknowledged delivery and removes every consumer.
    fn release_channels(&mut self) {
        for (_, mut channel) in self.channels.drain() {
            channel.release(self.vhost.as_deref());
        }
    }

    fn release_everything(&mut self) {
        self.release_channels();
        if let Some(vhost) = &self.vhost {
            if let Err(error) = vhost.connection_closed(&self.principal) {
                tracing::error!(error = %Escaped(&error), "deleting exclusive queues failed");
            }
        }
    }
}

/// Whether a method frame is `basic.publish` or `basic.ack` (staged, not
/// flushed before).
fn is_publish_or_ack(payload: &[u8]) -> bool {
    payload.len() >= 4 && (payload[..4] == [0, 60, 0, 40] || payload[..4] == [0, 60, 0, 80])
}

/// The error for a method frame that does not decode: an unknown class or
/// class is 540, a method of a known class that does not decode 501.
fn unparsable_method(payload: &[u8]) -> AmqpError {
    if payload.len() < 4 {
        return AmqpError::connection(SYNTAX_ERROR, "method frame too short");
    }
    let class = u16::from_be_bytes([payload[0], payload[1]]);
    let method = u16::from_be_bytes([payload[2], payload[3]]);
    let known_class = matches!(class, 10 | 20 | 30 | 40 | 50 | 60 | 85 | 90);
    if known_class {
        AmqpError::connection(
            FRAME_ERROR,
            format!("cannot decode method {class}.{method}"),
        )
    } else {
        AmqpError::connection(NOT_IMPLEMENTED, format!("unknown method {class}.{method}"))
    }
}

/// `basic.qos` with a prefetch size: RabbitMQ does not implement it (and
/// the codec drops the field, so it is read from the raw payload).
fn refuse_prefetch_size(payload: &[u8]) -> AmqpResult {
    if payload.len() >= 8 && payload[..4] == [0, 60, 0, 10] {
        let size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if size != 0 {
            return Err(AmqpError::connection(
                NOT_IMPLEMENTED,
                format!("prefetch_size!=0 ({size})"),
            ));
        }
    }
    Ok(())
}

fn method_name(method: &connection::AMQPMethod) -> String {
    let debug = format!("{method:?}");
    debug.split('(').next().unwrap_or_default().to_lowercase()
}

/// `\0user\0password` (an authorization identity before the first NUL is ignored).
fn plain_credentials(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|&b| b == 0);
    let _authorization_identity = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    Some((user, password))
}

/// AMQPLAIN: a field table without its length prefix, with LOGIN and PASSWORD.
fn amqplain_credentials(response: &[u8]) -> Option<(String, String)> {
    let mut framed = (response.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
    let text = |name: &str| {
        table
            .inner()
            .get(name)
            .and_then(weir_core::queues::args::text)
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

/// A short string, cut to 255 bytes at a character boundary.
pub(crate) fn short(text: &str) -> amq_protocol::types::ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].into()
}

fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}
