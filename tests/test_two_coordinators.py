"""Past one coordinator: two API processes on one address and two ledger workers on one ledger
queue (docs/operations.md, "Several coordinators").

Many executions are reported by a node as a real worker does (its signed start through the API,
its signed completion on the ledger queue), but in the worst order for two coordinators: each
start asked for twice at once, each completion sent twice in batches the two ledger workers take
at the same moment, another completion of the same attempt signed anew, a completion for an
attempt nobody started, and a batch a dead ledger worker left in flight (Redis gives it back,
as a redelivery). Whatever the interleaving, every execution is entered once, granted once,
every job ends once (one ``job.succeeded`` webhook each), and every copy is refused with its
reason.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime

import pytest
import redis
import requests
from celery import Celery
from kombu import Queue
from sqlalchemy import func, select

import celeryconfig
from app.ledger.intake import IN_FLIGHT_PREFIX
from tests.grid import Client, enrolment, wait_for
from tests.test_webhooks import Receiver

DB = 8  # a Redis database no other test uses
JOBS = 32
#: Small batches, so the two ledger workers take the queue in turns and race on the same jobs.
BATCH = 8
OWNER = "two-coordinators@koprogo.test"
NODE = "two-coordinators-node"


def _jobs_and_token(base_url: str, make_token, receiver: Receiver) -> tuple[list[dict], str]:
    """``JOBS`` summarise jobs submitted through the shared address, each on a new connection
    (so the kernel spreads them over both API processes), with a webhook each."""
    admin = Client(base_url, make_token(OWNER))
    made = admin.post("/api/v1/tokens", json={"name": f"two-{uuid.uuid4().hex[:6]}"})
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    jobs: list[dict] = []
    lock = threading.Lock()

    def submit(index: int) -> None:
        response = requests.post(
            f"{base_url}/api/v1/jobs/summarise",
            json={"text": f"Facture numéro {index}", "language": "fr", "callback_url": receiver.url},
            headers={"Authorization": f"Bearer {token}", "Connection": "close"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        with lock:
            jobs.append(response.json())

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(JOBS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(jobs) == JOBS
    return jobs, token


def _steps(flask_app, job_ids: list[str]) -> list[tuple[str, str]]:
    from app.extensions import db
    from app.models import JobStep

    with flask_app.app_context():
        rows = db.session.execute(
            select(JobStep.task_id, JobStep.task_name).where(JobStep.job_id.in_(job_ids)).order_by(JobStep.id)
        ).all()
    return [(task_id, task_name) for task_id, task_name in rows]


def _start_twice_at_once(base_url: str, record: dict) -> list[int]:
    """The node's signed start sent twice at the same moment, on two connections."""
    statuses: list[int] = []
    barrier = threading.Barrier(2)

    def fetch() -> None:
        barrier.wait()
        response = requests.post(
            f"{base_url}/api/v1/work/{record['task_id']}/input",
            data=json.dumps(record),
            headers={"Content-Type": "application/json", "Connection": "close"},
            timeout=30,
        )
        statuses.append(response.status_code)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_two_ledger_workers_and_two_api_processes_enter_each_execution_once(
    fresh_grid, flask_app, make_token
):
    from app.extensions import db
    from app.models import ExecutionSighting, Job, LedgerEntry, LedgerRejection, WebhookDelivery
    from workers import protocol
    from workers.protocol import signing

    grid = fresh_grid
    # Both coordinators' ledger workers, each its own name, started as the APIs are.
    env = {"GRID_LEDGER_BATCH": str(BATCH)}
    ledgers = [
        grid.ledger_worker(name, env=env, wait=False, loglevel="DEBUG") for name in ("ledger-a", "ledger-b")
    ]
    base_url = grid.api(processes=2, threads=4, access_log=True)
    for ledger in ledgers:
        ledger.wait_ready(" ready.")
    receiver = Receiver()
    try:
        jobs, _ = _jobs_and_token(base_url, make_token, receiver)
        job_ids = [job["id"] for job in jobs]
        steps = _steps(flask_app, job_ids)
        assert len(steps) == JOBS

        # The node fetches each input (its start): twice at once, through either API process.
        node = enrolment(NODE)
        secret = node["GRID_NODE_SECRET"]
        worker = f"{NODE}@host"
        now = datetime.now(UTC).isoformat()
        completions = []
        for task_id, task_name in steps:
            started = protocol.body(
                "started", task_id=task_id, task_name=task_name, node=worker, attempt=0, started_at=now
            )
            started["node_id"] = node["GRID_NODE_ID"]
            statuses = _start_twice_at_once(base_url, signing.sign(started, secret))
            assert statuses == [200, 200], statuses  # the same node asking again gets its input again

            def completed(attempt: int = 0, wall: float = 0.01, *, task_id=task_id, task_name=task_name):
                body = protocol.body(
                    "completed",
                    task_id=task_id,
                    task_name=task_name,
                    capability="llm",
                    node=worker,
                    attempt=attempt,
                    outcome="succeeded",
                    final=True,
                    started_at=now,
                    finished_at=datetime.now(UTC).isoformat(),
                    wall_seconds=wall,
                    cpu_seconds=wall,
                    units={"prompt_tokens": 4, "completion_tokens": 4},
                    result={"summary": "Une facture.", "language": "fr", "tokens": 8, "llm_calls": 1},
                )
                body["node_id"] = node["GRID_NODE_ID"]
                return signing.sign(body, secret)

            completions.append((completed(), completed(wall=0.02), completed(attempt=1)))

        # Both API processes served the clients and the node.
        for process in grid.processes:
            if process.name.startswith("api-"):
                assert "POST /api/v1/jobs/summarise" in process.output(), process.name
                assert "/input HTTP" in process.output(), process.name

        # The ledger queue, in the worst order for two workers taking batches of BATCH: each
        # group of completions, then the very same records again (a duplicated message), so the
        # two workers' batches hold the same executions at the same time.
        queued: list[dict] = []
        for first in range(0, JOBS, BATCH):
            group = completions[first : first + BATCH]
            queued += [original for original, _, _ in group]
            queued += [original for original, _, _ in group]
        queued += [resigned for _, resigned, _ in completions[:BATCH]]  # the same attempt, signed anew
        queued += [unstarted for _, _, unstarted in completions[:BATCH]]  # an attempt nobody started
        # Staged, then renamed into the ledger queue in one step: both workers find it full.
        broker = redis.Redis.from_url(grid.env["GRID_BROKER_URL"])
        staging = f"two-coordinators-staging-{uuid.uuid4().hex[:6]}"
        volunteer = Celery("volunteer-like", broker=grid.env["GRID_BROKER_URL"])
        with volunteer.producer_or_acquire() as producer:
            for record in queued:
                volunteer.send_task(
                    celeryconfig.TASK_LEDGER_RECORD,
                    args=[record],
                    queue=Queue(staging, routing_key=staging),
                    producer=producer,
                )
        assert broker.llen(staging) == len(queued)
        first_messages = broker.lrange(staging, -BATCH, -1)
        broker.rename(staging, celeryconfig.LEDGER_QUEUE)
        # A ledger worker that died holding a batch and never came back (its alive key is gone):
        # what it held (copies of the first messages) is put back by a running one. (Planted
        # after the rename, which would overwrite what is put back.)
        broker.rpush(f"{IN_FLIGHT_PREFIX}ledger-gone@host", *first_messages)

        def all_ended() -> bool:
            with flask_app.app_context():
                states = Counter(db.session.scalars(select(Job.state).where(Job.id.in_(job_ids))))
            assert set(states) <= {"queued", "running", "succeeded"}, states
            return states["succeeded"] == JOBS

        wait_for(all_ended, 45, "every job to succeed")

        def drained() -> bool:
            in_flight = [k for k in broker.scan_iter(match=f"{IN_FLIGHT_PREFIX}*") if broker.llen(k)]
            return broker.llen(celeryconfig.LEDGER_QUEUE) == 0 and not in_flight

        wait_for(drained, 30, "the ledger queue and every in-flight batch to empty")
        wait_for(lambda: len(receiver.of("job.succeeded")) >= JOBS, 30, "every job's end to be told")

        # Both ledger workers entered batches.
        for ledger in ledgers:
            assert "ledger batch of" in ledger.output(), ledger.name

        task_ids = [task_id for task_id, _ in steps]
        with flask_app.app_context():
            entries = db.session.execute(
                select(
                    LedgerEntry.task_id, LedgerEntry.attempt, LedgerEntry.granted_ms, LedgerEntry.outcome
                ).where(LedgerEntry.task_id.in_(task_ids))
            ).all()
            refused = Counter(
                db.session.scalars(
                    select(LedgerRejection.reason).where(LedgerRejection.task_id.in_(task_ids))
                )
            )
            finished = db.session.scalar(
                select(func.count()).where(Job.id.in_(job_ids), Job.finished_at.is_not(None))
            )
            sightings = Counter(
                db.session.scalars(
                    select(ExecutionSighting.task_id).where(ExecutionSighting.task_id.in_(task_ids))
                )
            )
            deliveries = Counter(
                db.session.execute(
                    select(WebhookDelivery.job_id, WebhookDelivery.event).where(
                        WebhookDelivery.job_id.in_(job_ids), WebhookDelivery.outcome == "delivered"
                    )
                ).all()
            )
        # Each start asked for twice at once, through either process, was seen once.
        assert sorted(sightings) == sorted(task_ids) and set(sightings.values()) == {1}, sightings
        # Every execution entered once, for its one started attempt; granted at most once.
        assert sorted((task_id, attempt) for task_id, attempt, _, _ in entries) == sorted(
            (task_id, 0) for task_id in task_ids
        )
        assert {outcome for *_, outcome in entries} == {"succeeded"}
        granted = Counter(task_id for task_id, _, granted_ms, _ in entries if granted_ms > 0)
        assert all(count == 1 for count in granted.values()), granted
        # Every copy refused with its reason: the duplicated messages and the batch put back are
        # replays, the same attempt signed anew a duplicate execution, the other attempt unstarted.
        assert refused == {"replay": JOBS + BATCH, "duplicate_execution": BATCH, "not_started": BATCH}, (
            refused
        )
        # Every job ended once, and was told once.
        assert finished == JOBS
        succeeded = Counter(event for (_, event), count in deliveries.items() for _ in range(count))
        assert succeeded["job.succeeded"] == JOBS, deliveries
        assert all(count == 1 for count in deliveries.values()), deliveries
        told = Counter(json.loads(r["body"])["job"]["id"] for r in receiver.of("job.succeeded"))
        assert sorted(told) == sorted(job_ids) and set(told.values()) == {1}, told
    finally:
        receiver.close()
