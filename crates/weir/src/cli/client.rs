//! A small blocking HTTP/1.1 client for Weir's HTTP API.
//!
//! The API is plain HTTP on loopback, so a hand-written client over
//! `TcpStream` (one connection per request, `Connection: close`) is enough and
//! keeps the binary free of an HTTP stack it would use for nothing else.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

use super::error::CliError;

/// How long connecting to the API may take before the broker counts as unreachable.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long the API may stay silent while answering one request.
const READ_TIMEOUT_MS: u64 = 120_000;
/// Largest response body accepted; a larger one is refused before it is buffered.
const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// Largest status line or header line accepted.
const HEADER_LINE_BYTES_MAX: usize = 64 << 10;
/// Most header lines accepted in one response.
const HEADERS_MAX: usize = 200;

/// The HTTP API of one broker, e.g. `http://127.0.0.1:15672`.
#[derive(Debug, Clone)]
pub struct Client {
    /// The URL as the operator gave it, for messages.
    api: String,
    host: String,
    port: u16,
    /// Path prefix of the URL without its trailing `/` (usually empty).
    prefix: String,
}

/// One HTTP response: status and body bytes.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl Client {
    /// A client for the API at `api` (`http://host[:port][/prefix]`).
    ///
    /// # Errors
    ///
    /// [`CliError::Usage`] when the URL is not an `http://` URL.
    pub fn new(api: &str) -> Result<Self, CliError> {
        let rest = api.strip_prefix("http://").ok_or_else(|| {
            CliError::Usage(format!(
                "--api {api:?} is not an http:// URL; pass e.g. --api http://127.0.0.1:15672"
            ))
        })?;
        let (authority, prefix) = match rest.find('/') {
            Some(slash) => (&rest[..slash], rest[slash..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| {
            CliError::Usage(format!(
                "--api {api:?} has no valid host[:port]; pass e.g. --api http://127.0.0.1:15672"
            ))
        })?;
        Ok(Client {
            api: api.to_owned(),
            host,
            port,
            prefix: prefix.to_owned(),
        })
    }

    /// `GET path` and the JSON it answers.
    ///
    /// # Errors
    ///
    /// See [`Client::call`].
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.call("GET", path, None)
    }

    /// Sends `method path` with an optional JSON body and returns the JSON
    /// answer (`Value::Null` for an empty body, e.g. 204).
    ///
    /// # Errors
    ///
    /// [`CliError::Unreachable`] when the API cannot be reached,
    /// [`CliError::Refused`] for a 4xx/5xx answer (with the API's message),
    /// [`CliError::BadAnswer`] when the answer is not JSON.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let body_bytes = match body {
            Some(value) => Some(serde_json::to_vec(value).map_err(|error| {
                CliError::Usage(format!("cannot encode the request as JSON: {error}"))
            })?),
            None => None,
        };
        let response = self.request(method, path, body_bytes.as_deref())?;
        if response.status >= 400 {
            return Err(CliError::Refused {
                status: response.status,
                message: error_message(&response.body),
                hint: None,
            });
        }
        if response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&response.body).map_err(|error| {
            CliError::BadAnswer(format!(
                "{method} {path} answered with invalid JSON: {error}"
            ))
        })
    }

    /// Sends one request and reads the whole response.
    ///
    /// # Errors
    ///
    /// [`CliError::Unreachable`] when connecting, writing or reading fails,
    /// [`CliError::BadAnswer`] when the response is not HTTP/1.x.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, CliError> {
        let mut stream = self.connect()?;
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: weir-cli\r\n\
             Accept: application/json\r\nConnection: close\r\n",
            self.prefix, self.host, self.port
        );
        if let Some(body) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body.unwrap_or_default());
        stream
            .write_all(&request)
            .and_then(|()| stream.flush())
            .map_err(|error| self.unreachable(&error.to_string()))?;
        read_response(BufReader::new(stream)).map_err(|error| match error {
            ReadError::Io(error) => self.unreachable(&error.to_string()),
            ReadError::Malformed(message) => CliError::BadAnswer(format!(
                "{} answered {method} {path} with {message}",
                self.api
            )),
        })
    }

    fn connect(&self) -> Result<TcpStream, CliError> {
        let addresses = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|error| self.unreachable(&format!("cannot resolve {}: {error}", self.host)))?;
        let mut last_error = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, Duration::from_millis(CONNECT_TIMEOUT_MS)) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let timeout = Some(Duration::from_millis(READ_TIMEOUT_MS));
                    stream
                        .set_read_timeout(timeout)
                        .and_then(|()| stream.set_write_timeout(timeout))
                        .map_err(|error| self.unreachable(&error.to_string()))?;
                    return Ok(stream);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(self.unreachable(
            &last_error.map_or_else(|| "no address".to_owned(), |error| error.to_string()),
        ))
    }

    fn unreachable(&self, detail: &str) -> CliError {
        CliError::Unreachable {
            api: self.api.clone(),
            detail: detail.to_owned(),
        }
    }
}

/// `host:port`, `host` (port 80) or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(String, u16)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => 80,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((authority.to_owned(), 80)),
    }
}

