"""The history checker, the consumer-group checker and the transaction
checker on synthetic histories: each kind of violation is found, a clean
history passes, and writes (or commits, or transactions) with an unknown
outcome may or may not have taken effect. Also which outcome the
transactional producer records for which client errors. No broker and no
root needed."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from faults import txn_producer
from faults.checker import (
    CHANGED,
    DUPLICATED,
    FAILED_WRITE_SEEN,
    LOST,
    NEVER_WRITTEN,
    OFFSET_WENT_BACKWARDS,
    READ_TAKEN_BACK,
    REORDERED,
    assert_valid,
    check,
)
from faults.group_check import GROUP_GAP, GROUP_REWIND, check_group
from faults.group_member import read_events
from faults.history import FAILED, OK, UNKNOWN, History, Read, Write
from faults.kafka_client import outcome_of
from faults.txn_check import (
    ABORTED,
    ABORTED_TXN_SEEN,
    COMMITTED,
    TXN_LOST,
    TXN_PARTIAL,
    Transaction,
    check_transactions,
    transactions_from_events,
)


def sequential_writes(count: int, partitions: int = 2, process: str = "p0") -> list[Write]:
    """`count` acknowledged writes, one after the other in real time,
    round-robin over the partitions, each at the next offset of its partition."""
    writes = []
    next_offset = [0] * partitions
    for index in range(count):
        partition = index % partitions
        writes.append(Write(
            process, index, f"{process}-{index}", partition,
            invoked_s=2.0 * index, completed_s=2.0 * index + 1, outcome=OK, offset=next_offset[partition],
        ))
        next_offset[partition] += 1
    return writes


def reads_of(writes: list[Write]) -> list[Read]:
    """What a correct broker returns for the acknowledged writes, per partition in offset order."""
    acknowledged = [w for w in writes if w.outcome == OK]
    return [Read(w.partition, w.offset, w.value) for w in sorted(acknowledged, key=lambda w: (w.partition, w.offset))]


def kinds(result) -> set[str]:
    return set(result.by_kind())


def test_a_clean_history_passes():
    writes = sequential_writes(20)
    result = check(writes, reads_of(writes))
    assert result.valid, result.report()
    assert result.counts["ok"] == 20 and result.counts["records read"] == 20
    assert_valid(result)


def history_with_an_unknown_write(unknown_took_an_offset: bool) -> list[Write]:
    """p0 writes a, b, c (unknown outcome), d, e (still pending at the end);
    d's acknowledged offset depends on whether c took one."""
    d_offset = 3 if unknown_took_an_offset else 2
    return [
        Write("p0", 0, "a", 0, 0.0, 1.0, OK, offset=0),
        Write("p0", 1, "b", 0, 2.0, 3.0, OK, offset=1),
        Write("p0", 2, "c", 0, 4.0, 5.0, UNKNOWN, error="timed out"),
        Write("p0", 3, "d", 0, 6.0, 7.0, OK, offset=d_offset),
        Write("p0", 4, "e", 0, 8.0),
    ]


def test_unknown_writes_may_appear():
    writes = history_with_an_unknown_write(unknown_took_an_offset=True)
    result = check(writes, [Read(0, 0, "a"), Read(0, 1, "b"), Read(0, 2, "c"), Read(0, 3, "d"), Read(0, 4, "e")])
    assert result.valid, result.report()
    assert result.counts["unknown"] == 2 and result.counts["unknown seen"] == 2


def test_unknown_writes_may_not_appear():
    writes = history_with_an_unknown_write(unknown_took_an_offset=False)
    result = check(writes, [Read(0, 0, "a"), Read(0, 1, "b"), Read(0, 2, "d")])
    assert result.valid, result.report()
    assert result.counts["unknown seen"] == 0


def test_unknown_writes_may_not_appear_twice():
    writes = history_with_an_unknown_write(unknown_took_an_offset=True)
    result = check(writes, [Read(0, 0, "a"), Read(0, 1, "b"), Read(0, 2, "c"), Read(0, 3, "d"), Read(0, 4, "c")])
    assert DUPLICATED in kinds(result), result.report()


def test_lost_acknowledged_write():
    writes = sequential_writes(10)
    reads = [read for read in reads_of(writes) if read.value != "p0-9"]
    result = check(writes, reads)
    assert kinds(result) == {LOST}
    assert "'p0-9'" in result.by_kind()[LOST][0].description


