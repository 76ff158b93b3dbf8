"""The web console in a real browser: Debian's headless Chromium driven by
playwright-core (tests/browser, `npm ci` by scripts/test.sh). The page
loads without console errors, shows a topic made by a Kafka client and a
queue made by an AMQP client, its purge button empties the queue, and a
screenshot is kept in tests/artifacts/console.png."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pika
import pytest

from conftest import binary_has_http
from helpers import assert_delivered, make_producer, produce_all, unique
from http_helpers import Http, q

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.skipif(not binary_has_http(), reason="weir binary without --http-listen"),
    pytest.mark.skipif(shutil.which("node") is None, reason="node not installed"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed (scripts/test.sh installs it)"),
    pytest.mark.skipif(not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir(),
                       reason="playwright-core not installed (npm ci in tests/browser)"),
]


@pytest.mark.timeout(120)
def test_console_shows_kafka_topic_and_amqp_queue_and_purges(broker):
    topic, queue = unique("console-topic"), unique("console-queue")
    assert_delivered(produce_all(make_producer(broker), topic, [{"value": b"v%d" % i} for i in range(4)]))
    connection = pika.BlockingConnection(broker.amqp_params())
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    channel.confirm_delivery()
    for i in range(3):
        channel.basic_publish("", queue, b"m%d" % i, pika.BasicProperties(delivery_mode=2))

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "console.png"
    screenshot.unlink(missing_ok=True)
    result = subprocess.run(
        ["node", str(BROWSER_DIR / "console.spec.mjs")],
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "HOME": str(broker.workdir),
            "WEIR_CONSOLE_URL": broker.http_url,
            "WEIR_TOPIC": topic,
            "WEIR_QUEUE": queue,
            "WEIR_SCREENSHOT": str(screenshot),
        },
        capture_output=True,
        timeout=100,
    )
    output = result.stdout.decode(errors="replace")
    assert result.returncode == 0, f"{output}\n{result.stderr.decode(errors='replace')}"
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen["ok"] and topic in seen["topicText"] and seen["readyAfter"] == "0", seen
    assert screenshot.stat().st_size > 10_000

    shown = Http(broker.http_url).ok("GET", f"/api/queues/{q('/')}/{queue}")
    assert shown["ready"] == 0
    assert channel.queue_declare(queue, passive=True).method.message_count == 0
    connection.close()
