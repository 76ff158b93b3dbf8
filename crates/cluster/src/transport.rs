//! How controllers talk: request/reply frames over TCP, one request at a
//! time per connection.
//!
//! A frame is `json_length u32 LE | tail_length u32 LE | JSON | tail`, at
//! most [`FRAME_BYTES_MAX`] in all. The tail carries raw bytes beside the
//! JSON — the records of a replica fetch, stored batches that JSON would
//! triple in size — and is empty otherwise. The first request on a connection is a [`Request::Hello`] carrying the
//! caller's id and voter list; a node answers it only when the list equals
//! its own, so two nodes started with different voter lists never exchange
//! a raft message. Everything else is openraft's RPCs plus the two that
//! are ours: proposing a command to the leader and heartbeating it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;
use weir_core::metadata::MetadataCommand;
use weir_core::{ReplicaCall, ReplicaReply, ReplicaRequest, ReplicaTransport};

use crate::{CommandOutcome, NodeId, TypeConfig};

/// Largest frame: a snapshot chunk or a batch of entries.
pub const FRAME_BYTES_MAX: usize = 64 << 20;
/// How long connecting to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What one controller asks another.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Opens a connection: who is calling, with which voter list.
    Hello {
        /// The caller.
        from: NodeId,
        /// The caller's voter list, canonical form.
        voters: String,
    },
    /// openraft: RequestVote.
    Vote(VoteRequest<NodeId>),
    /// openraft: AppendEntries.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// openraft: InstallSnapshot (a chunk).
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Commit this command (sent to the leader).
    Propose(MetadataCommand),
    /// The node is alive (sent to the leader).
    Heartbeat {
        /// The node.
        id: NodeId,
        /// Its process start.
        incarnation: Uuid,
    },
    /// A follower's request to a partition leader (weir-core's replication).
    Replica(ReplicaRequest),
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// `Err` names why the connection is refused.
    Hello(Result<(), String>),
    /// openraft's answer.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// openraft's answer.
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// openraft's answer.
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    /// The committed command's outcome, or why it was not committed here
    /// (not the leader any more, shutting down).
    Propose(Result<CommandOutcome, String>),
    /// What the leader makes of a heartbeat.
    Heartbeat(HeartbeatReply),
    /// A partition leader's answer; a fetch's records travel in the tail.
    Replica(ReplicaReply),
}

impl Reply {
    /// The bytes this reply carries in its frame's tail.
    fn take_tail(&mut self) -> Bytes {
        match self {
            Reply::Replica(ReplicaReply::Fetched { records, .. }) => std::mem::take(records),
            _ => Bytes::new(),
        }
    }

    /// Puts a frame's tail back where [`Reply::take_tail`] took it from.
    fn put_tail(&mut self, tail: Bytes) -> io::Result<()> {
        match self {
            Reply::Replica(ReplicaReply::Fetched { records, .. }) => *records = tail,
            _ if tail.is_empty() => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a tail on a reply that carries none",
                ))
            }
        }
        Ok(())
    }
}

/// The leader's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum HeartbeatReply {
    /// Noted.
    Alive,
    /// The metadata knows another (or no) incarnation of this node:
    /// register again.
    Register,
    /// This node is not the leader.
    NotLeader,
}

async fn write_frame<T: Serialize>(
    stream: &mut TcpStream,
    value: &T,
    tail: &[u8],
) -> io::Result<()> {
    let payload = serde_json::to_vec(value)?;
    if payload.len() + tail.len() > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "frame of {} bytes exceeds {FRAME_BYTES_MAX}",
                payload.len() + tail.len()
            ),
        ));
    }
    let mut frame = Vec::with_capacity(8 + payload.len());
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&(tail.len() as u32).to_le_bytes());
    frame.extend_from_slice(&payload);
    stream.write_all(&frame).await?;
    stream.write_all(tail).await
}

