//! `weir produce <topic>`: stdin lines (or a file's) as records, in batches.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::client::encode;
use super::record::{encode_base64, parse_pairs};
use super::table::Table;
use super::{parse, print, print_json, progress, ApiOptions, CliError, Client};

/// Examples shown by `weir produce --help`.
pub const EXAMPLES: &str = "Examples:
  echo hello | weir produce orders
  weir produce orders --file orders.txt                       # one record per line
  printf 'user1:clicked\\nuser2:left\\n' | weir produce events --key-separator :
  weir produce events --key user1 --header source=cli --header trace=abc < lines.txt
  weir produce orders --partition 3 --output json < lines.txt

Each line (without its newline) is one record's value, byte for byte (lines that
are not UTF-8 are sent base64-encoded and stored as they were read).";

/// Most records per POST (the API's batch limit).
const BATCH_RECORDS_MAX: usize = 500;
/// Most value and key bytes per POST, so that one request stays well under
/// the broker's default max.message.bytes (1 MiB); a longer line goes alone.
const BATCH_BYTES_MAX: usize = 512 << 10;

/// Arguments of `weir produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    api: ApiOptions,
    /// Topic to produce to.
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// Split each line at the first SEPARATOR into key and value (e.g. `:`).
    #[arg(long, value_name = "SEPARATOR")]
    key_separator: Option<String>,
    /// The same key for every record.
    #[arg(long, conflicts_with = "key_separator")]
    key: Option<String>,
    /// A header on every record (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Partition for every record [default: the broker picks, by key].
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Records per request (at most 500).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    batch_records: u16,
}

/// One entry of the API's answer to a produce.
#[derive(Debug, Deserialize)]
struct Produced {
    partition: i32,
    offset: i64,
}

/// First offset, last offset and count of one partition's produced records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Span {
    first_offset: i64,
    last_offset: i64,
    records: u64,
}

/// Where records went, per partition.
type Summary = BTreeMap<i32, Span>;

fn add(summary: &mut Summary, produced: &[Produced]) {
    for record in produced {
        let span = summary.entry(record.partition).or_insert(Span {
            first_offset: record.offset,
            last_offset: record.offset,
            records: 0,
        });
        span.first_offset = span.first_offset.min(record.offset);
        span.last_offset = span.last_offset.max(record.offset);
        span.records += 1;
    }
}

/// Turns lines into API records according to the options.
#[derive(Debug)]
struct LineParser {
    key_separator: Option<String>,
    key: Option<String>,
    headers: Map<String, Value>,
    partition: Option<i32>,
}

impl LineParser {
    /// The record for `line` (number `line_number`, from 1, for messages).
    /// Key and value go as text, or both as base64 when either is not UTF-8.
    fn record(&self, line: &[u8], line_number: u64) -> Result<Value, CliError> {
        let (key, value) = match &self.key_separator {
            Some(separator) => {
                let (key, value) = split_once(line, separator.as_bytes()).ok_or_else(|| {
                    CliError::Usage(format!(
                        "line {line_number} has no key separator {separator:?}; \
                         write key{separator}value on every line, or drop --key-separator"
                    ))
                })?;
                (Some(key), value)
            }
            None => (self.key.as_deref().map(str::as_bytes), line),
        };
        let text = |bytes: &[u8]| std::str::from_utf8(bytes).map(str::to_owned);
        let mut record = match (key.map(text).transpose(), text(value)) {
            (Ok(key), Ok(value)) => json!({ "key": key, "value": value }),
            _ => json!({
                "key": key.map(encode_base64),
                "value": encode_base64(value),
                "encoding": "base64",
            }),
        };
        if key.is_none() {
            if let Value::Object(object) = &mut record {
                object.remove("key");
            }
        }
        if !self.headers.is_empty() {
            record["headers"] = Value::Object(self.headers.clone());
        }
        if let Some(partition) = self.partition {
            record["partition"] = json!(partition);
        }
        Ok(record)
    }
}

