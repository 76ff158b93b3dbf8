"""AMQP exchanges and routing, as RabbitMQ 3.10 does them: direct, fanout,
topic (`*`, `#`, empty words) and headers (x-match all/any/all-with-x/
any-with-x) tables; the default exchange and the predefined amq.*
exchanges; exchange-to-exchange bindings; internal exchanges; declare
(passive, durable, auto-delete, inequivalent) and delete if-unused.

Every table publishes each message once (body = its name) and checks, per
queue, exactly which bodies arrived, in publish order, each once.
"""

from __future__ import annotations

import pika
import pytest

from amqp_helpers import (
    ACCESS_REFUSED,
    COMMAND_INVALID,
    NOT_FOUND,
    PRECONDITION_FAILED,
    channel_closed,
    connection_closed,
    get_bodies,
    unique,
)

# The amqp / weir_amqp fixtures.
pytest_plugins = ["amqp_helpers"]


def route_table(amqp, exchange_type, bindings, messages, publish):
    """Declare an exchange of `exchange_type`, one exclusive queue per
    binding label (bindings: {label: [binding args...]}), publish every
    message with `publish(channel, exchange, name, message)`, and return
    {label: [bodies in arrival order]}."""
    channel = amqp.channel()
    channel.confirm_delivery()  # routed messages are enqueued when basic_publish returns
    exchange = amqp.exchange(exchange_type)
    channel.exchange_declare(exchange, exchange_type)
    queues = {}
    for label, binds in bindings.items():
        queue = channel.queue_declare("", exclusive=True).method.queue
        for bind in binds:
            channel.queue_bind(queue, exchange, **bind)
        queues[label] = queue
    for name, message in messages.items():
        publish(channel, exchange, name, message)
    return {label: [b.decode() for b in get_bodies(channel, queue)] for label, queue in queues.items()}


TOPIC_KEYS = ["", "a", "b", "a.b", "b.a", "a.a", "a..b", "a.x.b", "a.x.y.b", "a.", ".a", ".", "a.b.c", "x.b.y"]

# pattern -> routing keys (of TOPIC_KEYS) it matches, as RabbitMQ 3.10 routes.
TOPIC_TABLE = {
    "#": TOPIC_KEYS,
    "#.#": TOPIC_KEYS,
    "*": ["a", "b"],
    "*.#": [k for k in TOPIC_KEYS if k != ""],
    "#.*": [k for k in TOPIC_KEYS if k != ""],
    "a.#": ["a", "a.b", "a.a", "a..b", "a.x.b", "a.x.y.b", "a.", "a.b.c"],
    "#.a": ["a", "b.a", "a.a", ".a"],
    "a.*": ["a.b", "a.a", "a."],
    "*.a": ["b.a", "a.a", ".a"],
    "a.*.b": ["a..b", "a.x.b"],
    "a..b": ["a..b"],
    "a.#.b": ["a.b", "a..b", "a.x.b", "a.x.y.b"],
    "a.*.#": ["a.b", "a.a", "a..b", "a.x.b", "a.x.y.b", "a.", "a.b.c"],
    "#.b.#": ["b", "a.b", "b.a", "a..b", "a.x.b", "a.x.y.b", "a.b.c", "x.b.y"],
    "": [""],
    "a.": ["a."],
    ".a": [".a"],
    "a.b.c": ["a.b.c"],
}


def test_topic_routing_table(amqp):
    bindings = {pattern: [{"routing_key": pattern}] for pattern in TOPIC_TABLE}
    # One queue bound by two patterns that both match gets one copy.
    bindings["twice"] = [{"routing_key": "a.#"}, {"routing_key": "#.b"}]
    messages = {key or "<empty>": key for key in TOPIC_KEYS}

    got = route_table(amqp, "topic", bindings, messages,
                      lambda ch, x, name, key: ch.basic_publish(x, key, name.encode()))

    expected = {pattern: [k or "<empty>" for k in keys] for pattern, keys in TOPIC_TABLE.items()}
    ends_in_b = ["b", "a.b", "a..b", "a.x.b", "a.x.y.b"]  # what "#.b" matches
    expected["twice"] = [k for k in TOPIC_KEYS if k in TOPIC_TABLE["a.#"] or k in ends_in_b]
    assert got == expected


