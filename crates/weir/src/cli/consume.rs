//! `weir consume <topic>`: a topic's records to stdout, partition by
//! partition, through `GET /api/topics/{name}/records` (no consumer group:
//! nothing is committed).

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use super::client::encode;
use super::record::{Record, Template};
use super::{parse, time, topic, write_stdout, ApiOptions, CliError, Client};

/// Examples shown by `weir consume --help`.
pub const EXAMPLES: &str = "Examples:
  weir consume orders                                   # everything there is, then exit
  weir consume orders --from latest --follow            # new records as they come
  weir consume orders --partition 0 --from 1200 --limit 10
  weir consume orders --timestamp 2024-05-01T12:00:00Z
  weir consume orders --format '{partition}/{offset} {key}={value} [{headers}]'
  weir consume orders --output json | jq .value

Template fields: {topic} {partition} {offset} {timestamp} (epoch ms) {key} {value}
{headers} (name=value,...); \\n and \\t are a newline and a tab. Each record is
followed by a newline.";

/// Most records asked for per request.
const PAGE_RECORDS_MAX: u64 = 500;

/// Arguments of `weir consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    api: ApiOptions,
    /// Topic to read.
    topic: String,
    /// Where to start: earliest, latest, or an offset (per partition).
    #[arg(long, default_value = "earliest", value_parser = parse_start)]
    from: Start,
    /// Start at the first record at or after this time (RFC 3339 or epoch ms).
    #[arg(long, conflicts_with = "from", value_name = "TIME")]
    timestamp: Option<String>,
    /// Only this partition [default: all].
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Stop after this many records.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Keep polling for new records instead of stopping at the end.
    #[arg(long)]
    follow: bool,
    /// How often --follow asks for new records, in milliseconds.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..))]
    poll_interval_ms: u64,
    /// Output template for --output table (see below).
    #[arg(long, default_value = "{value}")]
    format: String,
}

/// The `--from` position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The log start of each partition.
    Earliest,
    /// The end of each partition: only records produced from now on.
    Latest,
    /// This offset in each partition.
    Offset(i64),
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        offset => offset
            .parse::<i64>()
            .ok()
            .filter(|offset| *offset >= 0)
            .map(Start::Offset)
            .ok_or_else(|| format!("{offset:?} is not earliest, latest or an offset (0 or more)")),
    }
}

/// Where reading one partition stands.
#[derive(Debug)]
struct Cursor {
    partition: i32,
    /// The query of the first request (`from=earliest`, `timestamp_ms=…`)
    /// until an offset is known.
    first_query: Option<String>,
    /// Next offset to read, once known.
    next_offset: i64,
    /// The high watermark when reading began: without --follow, the end.
    end_offset: i64,
    done: bool,
}

/// Runs `weir consume`.
///
/// # Errors
///
/// See [`CliError`].
pub fn run(args: ConsumeArgs) -> Result<(), CliError> {
    let template = Template::parse(&args.format).map_err(CliError::Usage)?;
    let timestamp_ms = args
        .timestamp
        .as_deref()
        .map(time::parse_timestamp_ms)
        .transpose()
        .map_err(|message| CliError::Usage(format!("--timestamp: {message}")))?;
    let client = args.api.client()?;
    let partitions = topic::partitions(&client, &args.topic)?;
    let mut cursors: Vec<Cursor> = Vec::new();
    for partition in &partitions {
        if args
            .partition
            .is_some_and(|wanted| wanted != partition.partition)
        {
            continue;
        }
        let (first_query, next_offset) = match (timestamp_ms, args.from) {
            (Some(timestamp_ms), _) => (Some(format!("timestamp_ms={timestamp_ms}")), 0),
            (None, Start::Earliest) => (Some("from=earliest".to_owned()), 0),
            (None, Start::Latest) => (None, partition.high_watermark),
            (None, Start::Offset(offset)) => (None, offset),
        };
        cursors.push(Cursor {
            partition: partition.partition,
            first_query,
            next_offset,
            end_offset: partition.high_watermark,
            done: false,
        });
    }
    if let (Some(wanted), true) = (args.partition, cursors.is_empty()) {
        return Err(CliError::Usage(format!(
            "topic {} has no partition {wanted} (it has {}); see `weir topic describe {}`",
            args.topic,
            partitions.len(),
            args.topic
        )));
    }
    let mut reader = Reader {
        client: &client,
        path: format!("/api/topics/{}/records", encode(&args.topic)),
        topic: &args.topic,
        template,
        json: args.api.json(),
        remaining: args.limit.unwrap_or(u64::MAX),
    };
    if args.follow {
        follow(
            &mut reader,
            &mut cursors,
            Duration::from_millis(args.poll_interval_ms),
        )
    } else {
        for cursor in &mut cursors {
            while !cursor.done && reader.remaining > 0 && !reader.poll(cursor, false)? {}
        }
        Ok(())
    }
}