async fn read_frame<T: for<'de> Deserialize<'de>>(
    stream: &mut TcpStream,
) -> io::Result<(T, Bytes)> {
    let length = stream.read_u32_le().await? as usize;
    let tail_length = stream.read_u32_le().await? as usize;
    if length.saturating_add(tail_length) > FRAME_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "frame of {} bytes exceeds {FRAME_BYTES_MAX}",
                length.saturating_add(tail_length)
            ),
        ));
    }
    let mut payload = vec![0; length];
    stream.read_exact(&mut payload).await?;
    let mut tail = vec![0; tail_length];
    stream.read_exact(&mut tail).await?;
    let value = serde_json::from_slice(&payload).map_err(io::Error::from)?;
    Ok((value, Bytes::from(tail)))
}

async fn write_reply(stream: &mut TcpStream, mut reply: Reply) -> io::Result<()> {
    let tail = reply.take_tail();
    write_frame(stream, &reply, &tail).await
}

async fn read_reply(stream: &mut TcpStream) -> io::Result<Reply> {
    let (mut reply, tail): (Reply, Bytes) = read_frame(stream).await?;
    reply.put_tail(tail)?;
    Ok(reply)
}

/// Answers requests; implemented by the controller.
pub(crate) type Handler =
    Arc<dyn Fn(Request) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

/// Accepts controller connections until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, voters: String, handler: Handler) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "controller listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let voters = voters.clone();
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            if let Err(error) = serve_connection(stream, &voters, handler).await {
                if error.kind() != io::ErrorKind::UnexpectedEof {
                    tracing::debug!(%peer, %error, "controller connection closed");
                }
            }
        });
    }
}

async fn serve_connection(mut stream: TcpStream, voters: &str, handler: Handler) -> io::Result<()> {
    stream.set_nodelay(true)?;
    match read_frame(&mut stream).await?.0 {
        Request::Hello {
            from,
            voters: theirs,
        } if theirs == voters => {
            write_reply(&mut stream, Reply::Hello(Ok(()))).await?;
            tracing::debug!(from, "controller connection opened");
        }
        Request::Hello {
            from,
            voters: theirs,
        } => {
            let why = format!(
                "node {from} has the controller voters {theirs}, this node has {voters}: \
                 every node must be started with the same --controller-quorum-voters"
            );
            tracing::error!("{why}");
            return write_reply(&mut stream, Reply::Hello(Err(why))).await;
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a controller connection must start with Hello",
            ))
        }
    }
    loop {
        let (request, _) = read_frame(&mut stream).await?;
        let reply = handler(request).await;
        write_reply(&mut stream, reply).await?;
    }
}

/// One connection to one peer, opened on demand and dropped on any error.
pub(crate) struct Peer {
    from: NodeId,
    voters: String,
    address: SocketAddr,
    stream: Option<TcpStream>,
}

impl Peer {
    pub(crate) fn new(from: NodeId, voters: String, address: SocketAddr) -> Peer {
        Peer {
            from,
            voters,
            address,
            stream: None,
        }
    }

    /// Sends `request` and waits up to `timeout` for the reply.
    ///
    /// # Errors
    ///
    /// `ConnectionRefused` (or a connect timeout) when the peer is not
    /// reachable, `PermissionDenied` when it refuses our voter list, other
    /// I/O errors when the connection broke.
    pub(crate) async fn call(&mut self, request: &Request, timeout: Duration) -> io::Result<Reply> {
        let exchange = async {
            if self.stream.is_none() {
                self.stream = Some(self.connect().await?);
            }
            let stream = self.stream.as_mut().expect("connected above");
            write_frame(stream, request, &[]).await?;
            read_reply(stream).await
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no reply in time")),
        };
        if result.is_err() {
            self.stream = None;
        }
        result
    }

