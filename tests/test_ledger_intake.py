"""The ledger worker's Redis intake: batches taken atomically, parked in flight until they are
committed, and put back at the head of the queue by a worker that died holding them."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis
from celery import Celery

import celeryconfig
from app.ledger.intake import RedisIntake, decode
from workers import protocol


@pytest.fixture
def broker(redis_url: str):
    """A Redis database of this test's own, and a Celery app publishing to its ledger queue."""
    url = redis_url.rsplit("/", 1)[0] + "/7"
    redis.Redis.from_url(url).flushdb()
    app = Celery("volunteer-like", broker=url)
    app.conf.update(task_queues=celeryconfig.task_queues, task_routes=celeryconfig.task_routes)
    yield url, app
    redis.Redis.from_url(url).flushdb()


def send(app: Celery, index: int) -> None:
    name = celeryconfig.TASK_LEDGER_STARTED if index % 2 else celeryconfig.TASK_LEDGER_RECORD
    app.send_task(name, args=[{"task_id": f"t{index}", "n": index}], queue=celeryconfig.LEDGER_QUEUE)


def test_batches_come_oldest_first_and_decode_to_kind_and_record(broker):
    url, app = broker
    for index in range(10):
        send(app, index)
    intake = RedisIntake(url, f"ledger-{uuid.uuid4().hex[:6]}@test")

    first = [decode(raw) for raw in intake.take(4)]
    intake.done()
    rest = [decode(raw) for raw in intake.take(100)]
    intake.done()

    assert [record["n"] for _, record in first + rest] == list(range(10))
    assert [kind for kind, _ in first] == ["completed", "started", "completed", "started"]
    assert intake.take(5) == []  # empty: waits a second, then gives up


def test_a_batch_held_by_a_dead_worker_goes_back_to_the_head_of_the_queue(broker):
    url, app = broker
    for index in range(6):
        send(app, index)
    name = f"ledger-{uuid.uuid4().hex[:6]}@test"
    crashed = RedisIntake(url, name)
    assert len(crashed.take(4)) == 4  # ... and the process dies before committing

    restarted = RedisIntake(url, name)
    assert restarted.put_back() == 4
    again = [decode(raw)[1]["n"] for raw in restarted.take(100)]

    assert again == list(range(6))  # nothing lost, order kept
    assert restarted.put_back() == 6  # still in flight until done()
    restarted.take(100)
    restarted.done()
    assert restarted.put_back() == 0


def test_a_message_that_is_not_celerys_is_decoded_as_malformed():
    kind, invalid = decode(b"not json at all")
    assert kind == "message" and invalid.reason == "malformed" and "not json" in invalid.evidence


def test_a_message_over_the_size_limit_is_swapped_for_a_marker_as_it_is_taken(broker):
    url, app = broker
    client = redis.Redis.from_url(url)
    huge = b"x" * (protocol.MAX_MESSAGE_BYTES + 1)
    client.lpush(celeryconfig.LEDGER_QUEUE, huge)
    send(app, 1)
    intake = RedisIntake(url, f"ledger-{uuid.uuid4().hex[:6]}@test")

    queued = intake.take(10)  # taken by the script from a queue that holds messages
    intake.done()
    later = threading.Timer(0.3, client.lpush, (celeryconfig.LEDGER_QUEUE, huge))
    later.start()
    waited = intake.take(10)  # taken by the blocking wait on an empty queue
    later.join()

    decoded = [decode(raw) for raw in queued + waited]
    assert [kind for kind, _ in decoded] == ["message", "started", "message"]
    assert decoded[0][1].reason == decoded[2][1].reason == "oversized"
    assert max(len(raw) for raw in queued + waited) < 1000
    assert max(len(raw) for raw in client.lrange(intake.in_flight, 0, -1)) < 1000


