"""Nothing lost when the broker blinks: a task that ends while Redis is restarting keeps its
completion on the node's disk (workers.spool) and sends it once Redis is back; the ledger
enters it once and pays it, and the worker neither crashes nor loses the work."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import select

from app.servers import RedisServer
from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client, Grid, wait_for


def _kept(spool: Path) -> list[Path]:
    return list(spool.rglob("*.json")) if spool.exists() else []


def test_a_completion_sent_while_redis_restarts_is_kept_on_the_node_and_entered_once_it_is_back(
    workdir, make_token, flask_app, tmp_path
):
    from app.extensions import db
    from app.models import LedgerEntry

    server = RedisServer(directory=tmp_path / "redis").start()  # a broker of its own, kept (AOF)
    spool = tmp_path / "spool"
    env = {**os.environ, "GRID_BROKER_URL": server.url, "GRID_SPOOL_DIR": str(spool)}
    grid = Grid(env, workdir / "logs" / "broker-restart")
    grid.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        grid.ledger_worker()
        client = Client(grid.api(), make_token("member@koprogo.test"))
        worker = grid.worker("blinking-node", "ocr")
        job = client.submit_document("ocr", text_pdf([FRENCH_LINES] * 6), languages="fra")
        client.wait_pages(job["id"], 1)  # its input fetched: the node is working

        server.stop()  # the rest of the pages are read while Redis is away
        wait_for(lambda: _kept(spool), 90, "the completion to be kept on the node's disk")
        assert client.job(job["id"])["state"] == "running"
        server.start()

        done = client.wait(job["id"], timeout=120)
        assert done["state"] == "succeeded", done
        wait_for(lambda: not _kept(spool), 30, "the kept records to be sent")
        with flask_app.app_context():
            entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job["id"])).all()
            assert [(e.outcome, e.granted_ms > 0) for e in entries] == [("succeeded", True)]
        assert worker.alive(), worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output()
    finally:
        grid.stop()
        server.stop()
