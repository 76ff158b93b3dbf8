//! The result of a run: a table for people, one JSON object for scripts.

use serde::Serialize;
use serde_json::Value;

use crate::histogram::LatencySummary;
use crate::procstat::BrokerCost;

/// What this client spent during the run.
#[derive(Clone, Debug, Serialize)]
pub struct ClientCost {
    /// CPU seconds of this process (all threads, librdkafka's included).
    pub cpu_s: f64,
    /// `cpu_s` per message, in microseconds.
    pub cpu_us_per_msg: Option<f64>,
}

/// The result of one workload run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// `kafka produce`, `amqp e2e`, …
    pub workload: String,
    /// Free text from `--label` (e.g. the broker's name).
    pub label: String,
    /// The broker address the run used.
    pub broker_address: String,
    /// `open-loop` (paced at `--rate`) or `closed-loop`.
    pub mode: String,
    /// Every argument of the run, by name.
    pub parameters: Value,
    /// True when every message was acknowledged or read, none lost or
    /// duplicated.
    pub complete: bool,
    /// Messages measured (acknowledged for producers, read for consumers).
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Measured time, from the first send (or assign) to the last
    /// acknowledgement (or message).
    pub duration_s: f64,
    /// `messages / duration_s`.
    pub rate_msgs_per_s: f64,
    /// `bytes / duration_s`.
    pub rate_bytes_per_s: f64,
    /// Latency percentiles in µs: of the acknowledgement (produce/publish)
    /// or end to end (e2e), from the scheduled send time in open loop.
    pub latency_us: Option<LatencySummary>,
    /// The broker's cost, with `--broker-pid`.
    pub broker: Option<BrokerCost>,
    /// This client's cost.
    pub client: ClientCost,
    /// Workload-specific checks and counters.
    pub details: Value,
    /// Print as JSON instead of a table.
    #[serde(skip)]
    pub json: bool,
}

impl Report {
    /// A report of `messages` messages and `bytes` bytes over `duration_s`.
    pub fn new(workload: &str, messages: u64, bytes: u64, duration_s: f64) -> Report {
        let seconds = duration_s.max(1e-9);
        Report {
            workload: workload.to_owned(),
            label: String::new(),
            broker_address: String::new(),
            mode: "closed-loop".to_owned(),
            parameters: Value::Null,
            complete: false,
            messages,
            bytes,
            duration_s,
            rate_msgs_per_s: messages as f64 / seconds,
            rate_bytes_per_s: bytes as f64 / seconds,
            latency_us: None,
            broker: None,
            client: ClientCost {
                cpu_s: 0.0,
                cpu_us_per_msg: None,
            },
            details: Value::Null,
            json: false,
        }
    }

    /// Sets the client's CPU seconds (and per message).
    pub fn set_client_cpu_s(&mut self, cpu_s: f64) {
        self.client = ClientCost {
            cpu_s,
            cpu_us_per_msg: (self.messages > 0).then(|| cpu_s / self.messages as f64 * 1e6),
        };
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }

    /// The report as a two-column table.
    pub fn to_table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            (
                "workload".into(),
                format!("{} ({})", self.workload, self.mode),
            ),
            ("broker".into(), self.broker_address.clone()),
            ("complete".into(), self.complete.to_string()),
            ("messages".into(), group_thousands(self.messages as f64)),
            ("duration s".into(), format!("{:.3}", self.duration_s)),
            ("rate msg/s".into(), group_thousands(self.rate_msgs_per_s)),
            (
                "rate MB/s".into(),
                format!("{:.1}", self.rate_bytes_per_s / 1e6),
            ),
        ];
        if let Some(latency) = &self.latency_us {
            rows.extend(latency_rows(latency));
        }
        if let Some(broker) = &self.broker {
            rows.extend(broker_rows(broker));
        }
        rows.push(("client CPU s".into(), format!("{:.2}", self.client.cpu_s)));
        if let Some(per_msg) = self.client.cpu_us_per_msg {
            rows.push(("client CPU µs/msg".into(), format!("{per_msg:.3}")));
        }
        render_table(&rows)
    }

    /// Prints the report on stdout as JSON or as a table.
    pub fn print(&self) {
        if self.json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.to_table());
            if let Some(details) = self.details.as_object() {
                let notes: Vec<String> = details
                    .iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect();
                println!("details: {}", notes.join(" "));
            }
        }
    }
}