/// Runs `weir produce`.
///
/// # Errors
///
/// See [`CliError`]; a refusal says which lines were already produced.
pub fn run(args: ProduceArgs) -> Result<(), CliError> {
    let client = args.api.client()?;
    let headers = parse_pairs(&args.headers, "--header")
        .map_err(CliError::Usage)?
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    let parser = LineParser {
        key_separator: args.key_separator.filter(|separator| !separator.is_empty()),
        key: args.key,
        headers,
        partition: args.partition,
    };
    let (reader, bar): (Box<dyn BufRead>, _) = match &args.file {
        Some(path) => {
            let file = File::open(path).map_err(|error| {
                CliError::Usage(format!("cannot open --file {}: {error}", path.display()))
            })?;
            let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
            (
                Box::new(BufReader::with_capacity(1 << 20, file)),
                progress::bar(size, &format!("producing to {}", args.topic), true),
            )
        }
        None => (
            Box::new(BufReader::with_capacity(1 << 20, std::io::stdin())),
            progress::spinner(&format!("records produced to {}", args.topic)),
        ),
    };
    let path = format!("/api/topics/{}/records", encode(&args.topic));
    let mut sender = Sender {
        client: &client,
        path: &path,
        topic: &args.topic,
        summary: Summary::new(),
        produced: 0,
    };
    let by_bytes = args.file.is_some();
    let result = read_batches(
        reader,
        &parser,
        usize::from(args.batch_records),
        |batch, bytes| {
            sender.send(batch)?;
            bar.inc(if by_bytes { bytes } else { batch.len() as u64 });
            Ok(())
        },
    );
    bar.finish_and_clear();
    result?;
    let Sender {
        summary, produced, ..
    } = sender;
    if args.api.json() {
        let partitions: Vec<Value> = summary
            .iter()
            .map(|(partition, span)| {
                json!({
                    "partition": partition,
                    "first_offset": span.first_offset,
                    "last_offset": span.last_offset,
                    "records": span.records,
                })
            })
            .collect();
        return print_json(
            &json!({ "topic": args.topic, "produced": produced, "partitions": partitions }),
        );
    }
    print(&render(&args.topic, produced, &summary))
}

/// Sends batches and keeps count of what the broker took.
struct Sender<'a> {
    client: &'a Client,
    path: &'a str,
    topic: &'a str,
    summary: Summary,
    produced: u64,
}

impl Sender<'_> {
    fn send(&mut self, batch: &[Value]) -> Result<(), CliError> {
        let answer = self
            .client
            .call("POST", self.path, Some(&json!({ "records": batch })))
            .map_err(|error| {
                let resume = if self.produced > 0 {
                    format!(
                        "; the first {} lines were produced, resume with `tail -n +{}`",
                        self.produced,
                        self.produced + 1
                    )
                } else {
                    String::new()
                };
                error.hint_for(
                    404,
                    format!(
                        "create the topic with `weir topic create {}` (or enable auto-create){resume}",
                        self.topic
                    ),
                )
                .hint_for(400, format!("check --partition and the record sizes{resume}"))
            })?;
        let produced: Vec<Produced> = parse(answer, "POST /api/topics/{name}/records")?;
        if produced.len() != batch.len() {
            return Err(CliError::BadAnswer(format!(
                "the broker acknowledged {} of {} records",
                produced.len(),
                batch.len()
            )));
        }
        add(&mut self.summary, &produced);
        self.produced += produced.len() as u64;
        Ok(())
    }
}

/// `bytes` split at the first `separator`.
fn split_once<'a>(bytes: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let position = bytes
        .windows(separator.len())
        .position(|window| window == separator)?;
    Some((&bytes[..position], &bytes[position + separator.len()..]))
}

/// Reads `reader` to the end and hands batches of records (with the input
/// bytes they came from) to `send`.
fn read_batches(
    mut reader: impl BufRead,
    parser: &LineParser,
    batch_records: usize,
    mut send: impl FnMut(&[Value], u64) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let batch_records = batch_records.clamp(1, BATCH_RECORDS_MAX);
    let mut batch = Vec::with_capacity(batch_records);
    let (mut batch_bytes, mut input_bytes) = (0, 0);
    let mut line = Vec::new();
    let mut line_number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|error| CliError::Local(format!("cannot read the input: {error}")))?;
        if read == 0 {
            break;
        }
        line_number += 1;
        input_bytes += read as u64;
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if !batch.is_empty() && batch_bytes + line.len() > BATCH_BYTES_MAX {
            send(&batch, input_bytes - read as u64)?;
            batch.clear();
            batch_bytes = 0;
            input_bytes = read as u64;
        }
        batch.push(parser.record(&line, line_number)?);
        batch_bytes += line.len();
        if batch.len() >= batch_records {
            send(&batch, input_bytes)?;
            batch.clear();
            batch_bytes = 0;
            input_bytes = 0;
        }
    }
    if !batch.is_empty() {
        send(&batch, input_bytes)?;
    }
    Ok(())
}

