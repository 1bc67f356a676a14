"""Attack 5: break the broker with a node's own Redis user (an endless script, re-routed queues,
reading the messages in flight, forged ones, unbounded keys) while honest work goes on.

Each attack is refused by the node's ACL, or what the node may write is checked by the
coordinator before it acts on it (app.broker_upkeep); Redis's ACL log names the node."""

from __future__ import annotations

import json

import pytest
import redis
from sqlalchemy import select

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client, wait_for

DB = 12
SEP = "\x06\x16"


def _refused_users(admin: redis.Redis) -> set[str]:
    return {entry["username"] for entry in admin.acl_log(128)}


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_a_node_can_neither_block_nor_reroute_nor_read_the_broker_and_honest_work_goes_on(
    fresh_grid, hostile, honest_node, make_token, flask_app
):
    from app import broker_acl
    from app.extensions import db
    from app.models import LedgerEntry, Node

    admin = redis.Redis.from_url(fresh_grid.env["GRID_BROKER_URL"])
    admin.acl_log_reset()
    with flask_app.app_context():  # the honest node runs on its own broker user too
        node = db.session.get(Node, honest_node.id)
        broker_acl.ensure_user(node, ["ocr"], broker_url=fresh_grid.env["GRID_BROKER_URL"])
    fresh_grid.ledger_worker()
    api = fresh_grid.api()
    honest_env = {**honest_node.on(fresh_grid), "CELERY_WORKER_WITHOUT_MINGLE": "1"}
    fresh_grid.worker(honest_node.name, "ocr", env=honest_env)
    client = Client(api, make_token("member@koprogo.test"))
    job = client.submit_document("ocr", text_pdf([FRENCH_LINES]), languages="fra")

    attacked = hostile.run("broker", env=hostile.on(fresh_grid))

    outcomes = json.loads(attacked.stdout)
    assert outcomes.pop("run it by hash") == "no such script"  # nobody could load it
    assert outcomes == dict.fromkeys(outcomes, "refused"), outcomes
    assert admin.ping()  # not BUSY
    assert admin.smembers("_kombu.binding.ocr") == {f"ocr{SEP}{SEP}ocr".encode()}
    done = client.wait(job["id"], timeout=120)
    assert done["state"] == "succeeded", done
    with flask_app.app_context():
        entry = db.session.scalar(select(LedgerEntry).where(LedgerEntry.job_id == job["id"]))
        assert entry.node_id == honest_node.id and entry.granted_ms > 0
    hostile_user = f"{broker_acl.USER_PREFIX}{hostile.id}"
    assert _refused_users(admin) == {hostile_user}  # every refusal is the hostile node's


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_forged_messages_in_flight_go_back_to_volunteer_queues_only(fresh_grid, hostile):
    env = hostile.on(fresh_grid)
    admin = redis.Redis.from_url(fresh_grid.env["GRID_BROKER_URL"])
    admin.delete("coordinator", "ocr", "ledger")
    to_coordinator = hostile.run("forge-in-flight", "coordinator", env=env).stdout.strip()
    to_ledger = hostile.run("forge-in-flight", "ledger", env=env).stdout.strip()
    to_ocr = hostile.run("forge-in-flight", "ocr", env=env).stdout.strip()
    assert to_coordinator and to_ledger and to_ocr

    fresh_grid.ledger_worker()  # its broker upkeep puts back what is overdue

    wait_for(lambda: not admin.hexists("unacked", to_ocr), 30, "the overdue messages to be put back")
    assert not admin.hexists("unacked", to_coordinator) and not admin.hexists("unacked", to_ledger)
    assert admin.llen("coordinator") == 0 and admin.llen("ledger") == 0  # steered nowhere
    assert admin.llen("ocr") == 1  # a volunteer queue: a worker that takes it gets no input (404)
    admin.delete("ocr")


def test_broker_upkeep_restores_routing_loads_scripts_and_puts_back_dead_workers_messages(redis_url):
    import celeryconfig
    from app import broker_upkeep

    url = redis_url.rsplit("/", 1)[0] + "/13"
    admin = redis.Redis.from_url(url)
    admin.flushdb()
    admin.script_flush()
    admin.sadd("_kombu.binding.ledger", f"ledger{SEP}{SEP}stolen")  # an old or hostile worker's

    changed = broker_upkeep.prepare(admin)

    assert changed["scripts_loaded"] == len(broker_upkeep.SCRIPTS)
    assert changed["foreign_routes_removed"] == 1
    for queue in celeryconfig.ALL_QUEUES:
        assert admin.smembers(f"_kombu.binding.{queue}") == {f"{queue}{SEP}{SEP}{queue}".encode()}
    assert broker_upkeep.prepare(admin)["scripts_loaded"] == 0  # in place: nothing to do

    message = {"body": "e30=", "headers": {"id": "t"}, "properties": {"delivery_tag": "dead"}}
    admin.hset("unacked", "dead", json.dumps([message, "ocr", "ocr"]))
    admin.zadd("unacked_index", {"dead": 1})  # delivered long ago to a worker now gone
    admin.hset("unacked", "alive", json.dumps([message, "ocr", "ocr"]))
    admin.zadd("unacked_index", {"alive": 10**12})  # still within its visibility timeout

    broker_upkeep.restore(url)

    assert admin.hkeys("unacked") == [b"alive"]
    assert json.loads(admin.lpop("ocr"))["headers"]["redelivered"] is True
    admin.flushdb()