def test_a_running_worker_puts_back_only_the_batches_of_ledger_workers_gone_for_good(broker):
    """Two coordinators' ledger workers: one's batch in flight is left alone while its alive key
    lives, and put back by the other once it has expired (a worker that never came back)."""
    url, app = broker
    for index in range(6):
        send(app, index)
    other = RedisIntake(url, f"ledger-{uuid.uuid4().hex[:6]}@other")
    assert len(other.take(4)) == 4
    running = RedisIntake(url, f"ledger-{uuid.uuid4().hex[:6]}@running")

    assert running.sweep() == 0  # the other one is alive: its batch is its own
    running.redis.delete(other.alive)  # ... until its alive key expires
    assert running.sweep() == 4

    again = [decode(raw)[1]["n"] for raw in running.take(100)]
    assert again == list(range(6))
    running.done()


def _heartbeat(app: Celery, index: int) -> None:
    app.send_task(celeryconfig.TASK_LEDGER_HEARTBEAT, args=[{"n": index}], queue=celeryconfig.LEDGER_QUEUE)


def test_a_batch_of_heartbeats_waits_a_little_for_more_and_any_other_record_ends_the_wait(broker):
    import time

    from app.ledger import intake as intake_module

    url, app = broker
    intake = RedisIntake(url, f"ledger-{uuid.uuid4().hex[:6]}@test")
    never = threading.Event()

    _heartbeat(app, 0)
    later = threading.Timer(0.15, lambda: [_heartbeat(app, 1), _heartbeat(app, 2)])
    later.start()
    began = time.monotonic()
    batch = intake.gather_notices(intake.take(100), 100, never)
    waited = time.monotonic() - began
    assert [record["n"] for _, record in map(decode, batch)] == [0, 1, 2]
    assert intake_module.NOTICE_WAIT_SECONDS - 0.1 <= waited < intake_module.NOTICE_WAIT_SECONDS + 1
    assert intake.redis.llen(intake.in_flight) == 3  # all of it in flight until committed
    intake.done()

    _heartbeat(app, 3)
    later = threading.Timer(0.1, lambda: send(app, 4))  # a completion: it must not wait
    later.start()
    began = time.monotonic()
    batch = intake.gather_notices(intake.take(100), 100, never)
    assert [kind for kind, _ in map(decode, batch)] == ["heartbeat", "completed"]
    assert time.monotonic() - began < intake_module.NOTICE_WAIT_SECONDS - 0.1
    intake.done()

    send(app, 6)  # a batch that is not notices only is entered at once
    began = time.monotonic()
    assert len(intake.gather_notices(intake.take(100), 100, never)) == 1
    assert time.monotonic() - began < intake_module.NOTICE_LOOK_SECONDS + 0.2
    intake.done()


def test_a_record_sent_by_a_node_carries_no_copy_of_itself_in_its_headers(broker, monkeypatch):
    """``metering.send`` puts the record in the message's body only: Celery's default header, a
    repr of the arguments, would hold the start of a result's text a second time."""
    import json

    from workers import metering

    url, app = broker
    monkeypatch.setenv(metering.NODE_ID_ENV, str(uuid.uuid4()))
    monkeypatch.setenv(metering.NODE_SECRET_ENV, "node-secret")
    text = "Procès-verbal de l'assemblée générale " * 10
    execution = metering.Execution(
        str(uuid.uuid4()), celeryconfig.TASK_SUMMARISE, "llm", "node@test", 0, "2026-12-03T10:00:00+00:00"
    )
    metering.send(
        app, "completed", **{**metering._record(execution, "succeeded"), "result": {"summary": text}}
    )
    intake = RedisIntake(url, f"ledger-{uuid.uuid4().hex[:6]}@test")
    (raw,) = intake.take(10)
    intake.done()
    headers = json.loads(raw)["headers"]
    assert headers["argsrepr"] == "(completed record)" and headers["kwargsrepr"] == "{}"
    assert "assemblée" not in json.dumps(headers, ensure_ascii=False)
    kind, record = decode(raw)
    assert kind == "completed" and record["result"] == {"summary": text}
