"""Webhooks (app.webhooks, docs/decisions/0017): a job's events POSTed to its callback_url, signed
with its token's secret, retried with backoff for a bounded time, logged on the job.

The receiver is a real HTTP server on 127.0.0.1 that checks every signature with the secret the
API showed. The suite's grid accepts such URLs (tests/conftest.py sets GRID_WEBHOOK_ALLOW_HTTP and
GRID_WEBHOOK_ALLOW_PRIVATE, and retries for 6 s from 0.3 s); the refusals are checked on an app
with the production defaults.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.grid import Client, free_port, wait_for

TEXT = "Le conseil de copropriété approuve le budget des travaux de la toiture pour l'année prochaine."


class Receiver:
    """An HTTP server recording what it is sent; ``script[event]``: the statuses it answers that
    event's successive deliveries with (then 200)."""

    def __init__(self, script: dict[str, list[int]] | None = None) -> None:
        self.script = {event: list(codes) for event, codes in (script or {}).items()}
        self.received: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                event = self.headers.get("X-Grid-Event", "")
                with receiver.lock:
                    codes = receiver.script.get(event) or []
                    status = codes.pop(0) if codes else 200
                    receiver.received.append(
                        {"headers": dict(self.headers), "body": body, "status": status, "at": time.time()}
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/grid?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of(self, event: str) -> list[dict]:
        with self.lock:
            return [r for r in self.received if r["headers"].get("X-Grid-Event") == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made = []

    def make(script=None) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def _new_token(client: Client) -> tuple[Client, int, str, str]:
    """A token made through the API: (its client, id, token, webhook secret shown once)."""
    made = client.post("/api/v1/tokens", json={"name": f"hooks-{uuid.uuid4().hex[:6]}"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["webhook_secret"].startswith("whsec_")
    return Client(client.base_url, body["token"]), body["id"], body["token"], body["webhook_secret"]


def _verified(record: dict, secret: str) -> dict:
    """The body of a delivery whose signature checks, as a receiver checks it (docs/api.md)."""
    from app import webhooks

    header = record["headers"]["X-Grid-Signature"]
    assert webhooks.verify(secret, header, record["body"]), header
    assert record["headers"]["Content-Type"] == "application/json"
    assert record["headers"]["User-Agent"].startswith("KoproGo-Grid")
    body = json.loads(record["body"])
    assert body["event"] == record["headers"]["X-Grid-Event"]
    assert body["delivery_id"] == record["headers"]["X-Grid-Delivery"]
    return body


def _log(member: Client, job_id: str, until, timeout: float = 30) -> list[dict]:
    def ready():
        answer = member.job(job_id)
        log = answer.get("webhook_deliveries", [])
        return log if until(log) else None

    return wait_for(ready, timeout, "the job's webhook log", interval=0.2)


def test_a_jobs_events_arrive_signed_in_order_and_the_secret_is_never_shown(grid, client, receiver_factory):
    from app import webhooks

    receiver = receiver_factory()
    member, token_id, token, secret = _new_token(client)
    job = member.submit_text("summarise", text=TEXT, language="fr", callback_url=receiver.url)
    assert job["callback_url"] == receiver.url
    done = member.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", done

    wait_for(lambda: receiver.of("job.succeeded") and receiver.of("job.running"), 30, "both events")
    running, succeeded = (_verified(receiver.of(e)[0], secret) for e in ("job.running", "job.succeeded"))
    assert (running["sequence"], running["state"]) == (1, "running")
    assert (succeeded["sequence"], succeeded["state"]) == (2, "succeeded")
    assert succeeded["job"]["id"] == job["id"] and succeeded["job"]["state"] == "succeeded"
    assert "result" not in succeeded["job"] and succeeded["result_url"].endswith(f"/jobs/{job['id']}/result")
    assert running["delivery_id"] != succeeded["delivery_id"]
    assert all(len(r["body"]) < 8192 for r in receiver.received)

    log = _log(member, job["id"], lambda log: sum(e["outcome"] == "delivered" for e in log) == 2)
    assert {(e["event"], e["attempt"], e["status_code"]) for e in log} == {
        ("job.running", 1, 200),
        ("job.succeeded", 1, 200),
    }
    assert len(receiver.received) == 2  # delivered once each

    # A forged or replayed delivery does not verify; the secret is shown nowhere after creation.
    record = receiver.of("job.succeeded")[0]
    header = record["headers"]["X-Grid-Signature"]
    assert not webhooks.verify("whsec_" + "A" * 43, header, record["body"])
    assert not webhooks.verify(secret, header, record["body"].replace(b"succeeded", b"failed"))
    stamp = int(header.split(",")[0][2:])
    assert not webhooks.verify(
        secret, webhooks.signature(secret, stamp - 3600, record["body"]), record["body"]
    )
    assert not webhooks.verify(secret, "t=1,v1=00", record["body"])
    assert not webhooks.verify(secret, "garbage", record["body"])
    for answer in (
        member.get(f"/api/v1/jobs/{job['id']}"),
        member.get("/api/v1/tokens"),
        member.get("/api/v1/jobs"),
    ):
        assert answer.status_code == 200 and secret not in answer.text and secret[6:] not in answer.text
    assert token not in member.get(f"/api/v1/jobs/{job['id']}").text


def test_5xx_is_retried_until_delivered_a_4xx_is_not_and_a_rotated_secret_signs(
    grid, client, admin, receiver_factory
):
    from app import webhooks

    receiver = receiver_factory({"job.running": [404], "job.succeeded": [500, 503]})
    member, token_id, _, first_secret = _new_token(client)
    rotated = member.post(f"/api/v1/tokens/{token_id}/webhook-secret")
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["webhook_secret"]
    assert secret != first_secret and secret.startswith("whsec_")
    assert rotated.headers["Cache-Control"] == "no-store"
    # Someone else's token: not found (an admin's call too: the secret is its owner's).
    _, other_id, *_ = _new_token(admin)
    assert member.post(f"/api/v1/tokens/{other_id}/webhook-secret").status_code == 404
    assert admin.post(f"/api/v1/tokens/{token_id}/webhook-secret").status_code == 404

    job = member.submit_text("summarise", text=TEXT, language="en", callback_url=receiver.url)
    assert member.wait(job["id"], timeout=120)["state"] == "succeeded"
    log = _log(member, job["id"], lambda log: any(e["outcome"] == "delivered" for e in log))
    attempts = sorted((e["event"], e["attempt"], e["status_code"], e["outcome"]) for e in log)
    assert attempts == [
        ("job.running", 1, 404, "failed"),
        ("job.succeeded", 1, 500, "retrying"),
        ("job.succeeded", 2, 503, "retrying"),
        ("job.succeeded", 3, 200, "delivered"),
    ], attempts
    deliveries = receiver.of("job.succeeded")
    assert len(deliveries) == 3
    bodies = [_verified(record, secret) for record in deliveries]
    assert len({b["delivery_id"] for b in bodies}) == 1  # one delivery, attempted three times
    assert len({r["body"] for r in deliveries}) == 1  # the same body each time
    assert not webhooks.verify(
        first_secret, deliveries[0]["headers"]["X-Grid-Signature"], deliveries[0]["body"]
    )
    assert deliveries[1]["at"] > deliveries[0]["at"] and deliveries[2]["at"] > deliveries[1]["at"]
    time.sleep(1.5)  # the 404 is not tried again
    assert len(receiver.of("job.running")) == 1


def test_a_dead_receiver_is_given_up_within_the_bounded_time(grid, client):
    member, *_ = _new_token(client)
    dead = f"http://127.0.0.1:{free_port()}/gone"  # nothing listens there
    job = member.submit_text("summarise", text=TEXT, language="fr", callback_url=dead)
    assert member.wait(job["id"], timeout=120)["state"] == "succeeded"
    log = _log(
        member,
        job["id"],
        lambda log: (
            {e["event"] for e in log if e["outcome"] == "gave_up"} == {"job.running", "job.succeeded"}
        ),
        timeout=40,
    )
    for event in ("job.running", "job.succeeded"):
        mine = sorted((e for e in log if e["event"] == event), key=lambda e: e["attempt"])
        assert len(mine) >= 3, mine  # retried with backoff …
        assert all(e["status_code"] is None and "Connection" in e["error"] for e in mine)
        assert [e["outcome"] for e in mine] == ["retrying"] * (len(mine) - 1) + ["gave_up"]
        first, last = (
            time.mktime(time.strptime(e["at"][:19], "%Y-%m-%dT%H:%M:%S")) for e in (mine[0], mine[-1])
        )
        assert last - first <= 6 + 2, (first, last)  # … for GRID_WEBHOOK_RETRY_SECONDS, no longer


@pytest.fixture(scope="module")
def production_app():
    """An app with the production defaults: https only, public addresses only."""
    from app import create_app

    return create_app({"TESTING": True, "WEBHOOK_ALLOW_HTTP": False, "WEBHOOK_ALLOW_PRIVATE": False})


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # not https
        "https://127.0.0.1/hook",
        "https://127.1.2.3:8443/hook",
        "https://10.1.2.3/hook",
        "https://192.168.0.10/hook",
        "https://172.16.5.4/hook",
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://169.254.169.254/latest/meta-data",  # the cloud's metadata service
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
        "https://[fd00::1]/hook",
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://240.0.0.1/hook",
        "https://localhost/hook",  # a name that resolves to loopback
        "https://localhost.:8443/hook",
        "not a url",
        "https:///no-host",
        "https://user:password@93.184.216.34/hook",
        "ftp://93.184.216.34/hook",
        "javascript:alert(1)",
        "https://93.184.216.34/" + "a" * 2000,
        "https://93.184.216.34:99999/hook",
        "https://93.184.216.34/a b",
        "https://no-such-host.invalid/hook",
    ],
)
def test_a_callback_url_the_grid_may_not_call_is_refused_with_its_code(production_app, make_token, url):
    from sqlalchemy import func, select

    from app.extensions import db
    from app.models import Job

    owner = f"refused-{uuid.uuid4().hex[:8]}@koprogo.test"
    token = make_token(owner)
    answer = production_app.test_client().post(
        "/api/v1/jobs/summarise",
        json={"text": TEXT, "callback_url": url},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 422, answer.get_data(as_text=True)
    error = answer.get_json()["error"]
    assert error["code"] == "callback_url_refused" and error["message"].startswith("callback_url refused:")
    if url.startswith("https://localhost"):  # a name: the address it resolves to is not told
        assert "127.0.0.1" not in error["message"] and "::1" not in error["message"]
    with production_app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job).where(Job.owner == owner)) == 0


def test_a_public_https_address_is_accepted_and_a_non_string_refused(production_app, make_token):
    from app import webhooks

    config = production_app.config
    target = webhooks.check_url("https://93.184.216.34:8443/hooks?a=1", config=config)
    assert (target.scheme, target.port, target.path, target.addresses) == (
        "https",
        8443,
        "/hooks?a=1",
        ("93.184.216.34",),
    )
    assert webhooks.check_url("https://[2606:4700::1111]/", config=config).addresses == ("2606:4700::1111",)
    token = make_token(f"refused-{uuid.uuid4().hex[:8]}@koprogo.test")
    answer = production_app.test_client().post(
        "/api/v1/jobs/summarise",
        json={"text": TEXT, "callback_url": ["https://93.184.216.34/"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 422 and answer.get_json()["error"]["code"] == "callback_url_refused"


def test_the_address_is_checked_again_at_delivery(receiver_factory):
    """A URL whose host now resolves to a private address (DNS rebinding, here a row written as
    if it had) is not called: the delivery is refused and not retried."""
    from app import create_app, webhook_delivery, webhooks
    from app.auth import create_token
    from app.extensions import db
    from app.models import Job, JobState

    receiver = receiver_factory()
    # http allowed (the receiver's), private addresses not: as production would see a rebound name.
    production_app = create_app({"TESTING": True, "WEBHOOK_ALLOW_HTTP": True, "WEBHOOK_ALLOW_PRIVATE": False})
    with production_app.app_context():
        row, _ = create_token("rebinding", "rebinding@koprogo.test", ["jobs:read", "jobs:write"])
        db.session.flush()
        job = Job(kind="summarise", owner=row.owner, token_id=row.id, params={}, callback_url=receiver.url)
        job.state = JobState.SUCCEEDED
        db.session.add(job)
        db.session.commit()
        outcome = webhook_delivery.deliver.run(
            job.id, "job.succeeded", 2, str(uuid.uuid4()), "succeeded", time.time()
        )
        assert outcome == "failed"
        log = webhooks.deliveries(job)
        assert [(e["outcome"], e["status_code"]) for e in log] == [("failed", None)]
        assert "private, loopback" in log[0]["error"]
    time.sleep(0.5)
    assert receiver.received == []


@pytest.mark.parametrize("fresh_grid", [7], indirect=True)  # a Redis database no other test uses
def test_a_cancelled_job_sends_its_end_from_the_api_process(fresh_grid, make_token, receiver_factory):
    """No volunteer here: the job stays queued until its member cancels it through the API, whose
    process then sends the event (job.cancelled, sequence 2; it never ran)."""
    fresh_grid.ledger_worker()
    fresh_grid.api()
    receiver = receiver_factory()
    member, _, _, secret = _new_token(Client(fresh_grid.api_url, make_token("canceller@koprogo.test")))
    job = member.submit_text("translate", text=TEXT, target="en", callback_url=receiver.url)
    assert job["state"] == "queued"
    cancelled = member.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled", cancelled.text
    wait_for(lambda: receiver.received, 30, "the cancellation's delivery")
    body = _verified(receiver.received[0], secret)
    assert (body["event"], body["sequence"], body["state"], body["result_url"]) == (
        "job.cancelled",
        2,
        "cancelled",
        None,
    )
    assert body["job"]["error"]["code"] == "cancelled"
    log = _log(member, job["id"], lambda log: log)
    assert [(e["event"], e["outcome"]) for e in log] == [("job.cancelled", "delivered")]
    time.sleep(1)
    assert len(receiver.received) == 1


def test_an_operator_rotates_a_tokens_webhook_secret_with_manage_py(grid, client):
    from tests.grid import manage

    member, token_id, _, secret = _new_token(client)
    made = manage("tokens", "webhook-secret", str(token_id))
    assert made.returncode == 0, made.stderr
    header, rotated = made.stdout.strip().splitlines()
    assert str(token_id) in header and rotated.startswith("whsec_") and rotated != secret
    again = member.post(f"/api/v1/tokens/{token_id}/webhook-secret").json()["webhook_secret"]
    assert again not in (secret, rotated)
    assert manage("tokens", "webhook-secret", "999999999").returncode != 0