def test_direct_routing_table(amqp):
    bindings = {
        "k1": [{"routing_key": "k1"}],
        "k1-again": [{"routing_key": "k1"}],
        "k1-k2": [{"routing_key": "k1"}, {"routing_key": "k2"}],
        "empty": [{"routing_key": ""}],
        "dotted": [{"routing_key": "a.b"}],
        "hash": [{"routing_key": "#"}],  # no wildcard in a direct exchange
    }
    messages = {"m-k1": "k1", "m-k2": "k2", "m-empty": "", "m-ab": "a.b", "m-K1": "K1",
                "m-a-any": "a.c", "m-none": "nowhere", "m-hash": "#"}
    got = route_table(amqp, "direct", bindings, messages,
                      lambda ch, x, name, key: ch.basic_publish(x, key, name.encode()))
    assert got == {
        "k1": ["m-k1"],
        "k1-again": ["m-k1"],
        "k1-k2": ["m-k1", "m-k2"],
        "empty": ["m-empty"],
        "dotted": ["m-ab"],
        "hash": ["m-hash"],
    }


def test_fanout_ignores_routing_key(amqp):
    bindings = {"a": [{"routing_key": "a"}], "b": [{"routing_key": ""}], "c": [{"routing_key": "x"}, {"routing_key": "y"}]}
    messages = {"m1": "a", "m2": "", "m3": "zzz"}
    got = route_table(amqp, "fanout", bindings, messages,
                      lambda ch, x, name, key: ch.basic_publish(x, key, name.encode()))
    assert got == {"a": ["m1", "m2", "m3"], "b": ["m1", "m2", "m3"], "c": ["m1", "m2", "m3"]}


HEADER_BINDINGS = {
    "all-ab": {"x-match": "all", "a": 1, "b": "two"},
    "any-ab": {"x-match": "any", "a": 1, "b": "two"},
    "default-is-all": {"a": 1, "b": "two"},
    "all-empty": {"x-match": "all"},
    "any-empty": {"x-match": "any"},
    "no-args": {},
    "all-void": {"x-match": "all", "a": None},  # void: the key must be present
    "all-ignores-x": {"x-match": "all", "x-k": "v", "a": 1},
    "all-with-x": {"x-match": "all-with-x", "x-k": "v", "a": 1},
    "any-with-x": {"x-match": "any-with-x", "x-k": "v"},
    "any-ignores-x": {"x-match": "any", "x-k": "v"},
    "all-str-1": {"x-match": "all", "a": "1"},
    "all-true": {"x-match": "all", "t": True},
}

HEADER_MESSAGES = {
    "m-none": None,
    "m-empty": {},
    "m-a1": {"a": 1},
    "m-a1b2": {"a": 1, "b": "two"},
    "m-a1b2c": {"a": 1, "b": "two", "c": 3},
    "m-b2": {"b": "two"},
    "m-a2": {"a": 2},
    "m-astr": {"a": "1"},  # a string "1" is not the integer 1
    "m-xk": {"x-k": "v"},
    "m-xk-a1": {"x-k": "v", "a": 1},
    "m-avoid": {"a": None},
    "m-t1": {"t": True},
    "m-t-int": {"t": 1},  # the integer 1 is not true
    "m-a1-bytes": {"a": 1, "b": b"two"},  # byte array "two" equals string "two"
}

ALL_HEADER_MESSAGES = list(HEADER_MESSAGES)

