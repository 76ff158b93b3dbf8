//! `weir cluster status`: the controller quorum and the nodes
//! (`GET /api/cluster`).

use clap::{Args, Subcommand};
use weir_cluster::ClusterStatus;

use super::{parse, print, print_json, table, ApiOptions, CliError};

/// Examples shown by `weir cluster --help`.
pub const EXAMPLES: &str = "Examples:
  weir cluster status
  weir cluster status --api http://127.0.0.1:12680 --output json";

/// Arguments of `weir cluster`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// The controller leader and every node, as the node asked knows them.
    Status {
        #[command(flatten)]
        api: ApiOptions,
    },
}

/// Runs `weir cluster …`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run(args: ClusterArgs) -> Result<(), CliError> {
    match args.command {
        ClusterCommand::Status { api } => {
            let value = api.client()?.get("/api/cluster")?;
            if api.json() {
                return print_json(&value);
            }
            let status: ClusterStatus = parse(value, "GET /api/cluster")?;
            print(&render(&status))
        }
    }
}

fn render(status: &ClusterStatus) -> String {
    let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let leader = match status.controller_leader {
        Some(leader) => format!("node {leader} (term {})", status.term),
        None => format!("none (term {}): no quorum", status.term),
    };
    let cluster_id = status
        .cluster_id
        .map_or_else(|| "not named yet".to_owned(), |id| id.to_string());
    let mut text = format!(
        "cluster:           {cluster_id}\ncontroller leader: {leader}\n\
         answered by:       node {} (metadata applied to index {})\n\n",
        status.node_id, status.applied_index
    );
    let mut nodes = table::Table::new(&["NODE", "STATE", "CONTROLLER", "KAFKA", "AMQP", "HTTP"]);
    for node in &status.nodes {
        let voter = status.voters.iter().find(|voter| voter.id == node.id);
        let role = match (voter, status.controller_leader == Some(node.id)) {
            (Some(_), true) => "leader",
            (Some(_), false) => "voter",
            (None, _) => "-",
        };
        nodes.row(vec![
            node.id.to_string(),
            if node.fenced { "fenced" } else { "active" }.to_owned(),
            role.to_owned(),
            or_dash(&node.kafka),
            or_dash(&node.amqp),
            or_dash(&node.http),
        ]);
    }
    for voter in &status.voters {
        if !status.nodes.iter().any(|node| node.id == voter.id) {
            let address = voter.address.clone();
            nodes.row(vec![
                voter.id.to_string(),
                "not registered".into(),
                format!("voter {address}"),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
    }
    text.push_str(&nodes.render());
    if !status.partitions.is_empty() {
        let under = status
            .partitions
            .iter()
            .filter(|p| p.under_replicated)
            .count();
        text.push_str(&format!(
            "\npartitions: {} ({under} under-replicated)\n",
            status.partitions.len()
        ));
        let ids = |ids: &[u64]| ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let mut partitions = table::Table::new(&[
            "TOPIC",
            "PARTITION",
            "LEADER",
            "EPOCH",
            "REPLICAS",
            "ISR",
            "STATE",
        ]);
        for partition in &status.partitions {
            let state = match (
                partition.leader,
                &partition.moving_to,
                partition.under_replicated,
            ) {
                (None, _, _) => "offline".to_owned(),
                (Some(_), Some(target), _) => format!("moving to {}", ids(target)),
                (Some(_), None, true) => "under-replicated".to_owned(),
                (Some(_), None, false) => "in sync".to_owned(),
            };
            partitions.row(vec![
                partition.topic.clone(),
                partition.partition.to_string(),
                partition
                    .leader
                    .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                partition.leader_epoch.to_string(),
                ids(&partition.replicas),
                ids(&partition.isr),
                state,
            ]);
        }
        text.push_str(&partitions.render());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_leader_nodes_and_unregistered_voters() {
        let status: ClusterStatus = serde_json::from_value(serde_json::json!({
            "node_id": 1, "cluster_id": null, "controller_leader": 2, "term": 3,
            "applied_index": 17,
            "voters": [{"id": 1, "address": "127.0.0.1:11093"},
                       {"id": 2, "address": "127.0.0.1:12093"},
                       {"id": 3, "address": "127.0.0.1:13093"}],
            "nodes": [
                {"id": 1, "kafka": "127.0.0.1:11092", "amqp": null, "http": null, "fenced": false},
                {"id": 2, "kafka": "127.0.0.1:12092", "amqp": null, "http": null, "fenced": true}
            ],
            "partitions": [
                {"topic": "orders", "partition": 0, "leader": 1, "leader_epoch": 2,
                 "replicas": [2, 1, 3], "isr": [1, 3], "under_replicated": true},
                {"topic": "orders", "partition": 1, "leader": null, "leader_epoch": 4,
                 "replicas": [2], "isr": [2], "under_replicated": false}
            ]
        }))
        .unwrap();
        let text = render(&status);
        assert!(
            text.contains("controller leader: node 2 (term 3)\n"),
            "{text}"
        );
        assert!(text.contains("not named yet"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        let row = |id: &str| {
            lines
                .iter()
                .find(|line| line.starts_with(id))
                .unwrap_or_else(|| panic!("no row {id}: {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(row("1")[..4], ["1", "active", "voter", "127.0.0.1:11092"]);
        assert_eq!(row("2")[..3], ["2", "fenced", "leader"]);
        assert_eq!(row("3")[..3], ["3", "not", "registered"]);
        assert!(
            text.contains("partitions: 2 (1 under-replicated)"),
            "{text}"
        );
        let row = |start: &str| {
            lines
                .iter()
                .find(|line| line.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start}: {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            row("orders  0"),
            ["orders", "0", "1", "2", "2,1,3", "1,3", "under-replicated"]
        );
        assert_eq!(row("orders  1")[2..], ["-", "4", "2", "2", "offline"]);
    }
}