def test_acknowledged_offset_holding_another_value():
    writes = sequential_writes(10)
    reads = [Read(r.partition, r.offset, "p1-0" if r.value == "p0-4" else r.value) for r in reads_of(writes)]
    writes.append(Write("p1", 0, "p1-0", 0, 100.0, 101.0, UNKNOWN))
    result = check(writes, reads)
    assert kinds(result) == {CHANGED}, result.report()
    assert "now holds 'p1-0'" in result.report()


def test_acknowledged_write_found_at_another_offset():
    writes = sequential_writes(4, partitions=1)
    reads = [Read(0, offset + (1 if offset >= 2 else 0), value) for offset, value in
             [(r.offset, r.value) for r in reads_of(writes)]]
    result = check(writes, reads)
    assert CHANGED in kinds(result)
    assert "'p0-2'" in result.by_kind()[CHANGED][0].description


def test_duplicate_value_at_two_offsets():
    writes = sequential_writes(4, partitions=1)
    reads = reads_of(writes) + [Read(0, 4, "p0-1")]
    result = check(writes, reads)
    assert kinds(result) == {DUPLICATED, REORDERED}, result.report()
    assert "[(0, 1), (0, 4)]" in result.by_kind()[DUPLICATED][0].description


def test_reordering_within_a_partition_in_the_log():
    writes = sequential_writes(4, partitions=1)
    reads = reads_of(writes)
    reads[1], reads[2] = Read(0, 1, reads[2].value), Read(0, 2, reads[1].value)
    result = check(writes, reads)
    assert REORDERED in kinds(result), result.report()


def test_reordering_in_the_acknowledgements():
    """Two pipelined writes (both in flight at once) acknowledged in swapped
    offsets: the log agrees with the acknowledgements, but not with the order
    the client sent them in."""
    writes = [
        Write("p0", 0, "a", 0, 0.0, 5.0, OK, offset=1),
        Write("p0", 1, "b", 0, 1.0, 5.0, OK, offset=0),
    ]
    result = check(writes, [Read(0, 0, "b"), Read(0, 1, "a")])
    assert kinds(result) == {REORDERED}, result.report()
    assert len(result.by_kind()[REORDERED]) == 2  # seen in the acks and in the log


def test_other_processes_writes_do_not_count_as_reordering():
    writes = [
        Write("p0", 0, "a", 0, 0.0, 5.0, OK, offset=1),
        Write("p1", 0, "b", 0, 1.0, 5.0, OK, offset=0),
    ]
    assert check(writes, [Read(0, 0, "b"), Read(0, 1, "a")]).valid


def test_offset_going_backwards_in_real_time():
    """A write that began after another was acknowledged got a lower offset:
    as after a crash that forgot an acknowledged tail and reused its offsets."""
    writes = [
        Write("p0", 0, "a", 0, 0.0, 1.0, OK, offset=5),
        Write("p1", 0, "b", 0, 2.0, 3.0, OK, offset=4),
    ]
    result = check(writes, [Read(0, 4, "b"), Read(0, 5, "a")])
    assert kinds(result) == {OFFSET_WENT_BACKWARDS}, result.report()


def test_offset_going_backwards_while_reading():
    writes = sequential_writes(3, partitions=1)
    reads = reads_of(writes)
    result = check(writes, [reads[0], reads[2], reads[1]])
    assert OFFSET_WENT_BACKWARDS in kinds(result), result.report()


def test_definitely_failed_write_seen():
    writes = sequential_writes(3, partitions=1)
    writes.append(Write("p0", 3, "p0-3", 0, 10.0, 11.0, FAILED, error="MSG_SIZE_TOO_LARGE"))
    result = check(writes, reads_of(writes) + [Read(0, 3, "p0-3")])
    assert kinds(result) == {FAILED_WRITE_SEEN}, result.report()


def test_value_never_written():
    writes = sequential_writes(3, partitions=1)
    result = check(writes, reads_of(writes) + [Read(0, 3, "stranger")])
    assert kinds(result) == {NEVER_WRITTEN}, result.report()


def test_assert_valid_lists_the_first_violations_readably(tmp_path):
    writes = sequential_writes(30, partitions=1)
    result = check(writes, reads_of(writes)[:10])
    with pytest.raises(AssertionError) as failure:
        assert_valid(result, history_path=tmp_path / "history.jsonl", examples_per_kind=3)
    message = str(failure.value)
    assert "lost: 20" in message
    assert "'p0-10' (p0 #10, ok acknowledged at 0/10) is not in the log" in message
    assert "... and 17 more" in message
    assert "history.jsonl" in message


