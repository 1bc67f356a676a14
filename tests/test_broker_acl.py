"""Per-node Redis ACL users, against the session's real Redis (its default user, with no
password and every right, stands for the coordinator's admin connection).

Messages go to Redis database 9, which no other test uses.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis
from sqlalchemy import select

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import CELERY, Client, manage, wait_for

DB = 9


@pytest.fixture
def db_url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + f"/{DB}"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _node(flask_app, name: str):
    from app.extensions import db
    from app.models import Node

    with flask_app.app_context():
        node = db.session.scalar(select(Node).where(Node.name == name))
        db.session.expunge(node)
        return node


def _acl_log(admin: redis.Redis, user: str) -> list[dict]:
    return [entry for entry in admin.acl_log(128) if entry.get("username") == user]


def _refused(call) -> str:
    with pytest.raises(redis.exceptions.NoPermissionError) as caught:
        call()
    return str(caught.value)


def test_node_user_pushes_records_but_reads_only_the_queues_it_serves(flask_app, db_url):
    from app import broker_acl, nodes
    from app.extensions import db

    with flask_app.app_context():
        node = nodes.create(_name("acl-unit"), "volunteer@koprogo.test")
        db.session.commit()
        db.session.refresh(node)
        db.session.expunge(node)
        broker_acl.ensure_user(node, ["ocr"], broker_url=db_url)
        user, url = broker_acl.username(node), broker_acl.node_url(node, db_url)
    assert url.startswith(f"redis://{user}:") and url.endswith(f"/{DB}")
    admin = redis.Redis.from_url(db_url)
    volunteer = redis.Redis.from_url(url)
    try:
        assert volunteer.ping()
        admin.lpush("ocr", b"job")
        assert volunteer.rpop("ocr") == b"job"  # its own queue: consumed
        assert volunteer.lpush("ledger", b"record") >= 1  # records: pushed
        assert volunteer.llen("ledger") >= 1
        for call in (
            lambda: volunteer.rpop("ledger"),
            lambda: volunteer.lrange("ledger", 0, -1),
            lambda: volunteer.brpop(["ledger"], timeout=1),
            lambda: volunteer.rpop("llm"),  # another capability's queue
            lambda: volunteer.lpush("llm", b"a task"),  # the coordinator alone sends steps
            lambda: volunteer.sadd("_kombu.binding.llm", "x"),  # nor re-routes them
            lambda: volunteer.lrange("llm", 0, -1),
            lambda: volunteer.rpop("coordinator"),
            lambda: volunteer.lpush("coordinator", b"task"),
            lambda: volunteer.delete("ledger"),  # nor destroyed, whatever the command
            lambda: volunteer.set("ledger", b"x"),
            lambda: volunteer.pexpire("ledger", 1),
            lambda: volunteer.get("somekey"),
            lambda: volunteer.set("somekey", b"x"),
            lambda: volunteer.keys("*"),
            lambda: volunteer.scan(),
            lambda: volunteer.flushdb(),
            lambda: volunteer.config_get("*"),
            lambda: volunteer.acl_list(),
            lambda: volunteer.srem(f"_kombu.binding.{'ocr'}", "ocr\x06\x16\x06\x16ocr"),  # routing kept
            lambda: volunteer.delete("unacked"),
            lambda: volunteer.publish(f"/{DB}.celery.pidbox", b"{}"),  # no control broadcasts
            lambda: volunteer.lrange("ocr", 0, -1),  # its own queue: taken, never peeked at
            lambda: volunteer.hget("unacked", "x"),  # others' messages in flight: never read
            lambda: volunteer.zrange("unacked_index", 0, -1),
            lambda: volunteer.sadd("_kombu.binding.ocr", "x"),  # routing: the coordinator's
            lambda: volunteer.script_load("return 1"),  # scripts: run by hash, never loaded
            lambda: volunteer.eval("return 1", 0),
            lambda: volunteer.set("celery-task-meta-x", b"{}"),  # progress goes over HTTP
        ):
            assert "permissions" in _refused(call)
        assert volunteer.publish(f"/{DB}.celeryev/task.started", b"{}") == 0  # events too
        assert {e["object"] for e in _acl_log(admin, user)} >= {"ledger", "get", "set", "keys"}
    finally:
        admin.delete("ocr", "ledger", "llm")
        volunteer.close()
        with flask_app.app_context():
            broker_acl.delete_user(node)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(url).ping()


def test_enrolled_worker_environment_carries_the_node_user(flask_app, db_url):
    from app import broker_acl, nodes
    from app.extensions import db

    with flask_app.app_context():
        node = nodes.create(_name("acl-env"), "volunteer@koprogo.test")
        environment = nodes.worker_environment(node, db_url)
        assert environment["GRID_BROKER_URL"] == broker_acl.node_url(node, db_url)
        assert environment["CELERY_WORKER_WITHOUT_MINGLE"] == "1"
        password = broker_acl.password(node)
        assert password not in nodes.node_secret(node)
        node.secret_generation += 1
        assert broker_acl.password(node) != password  # a new secret is a new broker password
        db.session.rollback()


def test_the_coordinator_keeps_its_tasks_in_flight_apart():
    from app import broker_acl, ledger_worker

    options = ledger_worker.celery.conf.broker_transport_options
    assert {k: options[k] for k in broker_acl.COORDINATOR_UNACKED} == broker_acl.COORDINATOR_UNACKED
    assert not any(v.startswith("unacked") for v in broker_acl.COORDINATOR_UNACKED.values())


def _env_file_text(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def _env_file(path: Path) -> dict[str, str]:
    return _env_file_text(path.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_workers_on_node_users_run_a_pipeline_and_are_refused_once_revoked(
    fresh_grid, make_token, flask_app, db_url, tmp_path
):
    from app import broker_acl
    from app.extensions import db
    from app.models import JobStep, LedgerEntry

    admin = redis.Redis.from_url(db_url)
    admin.delete(*(admin.keys("*") or ["-"]))
    workers, users = {}, {}
    for queue in ("ocr", "llm"):
        name = _name(f"acl-{queue}")
        created = manage(
            "nodes", "create", name, "--owner", "volunteer@koprogo.test",
            "--broker-url", db_url, "--coordinator-url", fresh_grid.api_url,
            "--env-file", str(tmp_path / f"{name}.env"),
        )  # fmt: skip
        assert created.returncode == 0, created.stderr
        env = _env_file(tmp_path / f"{name}.env")
        node = _node(flask_app, name)
        users[queue] = broker_acl.username(node)
        assert env["GRID_NODE_ID"] == node.id and env["CELERY_WORKER_WITHOUT_MINGLE"] == "1"
        assert env["GRID_COORDINATOR_URL"] == fresh_grid.api_url
        with flask_app.app_context():
            assert env["GRID_BROKER_URL"] == broker_acl.node_url(node, db_url)
            broker_acl.ensure_user(node, [queue], broker_url=db_url)  # enrolled for both: one only
        # As a member starts it: no --without-mingle (the environment says so), gossip on.
        argv = [CELERY, "-A", "workers", "worker", "-Q", queue, "-n", f"{name}@%h", "-c", "1"]
        workers[queue] = fresh_grid._spawn(name, [*argv, "--loglevel=INFO"], env).wait_ready(" ready.")
    fresh_grid.ledger_worker()
    client = Client(fresh_grid.api(), make_token("member@koprogo.test"))

    connected = {c["user"] for c in admin.client_list()}
    assert set(users.values()) <= connected  # the volunteers are connected as their nodes
    job = client.submit_document("pipeline", text_pdf([FRENCH_LINES]), "pv.pdf", languages="fra")
    done = client.wait(job["id"], timeout=120)

    assert done["state"] == "succeeded", done
    assert [s["state"] for s in done["steps"]] == ["succeeded", "succeeded"]
    with flask_app.app_context():
        steps = db.session.scalars(select(JobStep).where(JobStep.job_id == job["id"])).all()
        task_ids = [step.task_id for step in steps]
        entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.task_id.in_(task_ids))).all()
    assert sorted(e.capability for e in entries) == ["llm", "ocr"]
    assert all(e.outcome == "succeeded" and e.granted_ms > 0 for e in entries)
    ocr_task = next(step.task_id for step in steps if step.queue == "ocr")
    progress = json.loads(admin.get(f"grid:progress:{ocr_task}"))  # reported over HTTP, kept here
    assert progress["pages_done"] == progress["pages_total"] == 1
    for user in users.values():
        assert _acl_log(admin, user) == []  # nothing the workers tried was refused

    ocr_name = workers["ocr"].name
    revoked = manage("nodes", "revoke", ocr_name)
    assert revoked.returncode == 0, revoked.stderr
    assert users["ocr"] not in {c["user"] for c in admin.client_list()}  # its connections closed
    wait_for(
        lambda: "invalid username-password pair" in workers["ocr"].output(),
        30,
        "the revoked worker to be refused by Redis",
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(_env_file(tmp_path / f"{ocr_name}.env")["GRID_BROKER_URL"]).ping()
    assert "invalid username-password pair" not in workers["llm"].output()


def test_rotating_a_node_gives_it_a_new_broker_password_and_ends_the_old_sessions(tmp_path, db_url):
    name = _name("acl-rotate")
    env_file = tmp_path / "node.env"
    created = manage(
        "nodes", "create", name, "--owner", "volunteer@koprogo.test",
        "--broker-url", db_url, "--env-file", str(env_file),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    old_url = _env_file(env_file)["GRID_BROKER_URL"]
    session = redis.Redis.from_url(old_url, single_connection_client=True)
    assert session.ping()

    rotated = manage("nodes", "rotate", name)

    assert rotated.returncode == 0, rotated.stderr
    new_url = next(line for line in rotated.stdout.splitlines() if line.startswith("GRID_BROKER_URL="))
    new_url = new_url.split("=", 1)[1]
    assert new_url != old_url and redis.Redis.from_url(new_url).ping()
    with pytest.raises(redis.exceptions.ConnectionError):
        session.ping()  # closed by the broker: the old password opened it
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(old_url).ping()
    assert manage("nodes", "revoke", name).returncode == 0


def test_nodes_enrolled_approved_and_revoked_through_the_api_get_and_lose_their_broker_user(
    flask_app, make_token
):
    token = make_token("member@koprogo.test", ("jobs:read", "nodes:write"))
    http = flask_app.test_client()
    headers = {"Authorization": f"Bearer {token}"}

    enrolled = http.post("/api/v1/nodes", json={"name": _name("acl-api")}, headers=headers)

    assert enrolled.status_code == 201, enrolled.text
    body = enrolled.get_json()
    url = _env_file_text(body["configuration"])["GRID_BROKER_URL"]
    assert url.startswith(f"redis://node-{body['node']['id']}:")
    with pytest.raises(redis.exceptions.AuthenticationError):  # pending: the broker knows it not
        redis.Redis.from_url(url).ping()
    operator = {"Authorization": f"Bearer {make_token('operator@koprogo.test', ('admin',))}"}
    assert http.post(f"/api/v1/nodes/{body['node']['id']}/approve", headers=operator).status_code == 200
    assert redis.Redis.from_url(url).ping()
    revoked = http.post(f"/api/v1/nodes/{body['node']['id']}/revoke", headers=headers)
    assert revoked.status_code == 200, revoked.text
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(url).ping()


def test_node_users_lost_with_a_redis_restart_are_recreated_by_sync_broker(flask_app, redis_url):
    from app import broker_acl

    name = _name("restart")
    assert manage("nodes", "create", name, "--owner", "volunteer@koprogo.test").returncode == 0
    node = _node(flask_app, name)
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "DELUSER", broker_acl.username(node))  # as a restart would

    synced = manage("nodes", "sync-broker")

    assert synced.returncode == 0 and "broker users in place" in synced.stdout
    assert admin.execute_command("ACL", "GETUSER", broker_acl.username(node)) is not None