    async fn connect(&self) -> io::Result<TcpStream> {
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.address))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let hello = Request::Hello {
            from: self.from,
            voters: self.voters.clone(),
        };
        write_frame(&mut stream, &hello, &[]).await?;
        match read_reply(&mut stream).await? {
            Reply::Hello(Ok(())) => Ok(stream),
            Reply::Hello(Err(why)) => {
                tracing::error!(peer = %self.address, "{why}");
                Err(io::Error::new(io::ErrorKind::PermissionDenied, why))
            }
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "expected Hello")),
        }
    }
}

/// openraft's network: a [`Peer`] per target node.
pub(crate) struct Network {
    pub(crate) from: NodeId,
    pub(crate) voters: String,
}

/// openraft's connection to one target.
pub(crate) struct Connection {
    target: NodeId,
    peer: Option<Peer>,
    bad_address: String,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        let peer = node
            .addr
            .parse()
            .ok()
            .map(|address| Peer::new(self.from, self.voters.clone(), address));
        Connection {
            target,
            peer,
            bad_address: node.addr.clone(),
        }
    }
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn rpc<T, E>(
        &mut self,
        request: Request,
        option: &RPCOption,
        unpack: impl FnOnce(Reply) -> Option<Result<T, RaftError<NodeId, E>>>,
    ) -> RpcResult<T, E>
    where
        E: std::error::Error,
    {
        let Some(peer) = self.peer.as_mut() else {
            let error = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{}' is not an address", self.bad_address),
            );
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        let reply = peer
            .call(&request, option.hard_ttl())
            .await
            .map_err(|error| match error.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::PermissionDenied
                | io::ErrorKind::TimedOut => RPCError::Unreachable(Unreachable::new(&error)),
                _ => RPCError::Network(NetworkError::new(&error)),
            })?;
        match unpack(reply) {
            Some(Ok(answer)) => Ok(answer),
            Some(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            None => {
                let error = io::Error::new(io::ErrorKind::InvalidData, "reply of the wrong kind");
                Err(RPCError::Network(NetworkError::new(&error)))
            }
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        request: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.rpc(
            Request::AppendEntries(request),
            &option,
            |reply| match reply {
                Reply::AppendEntries(answer) => Some(answer),
                _ => None,
            },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        request: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.rpc(
            Request::InstallSnapshot(request),
            &option,
            |reply| match reply {
                Reply::InstallSnapshot(answer) => Some(answer),
                _ => None,
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        request: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.rpc(Request::Vote(request), &option, |reply| match reply {
            Reply::Vote(answer) => Some(answer),
            _ => None,
        })
        .await
    }
}

/// How long a replica request may take: a leader holds a fetch at its log
/// end for half a second.
const REPLICA_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections to partition leaders, for weir-core's replication: a pool
/// per node, so that each partition's fetcher holds its own connection
/// while the leader holds its fetch.
pub(crate) struct ReplicaPeers {
    pub(crate) from: NodeId,
    pub(crate) voters: String,
    pub(crate) addresses: std::collections::BTreeMap<NodeId, SocketAddr>,
    pub(crate) idle: Arc<parking_lot::Mutex<std::collections::BTreeMap<NodeId, Vec<Peer>>>>,
}

impl std::fmt::Debug for ReplicaPeers {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ReplicaPeers")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl ReplicaTransport for ReplicaPeers {
    fn call(&self, leader: u64, request: ReplicaRequest) -> ReplicaCall {
        let address = self.addresses.get(&leader).copied();
        let pooled = self.idle.lock().get_mut(&leader).and_then(Vec::pop);
        let (from, voters, idle) = (self.from, self.voters.clone(), Arc::clone(&self.idle));
        Box::pin(async move {
            let address = address.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("node {leader} is not a controller voter"),
                )
            })?;
            let mut peer = pooled.unwrap_or_else(|| Peer::new(from, voters, address));
            let reply = match peer
                .call(&Request::Replica(request), REPLICA_CALL_TIMEOUT)
                .await?
            {
                Reply::Replica(reply) => reply,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "not a replica reply",
                    ))
                }
            };
            idle.lock().entry(leader).or_default().push(peer);
            Ok(reply)
        })
    }
}