def test_history_records_outcomes_in_invocation_order(tmp_path):
    history = History()
    first = history.invoke("p0", 0, "p0-0")
    second = history.invoke("p0", 1, "p0-1")
    history.complete(second, OK, offset=0)
    history.complete(first, UNKNOWN, error="timed out")
    assert [w.index for w in history.writes] == [0, 1]
    assert history.counts() == {"ok": 1, "failed": 0, "unknown": 1, "pending": 0}
    with pytest.raises(ValueError):
        history.complete(first, OK, offset=1)
    history.save(tmp_path / "history.jsonl")
    assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 2


# --- consumer groups -----------------------------------------------------


def log_of(partition_sizes: dict[int, int]) -> list[Read]:
    return [Read(p, o, f"v{p}-{o}") for p, size in partition_sizes.items() for o in range(size)]


def session(number: int, partition: int, offsets, commit_after: bool = True, confirmed: bool = True) -> list[dict]:
    """Events of one session reading `offsets` of one partition, then committing the next offset."""
    events = [{"session": number, "event": "assigned", "partitions": [partition]}]
    events += [{"session": number, "event": "consumed", "partition": partition, "offset": o} for o in offsets]
    if commit_after:
        commit = {str(partition): max(offsets) + 1}
        events.append({"session": number, "event": "commit", "offsets": commit})
        if confirmed:
            events.append({"session": number, "event": "committed", "offsets": commit})
    return events


def test_group_resuming_at_the_committed_offset_passes():
    events = session(1, 0, range(0, 4)) + session(2, 0, range(4, 6), commit_after=False) + session(3, 0, range(4, 10))
    result = check_group(events, log_of({0: 10}))
    assert result.valid, result.report()
    assert result.counts["sessions"] == 3


def test_group_resuming_after_the_committed_offset_is_a_gap():
    events = session(1, 0, range(0, 4)) + session(2, 0, range(5, 10))
    result = check_group(events, log_of({0: 10}))
    assert set(result.by_kind()) == {GROUP_GAP}, result.report()
    assert "session 2, partition 0: resumed at offset 5, committed position [4]" in result.report()


def test_group_resuming_before_the_committed_offset_is_a_rewind():
    events = session(1, 0, range(0, 4)) + session(2, 0, range(2, 10))
    result = check_group(events, log_of({0: 10}))
    assert set(result.by_kind()) == {GROUP_REWIND}, result.report()


def test_group_skipping_inside_a_session_is_a_gap():
    events = session(1, 0, [0, 1, 2, 4, 5])
    result = check_group(events, log_of({0: 6}))
    assert set(result.by_kind()) == {GROUP_GAP}, result.report()
    assert "read offset 4 after 2" in result.report()
    assert "1 records never consumed, first [3]" in result.report()


def test_group_commit_with_unknown_outcome_allows_either_position():
    killed_mid_commit = session(1, 0, range(0, 4)) + session(2, 0, range(4, 7), confirmed=False)
    for resumed_at in (4, 7):
        events = killed_mid_commit + session(3, 0, range(resumed_at, 10))
        assert check_group(events, log_of({0: 10})).valid, resumed_at


def test_group_records_never_consumed_are_a_gap():
    result = check_group(session(1, 0, range(0, 4)), log_of({0: 4, 1: 2}))
    assert set(result.by_kind()) == {GROUP_GAP}
    assert "partition 1: 2 records never consumed" in result.report()


def test_a_read_taken_back_later():
    """A consumer saw 'p0-2' at offset 1 of partition 0 during the run, but
    the final log has 'p0-4' there: served, then truncated away."""
    writes = sequential_writes(6, partitions=2)
    final = reads_of(writes)
    observed = [Read(0, 0, "p0-0"), Read(0, 1, "ghost"), Read(1, 0, "p0-1")]
    result = check(writes, final, observed)
    assert set(result.by_kind()) == {READ_TAKEN_BACK}, result.report()
    assert "'ghost' was read at 0/1 during the run; that offset now holds 'p0-2'" in result.report()
    assert check(writes, final, final[:3]).valid


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (KafkaError._MSG_TIMED_OUT, UNKNOWN),
        (KafkaError._TRANSPORT, UNKNOWN),
        (KafkaError._PURGE_INFLIGHT, UNKNOWN),
        (KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, UNKNOWN),
        (KafkaError.REQUEST_TIMED_OUT, UNKNOWN),
        (KafkaError._PURGE_QUEUE, FAILED),
        (KafkaError.MSG_SIZE_TOO_LARGE, FAILED),
    ],
)
def test_delivery_errors_are_definite_only_when_nothing_was_written(code, outcome):
    assert outcome_of(KafkaError(code)) == outcome


# --- transactions --------------------------------------------------------


