"""Kafka wire protocol by hand, for tests that must control every byte.

Only the few request/response versions the tests need, encoded with
struct.pack straight from the protocol spec
(https://kafka.apache.org/protocol.html):

* a request is `int32 size` + header + body; header v1 is
  `api_key int16, api_version int16, correlation_id int32, client_id
  nullable-string`; header v2 (flexible versions) adds tagged fields;
* a response is `int32 size` + `correlation_id int32` (+ tagged fields for
  flexible versions, except ApiVersions, whose response header is always
  v0) + body.
"""

from __future__ import annotations

import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_LIST_OFFSETS = 2
API_METADATA = 3
API_API_VERSIONS = 18
API_CREATE_TOPICS = 19

ERROR_NONE = 0
ERROR_OFFSET_OUT_OF_RANGE = 1
ERROR_UNKNOWN_TOPIC_OR_PARTITION = 3
ERROR_UNSUPPORTED_VERSION = 35


# --- encoding ---------------------------------------------------------------

def int8(v: int) -> bytes:
    return struct.pack(">b", v)


def int16(v: int) -> bytes:
    return struct.pack(">h", v)


def int32(v: int) -> bytes:
    return struct.pack(">i", v)


def int64(v: int) -> bytes:
    return struct.pack(">q", v)


def string(s: str | None) -> bytes:
    if s is None:
        return int16(-1)
    raw = s.encode()
    return int16(len(raw)) + raw


def uvarint(v: int) -> bytes:
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def compact_string(s: str | None) -> bytes:
    if s is None:
        return uvarint(0)
    raw = s.encode()
    return uvarint(len(raw) + 1) + raw


def array(items, encode) -> bytes:
    if items is None:
        return int32(-1)
    return int32(len(items)) + b"".join(encode(item) for item in items)


NO_TAGGED_FIELDS = uvarint(0)


def request_header(api_key, api_version, correlation_id, client_id="weir-tests", flexible=False):
    header = int16(api_key) + int16(api_version) + int32(correlation_id) + string(client_id)
    if flexible:
        header += NO_TAGGED_FIELDS
    return header


def frame(payload: bytes) -> bytes:
    return int32(len(payload)) + payload


# --- decoding ---------------------------------------------------------------