fn render(topic: &str, produced: u64, summary: &Summary) -> String {
    let mut text = format!("produced {produced} records to {topic}\n");
    if !summary.is_empty() {
        let mut table = Table::new(&[">PARTITION", ">RECORDS", ">FIRST-OFFSET", ">LAST-OFFSET"]);
        for (partition, span) in summary {
            table.row(vec![
                partition.to_string(),
                span.records.to_string(),
                span.first_offset.to_string(),
                span.last_offset.to_string(),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parser(key_separator: Option<&str>) -> LineParser {
        LineParser {
            key_separator: key_separator.map(str::to_owned),
            key: None,
            headers: Map::new(),
            partition: None,
        }
    }

    fn batches(
        input: &[u8],
        parser: &LineParser,
        size: usize,
    ) -> Result<Vec<(Vec<Value>, u64)>, CliError> {
        let mut sent = Vec::new();
        read_batches(input, parser, size, |batch, bytes| {
            sent.push((batch.to_vec(), bytes));
            Ok(())
        })?;
        Ok(sent)
    }

    #[test]
    fn lines_become_records_byte_for_byte() {
        let sent = batches(b"a\n\nc \r\n last", &parser(None), 500).unwrap();
        assert_eq!(sent.len(), 1);
        let values: Vec<&str> = sent[0]
            .0
            .iter()
            .map(|record| record["value"].as_str().unwrap())
            .collect();
        assert_eq!(values, ["a", "", "c \r", " last"]);
        assert_eq!(sent[0].1, 12);
    }

    #[test]
    fn batches_of_at_most_the_batch_size() {
        let input: String = (0..1201).map(|index| format!("{index}\n")).collect();
        let sent = batches(input.as_bytes(), &parser(None), 500).unwrap();
        let sizes: Vec<usize> = sent.iter().map(|(batch, _)| batch.len()).collect();
        assert_eq!(sizes, [500, 500, 201]);
        assert_eq!(
            sent.iter().map(|(_, bytes)| bytes).sum::<u64>(),
            input.len() as u64
        );
        assert_eq!(sent[2].0[200]["value"], "1200");
    }

    #[test]
    fn large_lines_split_batches_by_bytes() {
        let line = "x".repeat(200 << 10);
        let input = format!("{line}\n{line}\n{line}\n");
        let sent = batches(input.as_bytes(), &parser(None), 500).unwrap();
        let sizes: Vec<usize> = sent.iter().map(|(batch, _)| batch.len()).collect();
        assert_eq!(sizes, [2, 1]);
    }

    #[test]
    fn keys_headers_and_partitions() {
        let mut headers = Map::new();
        headers.insert("h".into(), json!("v"));
        let parser = LineParser {
            key_separator: Some("::".into()),
            key: None,
            headers,
            partition: Some(2),
        };
        let record = parser.record(b"k::v::w", 1).unwrap();
        assert_eq!(
            record,
            json!({"key": "k", "value": "v::w", "headers": {"h": "v"}, "partition": 2})
        );
        let error = parser.record(b"novalue", 7).unwrap_err();
        assert!(
            error.to_string().contains("line 7 has no key separator"),
            "{error}"
        );
        let fixed = LineParser {
            key: Some("K".into()),
            ..self::parser(None)
        };
        assert_eq!(
            fixed.record(b"v", 1).unwrap(),
            json!({"key": "K", "value": "v"})
        );
    }

    #[test]
    fn sends_lines_that_are_not_utf8_as_base64() {
        let sent = batches(b"ok\n\xff\x00\n", &parser(None), 500).unwrap();
        assert_eq!(sent[0].0[0], json!({"value": "ok"}));
        assert_eq!(sent[0].0[1], json!({"value": "/wA=", "encoding": "base64"}));
        let record = parser(Some(":")).record(b"k\xff:v", 1).unwrap();
        assert_eq!(
            record,
            json!({"key": "a/8=", "value": "dg==", "encoding": "base64"})
        );
    }

    #[test]
    fn summarises_offsets_per_partition() {
        let mut summary = Summary::new();
        add(
            &mut summary,
            &[
                Produced {
                    partition: 1,
                    offset: 5,
                },
                Produced {
                    partition: 0,
                    offset: 9,
                },
            ],
        );
        add(
            &mut summary,
            &[Produced {
                partition: 1,
                offset: 6,
            }],
        );
        assert_eq!(
            summary[&1],
            Span {
                first_offset: 5,
                last_offset: 6,
                records: 2
            }
        );
        assert_eq!(
            render("t", 3, &summary),
            "produced 3 records to t\nPARTITION  RECORDS  FIRST-OFFSET  LAST-OFFSET\n        0        1             9            9\n        1        2             5            6\n"
        );
    }
}
