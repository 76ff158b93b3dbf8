//! What a node needs to know to join the controller quorum, and the checks
//! that refuse an inconsistent one before anything starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use weir_core::metadata::NODE_ID_MAX;

use crate::error::ClusterError;

/// A node's cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's id (`--node-id`).
    pub node_id: u64,
    /// Where this node listens for the other controllers (`--controller-listen`).
    pub controller_listen: SocketAddr,
    /// Every controller voter: id → controller address
    /// (`--controller-quorum-voters 1@host:port,2@host:port,…`).
    pub voters: BTreeMap<u64, SocketAddr>,
    /// Where the controller keeps its raft log and snapshots.
    pub dir: PathBuf,
    /// How often a node tells the controller leader it is alive.
    pub heartbeat_interval: Duration,
    /// A node silent this long is fenced (Kafka's `broker.session.timeout.ms`).
    pub session_timeout: Duration,
    /// Raft's election timeout range; the leader heartbeats at a third of the minimum.
    pub election_timeout_min: Duration,
    /// Upper end of the election timeout range.
    pub election_timeout_max: Duration,
}

impl ClusterConfig {
    /// A config with the default timeouts: heartbeats every 500 ms, fenced
    /// after 3 s of silence, elections after 1 to 2 s without a leader.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] when the voters do not include this node,
    /// or name it at another address than `controller_listen`.
    pub fn new(
        node_id: u64,
        controller_listen: SocketAddr,
        voters: BTreeMap<u64, SocketAddr>,
        dir: PathBuf,
    ) -> Result<ClusterConfig, ClusterError> {
        let config = ClusterConfig {
            node_id,
            controller_listen,
            voters,
            dir,
            heartbeat_interval: Duration::from_millis(500),
            session_timeout: Duration::from_secs(3),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ClusterError> {
        if self.node_id > NODE_ID_MAX {
            return Err(ClusterError::Config(format!(
                "--node-id {} is larger than {NODE_ID_MAX}",
                self.node_id
            )));
        }
        match self.voters.get(&self.node_id) {
            None => Err(ClusterError::Config(format!(
                "--controller-quorum-voters does not include this node's id {}",
                self.node_id
            ))),
            Some(address) if *address != self.controller_listen => {
                Err(ClusterError::Config(format!(
                    "--controller-quorum-voters names node {} at {address}, but --controller-listen is {}",
                    self.node_id, self.controller_listen
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// The voter list in its flag form, sorted by id: nodes compare it when
    /// they connect, so two nodes started with different lists never talk.
    pub fn voters_text(&self) -> String {
        format_voters(&self.voters)
    }
}

/// Parses `1@host:port,2@host:port,…`.
///
/// # Errors
///
/// [`ClusterError::Config`] for a malformed entry, a node id listed twice,
/// or an address listed twice.
pub fn parse_voters(text: &str) -> Result<BTreeMap<u64, SocketAddr>, ClusterError> {
    let mut voters = BTreeMap::new();
    for entry in text
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
    {
        let malformed = || {
            ClusterError::Config(format!(
                "controller voter '{entry}' is not ID@HOST:PORT (for example 1@127.0.0.1:9093)"
            ))
        };
        let (id, address) = entry.split_once('@').ok_or_else(malformed)?;
        let id: u64 = id.parse().map_err(|_| malformed())?;
        let address: SocketAddr = address.parse().map_err(|_| malformed())?;
        if voters.values().any(|known| *known == address) {
            return Err(ClusterError::Config(format!(
                "controller address {address} is listed for two voters"
            )));
        }
        if voters.insert(id, address).is_some() {
            return Err(ClusterError::Config(format!(
                "node id {id} is listed twice in the controller voters"
            )));
        }
    }
    if voters.is_empty() {
        return Err(ClusterError::Config(
            "the controller voter list is empty".into(),
        ));
    }
    Ok(voters)
}

/// The canonical text of a voter list (sorted by id).
pub fn format_voters(voters: &BTreeMap<u64, SocketAddr>) -> String {
    voters
        .iter()
        .map(|(id, address)| format!("{id}@{address}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voters_parse_and_print_canonically() {
        let voters = parse_voters("2@127.0.0.1:12093, 1@127.0.0.1:11093").unwrap();
        assert_eq!(
            format_voters(&voters),
            "1@127.0.0.1:11093,2@127.0.0.1:12093"
        );
    }

    #[test]
    fn bad_voter_lists_are_refused() {
        for (text, why) in [
            ("", "empty"),
            ("1@127.0.0.1", "not ID@HOST:PORT"),
            ("x@127.0.0.1:1", "not ID@HOST:PORT"),
            ("1@127.0.0.1:1,1@127.0.0.1:2", "listed twice"),
            ("1@127.0.0.1:1,2@127.0.0.1:1", "two voters"),
        ] {
            let error = parse_voters(text).unwrap_err().to_string();
            assert!(error.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_node_must_be_a_voter_at_its_own_address() {
        let voters = parse_voters("1@127.0.0.1:11093,2@127.0.0.1:12093").unwrap();
        let listen = "127.0.0.1:11093".parse().unwrap();
        assert!(ClusterConfig::new(1, listen, voters.clone(), "d".into()).is_ok());
        let error = ClusterConfig::new(3, listen, voters.clone(), "d".into()).unwrap_err();
        assert!(error.to_string().contains("does not include"), "{error}");
        let error = ClusterConfig::new(2, listen, voters, "d".into()).unwrap_err();
        assert!(error.to_string().contains("--controller-listen"), "{error}");
    }
}