def transaction(number: int, outcome: str, partitions: int = 2, records: int = 2) -> Transaction:
    return Transaction(number, {p: [f"t{number}-p{p}-r{r}" for r in range(records)] for p in range(partitions)},
                       outcome)


def committed_log(transactions: list[Transaction], visible=(COMMITTED,)) -> list[Read]:
    """What a correct broker shows a read_committed consumer: the visible
    transactions' values, in each partition in the order written, one
    offset apart (the markers are not records)."""
    reads = []
    next_offset: dict[int, int] = {}
    for txn in transactions:
        for partition, values in txn.values.items():
            for value in values:
                offset = next_offset.get(partition, 0)
                if txn.outcome in visible:
                    reads.append(Read(partition, offset, value))
                next_offset[partition] = offset + 1
            next_offset[partition] += 1  # the marker
    return sorted(reads, key=lambda r: (r.partition, r.offset))


def txn_history() -> list[Transaction]:
    return [transaction(0, COMMITTED), transaction(1, ABORTED), transaction(2, COMMITTED), transaction(3, UNKNOWN)]


def test_transactions_committed_once_and_aborted_invisible_pass():
    transactions = txn_history()
    result = check_transactions(transactions, committed_log(transactions))
    assert result.valid, result.report()
    assert (result.counts["committed"], result.counts["aborted"], result.counts["unknown"]) == (2, 1, 1)
    assert result.counts["unknown seen"] == 0
    # The unknown one may be there too, as a whole.
    everything_but_aborted = committed_log(transactions, visible=(COMMITTED, UNKNOWN))
    result = check_transactions(transactions, everything_but_aborted, observed=everything_but_aborted[:3])
    assert result.valid, result.report()
    assert result.counts["unknown seen"] == 1


def test_a_lost_committed_transaction():
    transactions = txn_history()
    reads = [r for r in committed_log(transactions) if not r.value.startswith("t2-")]
    result = check_transactions(transactions, reads)
    assert kinds(result) == {TXN_LOST}, result.report()
    assert "transaction 2 (committed, 4 values): none of its values is in the log" in result.report()


def test_a_committed_transaction_seen_in_part():
    transactions = txn_history()
    reads = [r for r in committed_log(transactions) if r.value != "t2-p1-r1"]
    result = check_transactions(transactions, reads)
    assert kinds(result) == {TXN_PARTIAL}, result.report()
    assert "first missing ['t2-p1-r1']" in result.report()


def test_an_unknown_transaction_seen_in_part():
    transactions = txn_history()
    reads = [r for r in committed_log(transactions, visible=(COMMITTED, UNKNOWN)) if r.partition == 0
             or not r.value.startswith("t3-")]
    result = check_transactions(transactions, reads)
    assert kinds(result) == {TXN_PARTIAL}, result.report()
    assert "transaction 3 (unknown, 4 values): 2 values seen, 2 missing" in result.report()


def test_a_duplicated_transaction():
    transactions = txn_history()
    reads = committed_log(transactions)
    again = [Read(r.partition, r.offset + 100, r.value) for r in reads if r.value.startswith("t0-")]
    result = check_transactions(transactions, reads + again)
    assert DUPLICATED in kinds(result) and kinds(result) <= {DUPLICATED, REORDERED}, result.report()
    assert "'t0-p0-r0' is at 2 positions" in result.report()


def test_an_aborted_transaction_visible():
    transactions = txn_history()
    reads = committed_log(transactions, visible=(COMMITTED, ABORTED))
    result = check_transactions(transactions, reads)
    assert kinds(result) == {ABORTED_TXN_SEEN}, result.report()
    assert "transaction 1 (aborted, 4 values): 4 values are visible" in result.report()


def test_an_aborted_transaction_seen_during_the_run_only():
    transactions = txn_history()
    final = committed_log(transactions)
    ghost = Read(0, 2, "t1-p0-r0")
    result = check_transactions(transactions, final, observed=[final[0], ghost])
    assert kinds(result) == {ABORTED_TXN_SEEN, READ_TAKEN_BACK}, result.report()


def test_committed_values_out_of_order_in_a_partition():
    transactions = txn_history()
    reads = committed_log(transactions)
    first, later = reads[0], next(r for r in reads if r.partition == 0 and r.value.startswith("t2-"))
    swapped = [Read(r.partition, r.offset, later.value if r == first else first.value if r == later else r.value)
               for r in reads]
    result = check_transactions(transactions, swapped)
    assert kinds(result) == {REORDERED}, result.report()


