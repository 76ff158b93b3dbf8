"""The history checker and the consumer-group checker on synthetic
histories: each kind of violation is found, a clean history passes, and
writes (or commits) with an unknown outcome may or may not have taken
effect. No broker and no root needed."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

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
from faults.history import FAILED, OK, UNKNOWN, History, Read, Write
from faults.kafka_client import outcome_of


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