class Reader:
    """Reads big-endian fields off a response body; `done()` checks nothing is left."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise AssertionError(
                f"response truncated: need {n} bytes at {self.pos}, have {len(self.data) - self.pos}"
            )
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return struct.unpack(">b", self._take(1))[0]

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def uvarint(self) -> int:
        shift = value = 0
        while True:
            byte = self._take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7

    def string(self) -> str | None:
        n = self.int16()
        return None if n < 0 else self._take(n).decode()

    def compact_string(self) -> str | None:
        n = self.uvarint()
        return None if n == 0 else self._take(n - 1).decode()

    def bytes_(self) -> bytes | None:
        n = self.int32()
        return None if n < 0 else self._take(n)

    def array(self, decode) -> list | None:
        n = self.int32()
        return None if n < 0 else [decode(self) for _ in range(n)]

    def compact_array(self, decode) -> list | None:
        n = self.uvarint()
        return None if n == 0 else [decode(self) for _ in range(n - 1)]

    def tagged_fields(self) -> dict:
        fields = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            fields[tag] = self._take(self.uvarint())
        return fields

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def done(self) -> None:
        assert self.remaining() == 0, f"{self.remaining()} unexpected trailing bytes in response"


# --- connection -------------------------------------------------------------

class Connection:
    """One raw TCP connection to the broker."""

    def __init__(self, broker, timeout: float = 10.0):
        self.sock = socket.create_connection((broker.host, broker.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.next_correlation_id = 1

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_request(self, api_key, api_version, body=b"", flexible=False, client_id="weir-tests"):
        """Send one framed request; returns its correlation id."""
        correlation_id = self.next_correlation_id
        self.next_correlation_id += 1
        header = request_header(api_key, api_version, correlation_id, client_id, flexible)
        self.send(frame(header + body))
        return correlation_id

    def _recv_exactly(self, n: int) -> bytes | None:
        chunks = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                return None if not chunks else b"".join(chunks)
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def read_frame(self, timeout: float = 10.0) -> bytes | None:
        """The next response payload (without its size), or None on EOF."""
        self.sock.settimeout(timeout)
        head = self._recv_exactly(4)
        if head is None:
            return None
        assert len(head) == 4, f"connection closed inside a response size ({head!r})"
        (size,) = struct.unpack(">i", head)
        assert 0 <= size <= 64 << 20, f"implausible response size {size}"
        payload = self._recv_exactly(size)
        assert payload is not None and len(payload) == size, "connection closed inside a response"
        return payload

    def response(self, correlation_id: int, flexible_header=False, timeout=10.0) -> Reader:
        """Read the next response, check its correlation id, return a Reader on its body."""
        payload = self.read_frame(timeout)
        assert payload is not None, "broker closed the connection instead of answering"
        reader = Reader(payload)
        got = reader.int32()
        assert got == correlation_id, f"correlation id {got}, expected {correlation_id}"
        if flexible_header:
            reader.tagged_fields()
        return reader

    def closed_by_peer(self, timeout: float = 10.0) -> tuple[bool, bytes]:
        """Wait up to `timeout` for the broker to close the connection.

        Returns (closed, bytes received before the close or the timeout).
        A reset counts as closed.
        """
        received = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(received)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, bytes(received)
            except (ConnectionResetError, BrokenPipeError):
                return True, bytes(received)
            if not chunk:
                return True, bytes(received)
            received += chunk


# --- ApiVersions ------------------------------------------------------------

def decode_api_versions(reader: Reader, version: int) -> dict:
    """ApiVersions response body, versions 0-3."""
    result = {"error_code": reader.int16()}
    if version >= 3:
        def key(r):
            entry = (r.int16(), r.int16(), r.int16())
            r.tagged_fields()
            return entry

        keys = reader.compact_array(key)
    else:
        keys = reader.array(lambda r: (r.int16(), r.int16(), r.int16()))
    result["api_keys"] = {k: (lo, hi) for k, lo, hi in keys or []}
    if version >= 1:
        result["throttle_time_ms"] = reader.int32()
    if version >= 3:
        reader.tagged_fields()
    reader.done()
    return result


def api_versions_v3_body(software="weir-tests", software_version="1.0") -> bytes:
    return compact_string(software) + compact_string(software_version) + NO_TAGGED_FIELDS


def api_versions(conn: Connection, version: int = 0) -> dict:
    body = api_versions_v3_body() if version >= 3 else b""
    correlation_id = conn.send_request(API_API_VERSIONS, version, body, flexible=version >= 3)
    # ApiVersions responses always have header v0, even when flexible.
    return decode_api_versions(conn.response(correlation_id), version)


# --- Metadata v4 ------------------------------------------------------------

def metadata_v4_body(topics, allow_auto_topic_creation: bool) -> bytes:
    return array(topics, string) + int8(1 if allow_auto_topic_creation else 0)


def metadata_v4(conn: Connection, topics, allow_auto_topic_creation: bool) -> dict:
    correlation_id = conn.send_request(API_METADATA, 4, metadata_v4_body(topics, allow_auto_topic_creation))
    return decode_metadata_v4(conn.response(correlation_id))


def decode_metadata_v4(r: Reader) -> dict:
    result = {"throttle_time_ms": r.int32()}
    result["brokers"] = r.array(lambda r: (r.int32(), r.string(), r.int32(), r.string()))
    result["cluster_id"] = r.string()
    result["controller_id"] = r.int32()

    def partition(r):
        return {
            "error_code": r.int16(),
            "partition": r.int32(),
            "leader": r.int32(),
            "replicas": r.array(lambda r: r.int32()),
            "isr": r.array(lambda r: r.int32()),
        }

    def topic(r):
        return {
            "error_code": r.int16(),
            "name": r.string(),
            "is_internal": bool(r.int8()),
            "partitions": r.array(partition),
        }

    result["topics"] = {t["name"]: t for t in r.array(topic)}
    r.done()
    return result


# --- Fetch v4 ---------------------------------------------------------------

def fetch_v4_body(topic, partition, offset, max_wait_ms=100, min_bytes=0, max_bytes=1 << 20, read_committed=False):
    partitions = int32(1) + int32(partition) + int64(offset) + int32(max_bytes)
    topics = int32(1) + string(topic) + partitions
    return (
        int32(-1)  # replica_id: a consumer
        + int32(max_wait_ms)
        + int32(min_bytes)
        + int32(max_bytes)
        + int8(1 if read_committed else 0)  # isolation_level
        + topics
    )


def fetch_v4(conn: Connection, topic: str, partition: int, offset: int, **kwargs) -> dict:
    """One-partition Fetch v4; returns that partition's answer."""
    correlation_id = conn.send_request(API_FETCH, 4, fetch_v4_body(topic, partition, offset, **kwargs))
    r = conn.response(correlation_id)
    r.int32()  # throttle_time_ms

    def partition_response(r):
        return {
            "partition": r.int32(),
            "error_code": r.int16(),
            "high_watermark": r.int64(),
            "last_stable_offset": r.int64(),
            "aborted_transactions": r.array(lambda r: (r.int64(), r.int64())),
            "records": r.bytes_(),
        }

    topics = r.array(lambda r: (r.string(), r.array(partition_response)))
    r.done()
    assert len(topics) == 1 and topics[0][0] == topic, f"fetch answered for {topics!r}"
    partitions = topics[0][1]
    assert len(partitions) == 1 and partitions[0]["partition"] == partition, partitions
    return partitions[0]