def test_a_value_in_another_partition_or_never_written():
    transactions = txn_history()
    reads = [Read(1, 50, r.value) if r.value == "t0-p0-r0" else r for r in committed_log(transactions)]
    result = check_transactions(transactions, reads + [Read(1, 99, "stranger")])
    assert kinds(result) == {CHANGED, NEVER_WRITTEN}, result.report()


def test_transactions_from_producer_events():
    events = [
        {"event": "ready", "producer": 1},
        {"event": "begin", "txn": 0, "producer": 1, "intent": "commit", "values": {"0": ["a"], "1": ["b"]}},
        {"event": "end", "txn": 0, "outcome": "committed"},
        {"event": "begin", "txn": 1, "producer": 1, "intent": "commit", "values": {"0": ["c"], "1": ["d"]}},
        {"event": "retry", "txn": 1, "call": "commit", "error": {"name": "_TIMED_OUT"}},
        {"event": "end", "txn": 1, "outcome": "unknown", "error": "_FENCED: fenced"},
        {"event": "replaced", "producer": 1, "error": {"name": "_FENCED"}},
        {"event": "ready", "producer": 2},
        {"event": "begin", "txn": 2, "producer": 2, "intent": "abort", "values": {"0": ["e"], "1": ["f"]}},
        {"event": "end", "txn": 2, "outcome": "aborted"},
        {"event": "begin", "txn": 3, "producer": 2, "intent": "commit", "values": {"0": ["g"], "1": ["h"]}},
    ]
    transactions = transactions_from_events(events)
    assert [(t.number, t.outcome, t.producer) for t in transactions] == [
        (0, COMMITTED, 1), (1, UNKNOWN, 1), (2, ABORTED, 2), (3, UNKNOWN, 2)]
    assert transactions[1].error == "_FENCED: fenced"
    assert transactions[3].values == {0: ["g"], 1: ["h"]}


# --- the transactional producer's outcomes -----------------------------------


class ScriptedProducer:
    """Stands in for confluent-kafka's Producer: commit_transaction() and
    abort_transaction() raise the scripted errors, one per call, then return."""

    script: dict[str, list[KafkaError]] = {}
    made = 0

    def __init__(self, _config):
        ScriptedProducer.made += 1

    def init_transactions(self, _timeout):
        pass

    def produce(self, *_args, **_kwargs):
        pass

    def poll(self, _timeout):
        return 0

    def purge(self):
        pass

    def commit_transaction(self, _timeout):
        self._call("commit")

    def abort_transaction(self, _timeout):
        self._call("abort")

    def _call(self, name: str):
        errors = ScriptedProducer.script.get(name, [])
        if errors:
            raise KafkaException(errors.pop(0))


RETRIABLE = KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True)
ABORTABLE = KafkaError(KafkaError._STATE, "a delivery failed", txn_requires_abort=True)
FATAL = KafkaError(KafkaError._FENCED, "fenced", fatal=True)


@pytest.mark.parametrize(
    ("number", "commit_errors", "abort_errors", "outcome", "producers"),
    [
        (0, [], [], COMMITTED, 1),
        (0, [RETRIABLE], [], COMMITTED, 1),
        (0, [ABORTABLE], [], ABORTED, 1),
        (0, [ABORTABLE], [FATAL], UNKNOWN, 2),
        (0, [FATAL], [], UNKNOWN, 2),
        (0, [RETRIABLE] * 3, [], UNKNOWN, 2),
        # Transaction 3 is aborted on purpose: never committed, whatever the abort said.
        (3, [], [], ABORTED, 1),
        (3, [], [FATAL], ABORTED, 2),
    ],
)
def test_the_transactional_producer_records_what_the_client_knows(
    monkeypatch, tmp_path, number, commit_errors, abort_errors, outcome, producers
):
    monkeypatch.setattr(txn_producer, "Producer", ScriptedProducer)
    monkeypatch.setattr(ScriptedProducer, "script", {"commit": list(commit_errors), "abort": list(abort_errors)})
    monkeypatch.setattr(ScriptedProducer, "made", 0)
    events_path = tmp_path / "events.jsonl"
    loop = txn_producer.TransactionalLoop("bootstrap", "topic", 2, "tid", txn_producer.EventLog(str(events_path)))
    loop.producer = loop.fresh_producer()
    loop.run_transaction(number)
    loop.events.file.close()
    transactions = transactions_from_events(read_events(events_path))
    assert [(t.number, t.outcome) for t in transactions] == [(number, outcome)]
    assert transactions[0].values == {0: [f"t{number}-p0-r{r}" for r in range(3)],
                                      1: [f"t{number}-p1-r{r}" for r in range(3)]}
    assert ScriptedProducer.made == producers
