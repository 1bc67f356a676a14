"""A hostile node: a process holding one enrolled node's credentials (node id, secret, its
broker user) and nothing else, as an attacker who enrolled a machine would.

    python -m tests.adversary.hostile garbage        # push every kind of garbage on `ledger`
    python -m tests.adversary.hostile send KIND JSON # sign a record of KIND and send it
    python -m tests.adversary.hostile pop QUEUE      # take a task message off a queue it serves
    python -m tests.adversary.hostile fetch TASK_ID TASK_NAME ATTEMPT   # ask for a task's input
    python -m tests.adversary.hostile broker         # try to break the broker; print each outcome

It reads GRID_BROKER_URL (the node's own broker user), GRID_COORDINATOR_URL, GRID_NODE_ID,
GRID_NODE_NAME and GRID_NODE_SECRET.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid

import redis

from workers import protocol
from workers.protocol import signing

LEDGER = "ledger"


def envelope(task: object, body: bytes | str, encoding: str | None = "base64", **extra) -> bytes:
    """A kombu/Celery message as it sits in Redis, with whatever parts the attacker likes."""
    if isinstance(body, bytes) and encoding == "base64":
        body = base64.b64encode(body).decode()
    properties = {"body_encoding": encoding, "delivery_tag": str(uuid.uuid4())}
    message = {"body": body, "headers": {"task": task, "id": str(uuid.uuid4())}, "properties": properties}
    return json.dumps({**message, **extra}).encode()


def celery_body(record: object) -> bytes:
    return json.dumps([[record], {}, {}]).encode()


def signed(record: dict) -> dict:
    return signing.sign({**record, "node_id": os.environ["GRID_NODE_ID"]}, os.environ["GRID_NODE_SECRET"])


def garbage() -> list[tuple[str, bytes]]:
    """At least twenty kinds of message that are not records, or not records to enter."""
    started = protocol.TASK_OF_KIND["started"]
    completed = protocol.TASK_OF_KIND["completed"]
    deep = "[" * 200_000 + "]" * 200_000
    a_start = signed(
        protocol.body(
            "started",
            task_id=str(uuid.uuid4()),
            task_name="grid.ocr.extract",
            node=f"{os.environ['GRID_NODE_NAME']}@x",
            attempt=0,
            started_at="2026-01-01T00:00:00+00:00",
        )
    )
    a_completion = signed(
        protocol.body(
            "completed",
            task_id=str(uuid.uuid4()),
            task_name="grid.ocr.extract",
            capability="ocr",
            node=f"{os.environ['GRID_NODE_NAME']}@x",
            attempt=0,
            outcome="succeeded",
            final=True,
            started_at="2026-01-01T00:00:00+00:00",
            finished_at="2026-01-01T00:00:01+00:00",
            wall_seconds=1.0,
            cpu_seconds=1.0,
            units={"pages": 1},
            result={"text": "invented"},
        )
    )
    return [
        ("not kombu's properties", b'{"body":"W1t7fV1d","properties":"x"}'),
        ("nested past the recursion limit", deep.encode()),
        ("deep body", envelope(completed, deep.encode())),
        ("binary", os.urandom(4096)),
        ("empty", b""),
        ("JSON null", b"null"),
        ("truncated", envelope(started, celery_body(a_start))[:-40]),
        ("100 MB", b"{" + b" " * (100 * 1024 * 1024) + b"}"),
        ("headers as a list", json.dumps({"body": "", "headers": ["task"], "properties": {}}).encode()),
        ("task name an object", envelope({"x": 1}, celery_body(a_start))),
        ("unknown task", envelope("grid.ledger.settle_due", celery_body(a_start))),
        ("body not base64", envelope(started, "!!!not base64!!!", encoding="base64")),
        ("base64 of no JSON", envelope(started, b"\xff\xfe\x00garbage")),
        ("body not a list", envelope(started, json.dumps({"a": 1}).encode())),
        ("no arguments", envelope(started, json.dumps([[], {}, {}]).encode())),
        ("record a string", envelope(started, celery_body("I started, trust me"))),
        (
            "absurd values",
            envelope(completed, celery_body({**a_start, "wall_seconds": 1e300, "attempt": 10**18})),
        ),
        ("NaN", envelope(started, b'[[{"v": 2, "attempt": NaN}], {}, {}]')),
        ("a megabyte task id", envelope(started, celery_body({**a_start, "task_id": "x" * 1_000_000}))),
        ("an extra field", envelope(started, celery_body(signed({**a_start, "bonus": 1_000_000})))),
        (
            "deep result",
            envelope(completed, celery_body({**a_start, "result": json.loads("[" * 50 + "]" * 50)})),
        ),
        ("old version", envelope(started, celery_body(signed({**a_start, "v": 1})))),
        ("a start on the queue", envelope(started, celery_body(a_start))),
        ("never dispatched", envelope(completed, celery_body(a_completion))),
        ("UTF-16", envelope(started, celery_body(a_start)).decode().encode("utf-16")),
        ("unsigned", envelope(started, celery_body({k: v for k, v in a_start.items() if k != "signature"}))),
    ]


def fetch(task_id: str, task_name: str, attempt: str) -> int:
    """Prints the status, and the SHA-256 and size of what came back."""
    import hashlib
    from datetime import UTC, datetime

    import requests

    record = signed(
        protocol.body(
            "started",
            task_id=task_id,
            task_name=task_name,
            node=f"{os.environ['GRID_NODE_NAME']}@hostile-host",
            attempt=int(attempt),
            started_at=datetime.now(UTC).isoformat(),
        )
    )
    url = f"{os.environ['GRID_COORDINATOR_URL']}/api/v1/work/{task_id}/input"
    response = requests.post(url, json=record, timeout=30)
    code = response.json()["error"]["code"] if response.status_code != 200 else "ok"
    print(response.status_code, code, hashlib.sha256(response.content).hexdigest(), len(response.content))
    return 0


ENDLESS = "while true do end"


def broker_attacks(client: redis.Redis) -> dict[str, str]:
    """Each attack on the broker a node's user might try, and what Redis answered."""
    import hashlib

    from kombu.transport import redis as kombu_redis

    sep = "\x06\x16"
    refresh = hashlib.sha1(kombu_redis.REFRESH_BINDING.encode()).hexdigest()
    stolen = f"ocr{sep}{sep}stolen"
    attacks = {
        "load an endless script": lambda: client.script_load(ENDLESS),
        "run an endless script": lambda: client.eval(ENDLESS, 0),
        "run it by hash": lambda: client.evalsha(hashlib.sha1(ENDLESS.encode()).hexdigest(), 0),
        "read the messages in flight": lambda: client.hgetall("unacked"),
        "read one message in flight": lambda: client.hget("unacked", "x"),
        "list the messages in flight": lambda: client.zrange("unacked_index", 0, -1),
        "peek at a queue": lambda: client.lrange("ocr", 0, -1),
        "re-route a queue": lambda: client.sadd("_kombu.binding.ocr", stolen),
        "re-route it with kombu's script": lambda: client.evalsha(
            refresh, 2, "_kombu.binding.ocr", "_kombu.binding_deadlines", stolen, "ocr", 1000
        ),
        "delete a queue's routing": lambda: client.delete("_kombu.binding.ocr"),
        "write a result key": lambda: client.set(f"celery-task-meta-{uuid.uuid4()}", "x" * 1000),
        "flush the script cache": lambda: client.script_flush(),
        "kill the coordinator's clients": lambda: client.client_kill_filter(_type="normal"),
    }
    outcomes = {}
    for name, attack in attacks.items():
        try:
            attack()
            outcomes[name] = "done"
        except redis.exceptions.NoPermissionError:
            outcomes[name] = "refused"
        except redis.exceptions.NoScriptError:
            outcomes[name] = "no such script"
        except redis.exceptions.ResponseError as exc:
            outcomes[name] = f"error: {str(exc)[:60]}"
    return outcomes