# --- RecordBatch v2 and Produce v3 -----------------------------------------

def _crc32c_table():
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def varint(v: int) -> bytes:
    """Zigzag-encoded signed varint, as in record fields."""
    return uvarint((v << 1) ^ (v >> 63))


def _varbytes(data: bytes | None) -> bytes:
    return varint(-1) if data is None else varint(len(data)) + data


def encode_record(offset_delta, timestamp_delta, key, value, headers=()) -> bytes:
    body = (
        int8(0)  # attributes
        + varint(timestamp_delta)
        + varint(offset_delta)
        + _varbytes(key)
        + _varbytes(value)
        + varint(len(headers))
        + b"".join(varint(len(k.encode())) + k.encode() + _varbytes(v) for k, v in headers)
    )
    return varint(len(body)) + body


def record_batch(records, base_timestamp: int) -> bytes:
    """An uncompressed RecordBatch v2 holding `records`, a list of
    (key, value, headers) tuples, one millisecond apart."""
    encoded = b"".join(
        encode_record(i, i, key, value, headers) for i, (key, value, headers) in enumerate(records)
    )
    after_crc = (
        int16(0)  # attributes: no compression, CreateTime
        + int32(len(records) - 1)  # lastOffsetDelta
        + int64(base_timestamp)
        + int64(base_timestamp + len(records) - 1)  # maxTimestamp
        + int64(-1)  # producerId
        + int16(-1)  # producerEpoch
        + int32(-1)  # baseSequence
        + int32(len(records))
        + encoded
    )
    after_length = int32(-1) + int8(2) + struct.pack(">I", crc32c(after_crc)) + after_crc
    return int64(0) + int32(len(after_length)) + after_length


def produce_v3_body(topic, partition, records: bytes | None, acks=-1, timeout_ms=10_000) -> bytes:
    partitions = int32(1) + int32(partition) + (int32(-1) if records is None else int32(len(records)) + records)
    return string(None) + int16(acks) + int32(timeout_ms) + int32(1) + string(topic) + partitions


def produce_v3(conn: Connection, topic: str, partition: int, records: bytes | None) -> tuple[int, int]:
    """One-partition Produce v3 with acks=all; returns (error_code, base_offset)."""
    correlation_id = conn.send_request(API_PRODUCE, 3, produce_v3_body(topic, partition, records))
    r = conn.response(correlation_id)

    def partition_response(r):
        return (r.int32(), r.int16(), r.int64(), r.int64())

    topics = r.array(lambda r: (r.string(), r.array(partition_response)))
    r.int32()  # throttle_time_ms
    r.done()
    [(name, [(index, error_code, base_offset, _log_append_time)])] = topics
    assert (name, index) == (topic, partition)
    return error_code, base_offset


# --- reading stored batches ---------------------------------------------------

def _zigzag(reader: Reader) -> int:
    raw = reader.uvarint()
    return (raw >> 1) ^ -(raw & 1)


def _varbytes_read(reader: Reader) -> bytes | None:
    n = _zigzag(reader)
    return None if n < 0 else reader._take(n)


def decode_batches(data: bytes) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every record in uncompressed RecordBatch v2
    bytes, checking each batch's CRC-32C; a partial batch at the end (a fetch
    may end inside one) is ignored."""
    records = []
    position = 0
    while position + 61 <= len(data):
        base_offset, length = struct.unpack(">qi", data[position:position + 12])
        end = position + 12 + length
        if end > len(data):
            break
        batch = data[position:end]
        (stored_crc,) = struct.unpack(">I", batch[17:21])
        assert crc32c(batch[21:]) == stored_crc, f"batch at offset {base_offset} fails its CRC"
        reader = Reader(batch[57:])
        for _ in range(reader.int32()):
            reader.uvarint()  # record length, as a zigzag varint; fields follow
            reader.int8()  # attributes
            _zigzag(reader)  # timestamp delta
            offset_delta = _zigzag(reader)
            key = _varbytes_read(reader)
            value = _varbytes_read(reader)
            for _ in range(_zigzag(reader)):
                reader._take(_zigzag(reader))
                _varbytes_read(reader)
            records.append((base_offset + offset_delta, key, value))
        position = end
    return records