/// Reads every partition in turn, sleeping when none had anything new.
fn follow(
    reader: &mut Reader<'_>,
    cursors: &mut [Cursor],
    interval: Duration,
) -> Result<(), CliError> {
    while reader.remaining > 0 {
        let mut any = false;
        for cursor in cursors.iter_mut() {
            if reader.remaining == 0 {
                break;
            }
            any |= !reader.poll(cursor, true)?;
        }
        if !any {
            std::thread::sleep(interval);
        }
    }
    Ok(())
}

/// Fetches pages of records and writes them out.
struct Reader<'a> {
    client: &'a Client,
    path: String,
    topic: &'a str,
    template: Template,
    json: bool,
    remaining: u64,
}

impl Reader<'_> {
    /// Reads one page of `cursor`'s partition and prints it. Returns whether
    /// the partition had nothing (more) to read; without `follow`, that
    /// also marks the cursor done, as does reaching the starting high watermark.
    fn poll(&mut self, cursor: &mut Cursor, follow: bool) -> Result<bool, CliError> {
        if !follow && cursor.first_query.is_none() && cursor.next_offset >= cursor.end_offset {
            cursor.done = true;
            return Ok(true);
        }
        let limit = self.remaining.min(PAGE_RECORDS_MAX);
        let position = cursor
            .first_query
            .clone()
            .unwrap_or_else(|| format!("offset={}", cursor.next_offset));
        let url = format!(
            "{}?partition={}&{position}&limit={limit}",
            self.path, cursor.partition
        );
        let value = self.client.get(&url).map_err(|error| {
            error.hint_for(
                404,
                "the topic is gone? list the topics with `weir topic list`",
            )
        })?;
        let Value::Array(items) = value else {
            return Err(CliError::BadAnswer(format!(
                "GET {url} answered with something other than a list"
            )));
        };
        let mut out = Vec::new();
        let mut printed = 0;
        for item in items {
            let record: Record = parse(item.clone(), "GET /api/topics/{name}/records")?;
            // Only forward progress counts: a record before the cursor was already printed.
            if cursor.first_query.is_none() && record.offset < cursor.next_offset {
                continue;
            }
            cursor.first_query = None;
            cursor.next_offset = record.offset + 1;
            self.render(item, &record, &mut out)?;
            printed += 1;
            self.remaining -= 1;
            if self.remaining == 0 {
                break;
            }
        }
        if printed == 0 && cursor.first_query.is_some() {
            // Nothing at or after the start: continue from the end as it was.
            cursor.first_query = None;
            cursor.next_offset = cursor.end_offset;
        }
        write_stdout(&out)?;
        let exhausted = printed == 0;
        if !follow && (exhausted || cursor.next_offset >= cursor.end_offset) {
            cursor.done = true;
        }
        Ok(exhausted)
    }

    fn render(&self, mut item: Value, record: &Record, out: &mut Vec<u8>) -> Result<(), CliError> {
        if self.json {
            if let Value::Object(object) = &mut item {
                object.insert("topic".into(), Value::String(self.topic.to_owned()));
            }
            serde_json::to_writer(&mut *out, &item)
                .map_err(|error| CliError::Local(format!("cannot encode JSON: {error}")))?;
        } else {
            self.template.render(self.topic, record, out);
        }
        out.push(b'\n');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_start_positions() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("42"), Ok(Start::Offset(42)));
        assert!(parse_start("-1")
            .unwrap_err()
            .contains("earliest, latest or an offset"));
        assert!(parse_start("soon").is_err());
    }
}