fn latency_rows(latency: &LatencySummary) -> Vec<(String, String)> {
    let ms = |us: u64| format!("{:.3}", us as f64 / 1e3);
    vec![
        ("latency ms p50".into(), ms(latency.p50)),
        ("latency ms p90".into(), ms(latency.p90)),
        ("latency ms p99".into(), ms(latency.p99)),
        ("latency ms p99.9".into(), ms(latency.p999)),
        ("latency ms p99.99".into(), ms(latency.p9999)),
        ("latency ms max".into(), ms(latency.max)),
        (
            "latency samples".into(),
            group_thousands(latency.count as f64),
        ),
    ]
}

fn broker_rows(broker: &BrokerCost) -> Vec<(String, String)> {
    let mib = |bytes: u64| format!("{:.1}", bytes as f64 / (1024.0 * 1024.0));
    let mut rows = vec![("broker CPU s".into(), format!("{:.2}", broker.cpu_s))];
    if let Some(per_msg) = broker.cpu_us_per_msg {
        rows.push(("broker CPU µs/msg".into(), format!("{per_msg:.3}")));
    }
    rows.push(("broker RSS peak MiB".into(), mib(broker.rss_peak_bytes)));
    rows.push((
        "broker RSS start → end MiB".into(),
        format!(
            "{} → {}",
            mib(broker.rss_start_bytes),
            mib(broker.rss_end_bytes)
        ),
    ));
    rows
}

fn render_table(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(name, _)| name.chars().count())
        .max()
        .unwrap_or(0);
    rows.iter()
        .map(|(name, value)| format!("{name:<width$}  {value}\n"))
        .collect()
}

/// `1234567.8` → `1,234,568`.
pub fn group_thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 && digits != "0" {
        grouped.insert(0, '-');
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::LatencyHistogram;

    fn sample_report() -> Report {
        let mut report = Report::new("kafka produce", 1_000, 100_000, 2.0);
        report.parameters = serde_json::json!({"size_bytes": 100});
        let mut histogram = LatencyHistogram::new();
        histogram.record_us(250);
        report.latency_us = histogram.summary();
        report.set_client_cpu_s(0.5);
        report.complete = true;
        report
    }

    #[test]
    fn json_has_the_documented_shape() {
        let value: Value = serde_json::from_str(&sample_report().to_json()).expect("valid JSON");
        for key in [
            "workload",
            "parameters",
            "messages",
            "bytes",
            "duration_s",
            "rate_msgs_per_s",
            "rate_bytes_per_s",
            "latency_us",
            "broker",
            "client",
            "complete",
            "mode",
        ] {
            assert!(value.get(key).is_some(), "missing {key} in {value}");
        }
        assert_eq!(value["rate_msgs_per_s"], 500.0);
        assert_eq!(value["rate_bytes_per_s"], 50_000.0);
        for key in ["p50", "p90", "p99", "p999", "p9999", "max", "count"] {
            assert!(
                value["latency_us"][key].is_u64(),
                "latency_us.{key} in {value}"
            );
        }
        assert!(value["broker"].is_null());
        assert_eq!(value["client"]["cpu_us_per_msg"], 500.0);
        assert!(value.get("json").is_none());
    }

    #[test]
    fn table_lists_rates_and_latency() {
        let table = sample_report().to_table();
        assert!(table.contains("rate msg/s"), "{table}");
        assert!(table.contains("500"), "{table}");
        assert!(table.contains("latency ms p99.99"), "{table}");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(1_234_567.8), "1,234,568");
        assert_eq!(group_thousands(999.0), "999");
        assert_eq!(group_thousands(0.2), "0");
        assert_eq!(group_thousands(-1_000.0), "-1,000");
    }
}