HEADER_EXPECTED = {
    "all-ab": ["m-a1b2", "m-a1b2c", "m-a1-bytes"],
    "any-ab": ["m-a1", "m-a1b2", "m-a1b2c", "m-b2", "m-xk-a1", "m-a1-bytes"],
    "default-is-all": ["m-a1b2", "m-a1b2c", "m-a1-bytes"],
    "all-empty": ALL_HEADER_MESSAGES,
    "any-empty": [],
    "no-args": ALL_HEADER_MESSAGES,
    "all-void": ["m-a1", "m-a1b2", "m-a1b2c", "m-a2", "m-astr", "m-xk-a1", "m-avoid", "m-a1-bytes"],
    "all-ignores-x": ["m-a1", "m-a1b2", "m-a1b2c", "m-xk-a1", "m-a1-bytes"],
    "all-with-x": ["m-xk-a1"],
    "any-with-x": ["m-xk", "m-xk-a1"],
    "any-ignores-x": [],
    "all-str-1": ["m-astr"],
    "all-true": ["m-t1"],
}


def publish_with_headers(channel, exchange, name, headers):
    channel.basic_publish(exchange, "ignored", name.encode(), pika.BasicProperties(headers=headers))


def test_headers_routing_table(amqp):
    bindings = {label: [{"routing_key": "anything", "arguments": args}] for label, args in HEADER_BINDINGS.items()}
    got = route_table(amqp, "headers", bindings, HEADER_MESSAGES, publish_with_headers)
    assert got == HEADER_EXPECTED


def test_default_exchange(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    queue = amqp.queue("default")
    channel.queue_declare(queue)
    other = channel.queue_declare("", exclusive=True).method.queue
    channel.basic_publish("", queue, b"to-named")
    channel.basic_publish("", other, b"to-generated")
    channel.basic_publish("", "no-such-queue-" + unique("z"), b"dropped")
    assert get_bodies(channel, queue) == [b"to-named"]
    assert get_bodies(channel, other) == [b"to-generated"]

    forbidden = "ACCESS_REFUSED - operation not permitted on the default exchange"
    with channel_closed(ACCESS_REFUSED, forbidden):
        channel.queue_bind(queue, "", "other-key")
    channel = amqp.channel()
    with channel_closed(ACCESS_REFUSED, forbidden):
        channel.queue_unbind(queue, "", queue)
    channel = amqp.channel()
    with channel_closed(ACCESS_REFUSED, forbidden):
        channel.exchange_declare("", passive=True)
    channel = amqp.channel()
    with channel_closed(ACCESS_REFUSED, forbidden):
        channel.exchange_delete("")


PREDEFINED = [("amq.direct", "direct"), ("amq.fanout", "fanout"), ("amq.topic", "topic"),
              ("amq.headers", "headers"), ("amq.match", "headers")]


def test_predefined_exchanges_exist_and_route(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    key = unique("k")
    queues = {}
    for name, kind in PREDEFINED:
        channel.exchange_declare(name, passive=True)
        # An equivalent declare is fine (they are durable).
        channel.exchange_declare(name, kind, durable=True)
        queue = channel.queue_declare("", exclusive=True).method.queue
        if kind == "headers":
            channel.queue_bind(queue, name, "", arguments={"x-match": "all", "k": key})
        elif kind == "topic":
            channel.queue_bind(queue, name, key + ".*")
        else:
            channel.queue_bind(queue, name, key)
        queues[name] = queue

    for name, kind in PREDEFINED:
        routing_key = key + ".x" if kind == "topic" else key
        channel.basic_publish(name, routing_key, name.encode(), pika.BasicProperties(headers={"k": key}))
    for name, _ in PREDEFINED:
        got = get_bodies(channel, queues[name])
        if name == "amq.fanout":
            # Other tests may publish through amq.fanout of a shared broker.
            assert name.encode() in got
        else:
            assert got == [name.encode()], name

    with channel_closed(PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - inequivalent arg 'durable' for exchange 'amq.direct' "
                        "in vhost '/': received 'false' but current is 'true'"):
        channel.exchange_declare("amq.direct", "direct")
    channel = connection.channel()
    with channel_closed(PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.topic' "
                        "in vhost '/': received 'fanout' but current is 'topic'"):
        channel.exchange_declare("amq.topic", "fanout", durable=True)
    channel = connection.channel()
    with channel_closed(ACCESS_REFUSED, "ACCESS_REFUSED - exchange name 'amq.weir-test' contains reserved prefix 'amq.*'"):
        channel.exchange_declare("amq.weir-test", "direct")
    channel = connection.channel()
    with channel_closed(ACCESS_REFUSED, "ACCESS_REFUSED - deletion of system exchange 'amq.direct' in vhost '/' not allowed"):
        channel.exchange_delete("amq.direct")
    channel = connection.channel()
    channel.exchange_declare("amq.direct", passive=True)


def test_exchange_to_exchange_bindings(amqp):
    channel = amqp.channel()
    channel.confirm_delivery()
    source, middle, loop = amqp.exchange("e2e-src"), amqp.exchange("e2e-mid"), amqp.exchange("e2e-loop")
    channel.exchange_declare(source, "topic")
    channel.exchange_declare(middle, "fanout")
    channel.exchange_declare(loop, "direct")
    # source --(orders.#)--> middle --> q_mid ; source --> q_src directly too
    channel.exchange_bind(middle, source, "orders.#")
    q_mid = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q_mid, middle)
    q_src = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q_src, source, "#")
    # A cycle middle -> loop -> middle, and loop -> q_loop: no message loops
    # forever and each queue gets one copy.
    channel.exchange_bind(loop, middle, "")
    channel.exchange_bind(middle, loop, "k")
    q_loop = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q_loop, loop, "orders.new")

    channel.basic_publish(source, "orders.new", b"m1")
    channel.basic_publish(source, "invoices.new", b"m2")
    channel.basic_publish(middle, "whatever", b"m3")
    assert get_bodies(channel, q_mid) == [b"m1", b"m3"]
    assert get_bodies(channel, q_src) == [b"m1", b"m2"]
    assert get_bodies(channel, q_loop) == [b"m1"]

    channel.exchange_unbind(middle, source, "orders.#")
    channel.basic_publish(source, "orders.new", b"m4")
    assert get_bodies(channel, q_mid) == []
    assert get_bodies(channel, q_loop) == []
    assert get_bodies(channel, q_src) == [b"m4"]

    missing = unique("missing")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no exchange '{missing}' in vhost '/'"):
        channel.exchange_bind(middle, missing, "k")