/// The API's `{"error": "..."}` message, or the body as text.
fn error_message(body: &[u8]) -> String {
    if let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(body) {
        if let Some(Value::String(message)) = object.get("error") {
            return message.clone();
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        "no message".to_owned()
    } else {
        text.chars().take(500).collect()
    }
}

/// Why a response could not be read.
#[derive(Debug)]
enum ReadError {
    Io(std::io::Error),
    Malformed(String),
}

impl From<std::io::Error> for ReadError {
    fn from(error: std::io::Error) -> Self {
        ReadError::Io(error)
    }
}

fn malformed(message: impl Into<String>) -> ReadError {
    ReadError::Malformed(message.into())
}

/// Reads one response: status line, headers, then a body framed by
/// Content-Length, chunked encoding, or the end of the connection.
fn read_response(mut reader: impl BufRead) -> Result<Response, ReadError> {
    let status_line = read_line(&mut reader)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(malformed(format!(
            "a status line that is not HTTP/1.x: {status_line:?}"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed(format!("a bad status line: {status_line:?}")))?;
    let mut content_length = None;
    let mut chunked = false;
    for _ in 0..=HEADERS_MAX {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            let body = if status == 204 || status == 304 {
                Vec::new()
            } else if chunked {
                read_chunked(&mut reader)?
            } else if let Some(length) = content_length {
                read_exact_body(&mut reader, length)?
            } else {
                read_to_end(&mut reader)?
            };
            return Ok(Response { status, body });
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| malformed(format!("a bad header line: {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| malformed(format!("a bad Content-Length: {value:?}")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    Err(malformed(format!("more than {HEADERS_MAX} headers")))
}

/// One CRLF- (or LF-) terminated line without its terminator.
fn read_line(reader: &mut impl BufRead) -> Result<String, ReadError> {
    let mut line = Vec::new();
    let read = reader
        .take(HEADER_LINE_BYTES_MAX as u64 + 1)
        .read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        )));
    }
    if !line.ends_with(b"\n") {
        return Err(malformed(format!(
            "a line longer than {HEADER_LINE_BYTES_MAX} bytes"
        )));
    }
    line.pop();
    if line.ends_with(b"\r") {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| malformed("a header that is not UTF-8"))
}

fn read_exact_body(reader: &mut impl BufRead, length: usize) -> Result<Vec<u8>, ReadError> {
    if length > RESPONSE_BYTES_MAX {
        return Err(malformed(format!(
            "a body of {length} bytes (limit {RESPONSE_BYTES_MAX})"
        )));
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_to_end(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    reader
        .take(RESPONSE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut body)?;
    if body.len() > RESPONSE_BYTES_MAX {
        return Err(malformed(format!("a body over {RESPONSE_BYTES_MAX} bytes")));
    }
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| malformed(format!("a bad chunk size: {line:?}")))?;
        if size == 0 {
            // Trailers, up to the empty line.
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len().saturating_add(size) > RESPONSE_BYTES_MAX {
            return Err(malformed(format!("a body over {RESPONSE_BYTES_MAX} bytes")));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        if !read_line(reader)?.is_empty() {
            return Err(malformed("a chunk not followed by CRLF"));
        }
    }
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved
/// characters stay as they are), so `/` becomes `%2F`.
pub fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_urls() {
        let client = Client::new("http://127.0.0.1:15672").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("127.0.0.1", 15672));
        assert_eq!(client.prefix, "");
        let client = Client::new("http://broker/weir/").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("broker", 80));
        assert_eq!(client.prefix, "/weir");
        let client = Client::new("http://[::1]:8080").unwrap();
        assert_eq!((client.host.as_str(), client.port), ("::1", 8080));
        assert!(matches!(Client::new("https://x"), Err(CliError::Usage(_))));
        assert!(matches!(
            Client::new("http://x:notaport"),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(Client::new("http://"), Err(CliError::Usage(_))));
    }

    #[test]
    fn reads_content_length_chunked_and_eof_bodies() {
        let response =
            read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra"[..]).unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"{}"[..])
        );
        let response = read_response(
            &b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\n\r\n"[..],
        )
        .unwrap();
        assert_eq!(
            (response.status, response.body.as_slice()),
            (201, &b"[1,2]"[..])
        );
        let response = read_response(&b"HTTP/1.0 404 Not Found\n\n{\"error\":\"x\"}"[..]).unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(error_message(&response.body), "x");
        let response = read_response(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]).unwrap();
        assert!(response.body.is_empty());
    }

    #[test]
    fn refuses_malformed_responses() {
        assert!(matches!(
            read_response(&b"SSH-2.0\r\n\r\n"[..]),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"[..]),
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            read_response(&b"HTTP/1.1 200 OK\r\n"[..]),
            Err(ReadError::Io(_))
        ));
        assert!(matches!(
            read_response(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"[..]),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn error_messages_fall_back_to_text() {
        assert_eq!(
            error_message(b"{\"error\":\"topic x does not exist\"}"),
            "topic x does not exist"
        );
        assert_eq!(error_message(b"  plain text \n"), "plain text");
        assert_eq!(error_message(b""), "no message");
    }

    #[test]
    fn encodes_path_segments() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("a b/c~d.e-f_g"), "a%20b%2Fc~d.e-f_g");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