def forge_in_flight(client: redis.Redis, queue: str) -> str:
    """Write a message in flight, long overdue, that names ``queue``; returns its tag."""
    tag = str(uuid.uuid4())
    payload = json.loads(envelope("grid.ledger.settle_due", json.dumps([[], {}, {}]).encode()))
    client.hset("unacked", tag, json.dumps([payload, queue, queue]))
    client.zadd("unacked_index", {tag: 1})
    return tag


def main(argv: list[str]) -> int:
    client = redis.Redis.from_url(os.environ["GRID_BROKER_URL"])  # the node's own broker user
    if argv[0] == "garbage":
        for name, raw in garbage():
            client.lpush(LEDGER, raw)
            print(f"pushed {name} ({len(raw)} bytes)", flush=True)
        return 0
    if argv[0] == "pop":  # highest priority first, as kombu's consumers do
        import celeryconfig

        raw = next(filter(None, (client.rpop(key) for key in celeryconfig.queue_lists(argv[1]))), None)
        print(raw.decode() if raw else "")
        return 0
    if argv[0] == "fetch":
        return fetch(*argv[1:])
    if argv[0] == "broker":
        print(json.dumps(broker_attacks(client)))
        return 0
    if argv[0] == "forge-in-flight":
        print(forge_in_flight(client, argv[1]))
        return 0
    if argv[0] == "send":
        kind, record = argv[1], json.loads(argv[2])
        client.lpush(LEDGER, envelope(protocol.TASK_OF_KIND[kind], celery_body(signed(record))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
