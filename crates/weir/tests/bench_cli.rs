//! `weir bench` against the real `weir server`: a tiny produce, consume and
//! end-to-end run over the Kafka protocol, checking the JSON each prints.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// A `weir server` on a free port and a temporary data directory, killed
/// when dropped.
struct Server {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let data = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new(WEIR)
            .args(["server", "--kafka-listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start weir server");
        let server = Server {
            child,
            port,
            _data: data,
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "weir did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn bench(args: &[&str]) -> Output {
    Command::new(WEIR)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run weir bench")
}

fn bench_json(args: &[&str]) -> Value {
    let output = bench(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "weir bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|error| panic!("not JSON ({error}): {stdout}"))
}

fn assert_shape(report: &Value, workload: &str, messages: u64) {
    assert_eq!(report["workload"], workload, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    assert_eq!(report["messages"], messages, "{report}");
    assert_eq!(report["bytes"], messages * 100, "{report}");
    assert!(
        report["duration_s"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    assert!(
        report["rate_msgs_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    assert!(
        report["rate_bytes_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    assert!(report["parameters"].is_object(), "{report}");
    let broker = &report["broker"];
    assert!(broker["cpu_s"].as_f64().is_some(), "{report}");
    assert!(broker["cpu_us_per_msg"].as_f64().is_some(), "{report}");
    assert!(
        broker["rss_peak_bytes"].as_u64().is_some_and(|rss| rss > 0),
        "{report}"
    );
}

fn assert_latency(report: &Value) {
    let latency = &report["latency_us"];
    for key in ["p50", "p90", "p99", "p999", "p9999", "max", "count"] {
        assert!(latency[key].is_u64(), "latency_us.{key} in {report}");
    }
    assert!(
        latency["p50"].as_u64() <= latency["max"].as_u64(),
        "{report}"
    );
}

#[test]
fn produce_consume_and_e2e_against_weir() {
    let server = Server::start();
    let address = server.address();
    let pid = server.child.id().to_string();
    let common = [
        "--broker",
        &address,
        "--json",
        "--no-progress",
        "--broker-pid",
        &pid,
        "--idle-timeout-s",
        "20",
    ];

    let mut produce = vec![
        "kafka",
        "produce",
        "--topic",
        "t",
        "--partitions",
        "2",
        "-n",
        "2000",
    ];
    produce.extend(common);
    let produced = bench_json(&produce);
    assert_shape(&produced, "kafka produce", 2000);
    assert_latency(&produced);
    assert_eq!(produced["mode"], "closed-loop");
    assert_eq!(produced["latency_us"]["count"], 2000);

    let mut consume = vec![
        "kafka",
        "consume",
        "--topic",
        "t",
        "--size",
        "100",
        "--consumers",
        "2",
    ];
    consume.extend(common);
    let consumed = bench_json(&consume);
    assert_shape(&consumed, "kafka consume", 2000);
    assert_eq!(consumed["details"]["duplicates"], 0, "{consumed}");
    assert_eq!(consumed["details"]["missing"], 0, "{consumed}");
    assert_eq!(
        consumed["details"]["warmup_messages_skipped"], 2,
        "{consumed}"
    );

    let mut e2e = vec![
        "kafka",
        "e2e",
        "--topic",
        "e",
        "-n",
        "300",
        "--rate",
        "1000",
        "--linger-ms",
        "1",
        "--fetch-wait-ms",
        "10",
    ];
    e2e.extend(common);
    let end_to_end = bench_json(&e2e);
    assert_shape(&end_to_end, "kafka e2e", 300);
    assert_latency(&end_to_end);
    assert_eq!(end_to_end["mode"], "open-loop");
    // 300 messages at 1,000/s take at least 0.3 s from the first schedule.
    assert!(
        end_to_end["duration_s"].as_f64().is_some_and(|s| s >= 0.29),
        "{end_to_end}"
    );
}

#[test]
fn bad_arguments_and_missing_brokers_fail_clearly() {
    let too_small = bench(&["kafka", "produce", "--size", "8", "--no-progress"]);
    assert_eq!(too_small.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&too_small.stderr).contains("--size"));

    let unknown = bench(&["kafka", "produce", "--acks", "2"]);
    assert!(!unknown.status.success());

    let port = free_port().to_string();
    let address = format!("127.0.0.1:{port}");
    let nobody = bench(&[
        "amqp",
        "publish",
        "--broker",
        &address,
        "-n",
        "1",
        "--no-progress",
    ]);
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("cannot connect to AMQP broker"));
    assert!(Path::new(WEIR).exists());
}