def test_internal_exchange_refuses_publish_but_routes_bindings(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    front, internal = amqp.exchange("front"), amqp.exchange("internal")
    channel.exchange_declare(front, "fanout")
    channel.exchange_declare(internal, "fanout", internal=True)
    channel.exchange_bind(internal, front)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, internal)

    channel.basic_publish(front, "", b"through front")
    assert get_bodies(channel, queue) == [b"through front"]

    with channel_closed(ACCESS_REFUSED, f"ACCESS_REFUSED - cannot publish to internal exchange '{internal}' in vhost '/'"):
        channel.basic_publish(internal, "", b"direct")
        channel.queue_declare("", exclusive=True)
    # The connection is fine; nothing was routed.
    channel = connection.channel()
    assert get_bodies(channel, queue) == []


def test_exchange_declare_passive_and_inequivalent(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = amqp.exchange("decl")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no exchange '{name}' in vhost '/'"):
        channel.exchange_declare(name, "direct", passive=True)
    channel = connection.channel()
    channel.exchange_declare(name, "direct", durable=True)
    channel.exchange_declare(name, "direct", durable=True)  # equivalent: ok
    channel.exchange_declare(name, "fanout", passive=True)  # passive ignores the rest
    cases = [
        ({"exchange_type": "fanout", "durable": True},
         f"inequivalent arg 'type' for exchange '{name}' in vhost '/': received 'fanout' but current is 'direct'"),
        ({"exchange_type": "direct", "durable": False},
         f"inequivalent arg 'durable' for exchange '{name}' in vhost '/': received 'false' but current is 'true'"),
        ({"exchange_type": "direct", "durable": True, "auto_delete": True},
         f"inequivalent arg 'auto_delete' for exchange '{name}' in vhost '/': received 'true' but current is 'false'"),
    ]
    for kwargs, text in cases:
        channel = connection.channel()
        with channel_closed(PRECONDITION_FAILED, "PRECONDITION_FAILED - " + text):
            channel.exchange_declare(name, **kwargs)
    channel = connection.channel()
    channel.exchange_declare(name, passive=True)


def test_unknown_exchange_type_closes_connection(amqp):
    channel = amqp.channel()
    # RabbitMQ says "invalid exchange type 'T'" or "unknown exchange type 'T'"
    # depending on whether T happens to be an Erlang atom; either will do.
    with connection_closed(COMMAND_INVALID, prefix="COMMAND_INVALID - ") as info:
        channel.exchange_declare(amqp.exchange("badtype"), "no-such-type")
    assert info.value.reply_text.endswith(" exchange type 'no-such-type'"), info.value.reply_text
    # Other connections are unaffected.
    amqp.channel().exchange_declare("amq.direct", passive=True)


def test_publish_to_missing_exchange(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    missing = unique("nox")
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no exchange '{missing}' in vhost '/'"):
        channel.basic_publish(missing, "k", b"x")
        channel.queue_declare("", exclusive=True)
    assert connection.is_open


def test_auto_delete_exchange_goes_with_its_last_binding(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    name = amqp.exchange("autodel")
    channel.exchange_declare(name, "direct", auto_delete=True)
    # Never bound: it stays.
    channel.exchange_declare(name, passive=True)
    q1 = channel.queue_declare("", exclusive=True).method.queue
    q2 = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(q1, name, "a")
    channel.queue_bind(q2, name, "b")
    channel.queue_unbind(q1, name, "a")
    channel.exchange_declare(name, passive=True)  # one binding left
    channel.queue_delete(q2)  # the last binding goes with its queue
    with channel_closed(NOT_FOUND, f"NOT_FOUND - no exchange '{name}' in vhost '/'"):
        channel.exchange_declare(name, passive=True)


def test_exchange_delete_if_unused(amqp):
    connection = amqp.connect()
    channel = connection.channel()
    channel.confirm_delivery()
    name = amqp.exchange("ifunused")
    channel.exchange_declare(name, "topic")
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, name, "#")
    with channel_closed(PRECONDITION_FAILED, f"PRECONDITION_FAILED - exchange '{name}' in vhost '/' in use"):
        channel.exchange_delete(name, if_unused=True)
    channel = connection.channel()
    channel.exchange_declare(name, passive=True)
    channel.queue_unbind(queue, name, "#")
    channel.exchange_delete(name, if_unused=True)
    with channel_closed(NOT_FOUND):
        channel.exchange_declare(name, passive=True)

    # A plain delete removes an exchange with bindings, and its bindings.
    channel = connection.channel()
    channel.exchange_declare(name, "topic")
    channel.queue_bind(queue, name, "#")
    channel.exchange_delete(name)
    channel.exchange_declare(name, "topic")
    channel.basic_publish(name, "a", b"x")
    assert get_bodies(channel, queue) == []
    # Deleting what does not exist is not an error in RabbitMQ 3.x.
    channel.exchange_delete(unique("never-declared"))


@pytest.mark.parametrize("kind", ["direct", "topic", "fanout", "headers"])
def test_exchange_source_binding_with_arguments_is_distinct(amqp, kind):
    """The same queue bound twice with the same key and different arguments
    holds two bindings; unbinding one leaves the other."""
    channel = amqp.channel()
    channel.confirm_delivery()
    name = amqp.exchange(kind)
    channel.exchange_declare(name, kind)
    queue = channel.queue_declare("", exclusive=True).method.queue
    channel.queue_bind(queue, name, "k", arguments={"x-match": "any", "h": 1})
    channel.queue_bind(queue, name, "k", arguments={"x-match": "any", "h": 2})
    channel.queue_unbind(queue, name, "k", arguments={"x-match": "any", "h": 1})
    channel.basic_publish(name, "k", b"one", pika.BasicProperties(headers={"h": 1}))
    channel.basic_publish(name, "k", b"two", pika.BasicProperties(headers={"h": 2}))
    channel.queue_declare("", exclusive=True)
    expected = [b"two"] if kind == "headers" else [b"one", b"two"]
    assert get_bodies(channel, queue) == expected
