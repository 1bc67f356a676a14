"""Inputs by reference (docs/decisions/0009): what queued jobs cost the broker, and what the
input fetch costs a job.

An API of its own on a Redis database no volunteer serves: 100 OCR jobs of a 20 MB document
are submitted and left queued; Redis's memory is read before and after. Then an enrolled node
fetches the inputs of queued jobs as a worker does (a signed start, a POST, the bytes back),
and the time of each fetch is taken: for 20 MB documents and for a short text.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
import requests
from flask import Flask
from sqlalchemy import select

import celeryconfig
from tests.grid import Client, Grid, enrolment

QUEUED_JOBS = 100
DOCUMENT_BYTES = 20 * 1000 * 1000
FETCHES = 20
#: A Redis database of its own: no worker of the other benchmarks consumes it.
BROKER_DB = 3


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _document() -> bytes:
    """A PNG of noise (incompressible) of about ``DOCUMENT_BYTES``: a sound image the API accepts."""
    from PIL import Image

    side = int((DOCUMENT_BYTES / 3) ** 0.5)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "PNG", compress_level=0)
    return out.getvalue()


def _fetch_ms(api: str, node: dict[str, str], task_ids: list[str], task_name: str) -> list[float]:
    from workers import protocol
    from workers.protocol import signing

    times = []
    for task_id in task_ids:
        record = signing.sign(
            {
                **protocol.body(
                    "started",
                    task_id=task_id,
                    task_name=task_name,
                    node=f"{node['name']}@bench",
                    attempt=0,
                    started_at=datetime.now(UTC).isoformat(),
                ),
                "node_id": node["GRID_NODE_ID"],
            },
            node["GRID_NODE_SECRET"],
        )
        began = time.perf_counter()
        response = requests.post(f"{api}/api/v1/work/{task_id}/input", json=record, timeout=120)
        times.append((time.perf_counter() - began) * 1000)
        if response.status_code != 200:
            raise AssertionError(f"fetch refused: {response.status_code} {response.text[:300]}")
    return times


def _task_ids(flask_app: Flask, job_ids: list[str]) -> list[str]:
    from app.extensions import db
    from app.models import JobStep

    with flask_app.app_context():
        return list(db.session.scalars(select(JobStep.task_id).where(JobStep.job_id.in_(job_ids))))


def run(flask_app: Flask, log_dir: Path, token: str) -> list[str]:
    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{BROKER_DB}"
    broker = redis.Redis.from_url(env["GRID_BROKER_URL"])
    broker.flushdb()
    grid = Grid(env, log_dir)
    try:
        client = Client(grid.api(), token)
        document = _document()
        _log(f"6. inputs: {QUEUED_JOBS} OCR jobs of a {len(document) / 1e6:.1f} MB document, left queued")
        before = broker.info("memory")["used_memory"]
        ocr_jobs = [
            client.submit_document("ocr", document, "noise.png", languages="eng")["id"]
            for _ in range(QUEUED_JOBS)
        ]
        after = broker.info("memory")["used_memory"]
        lists = celeryconfig.queue_lists("ocr")
        queued = sum(broker.llen(key) for key in lists)
        message_bytes = sum(len(m) for key in lists for m in broker.lrange(key, 0, -1)) / max(1, queued)
        text_jobs = [
            client.submit_text("summarise", text="La réunion a voté le budget. " * 60, language="fr")["id"]
            for _ in range(FETCHES)
        ]
        node = {**enrolment("bench-inputs-node"), "name": "bench-inputs-node"}
        documents = _fetch_ms(
            grid.api_url, node, _task_ids(flask_app, ocr_jobs)[:FETCHES], "grid.ocr.extract"
        )
        texts = _fetch_ms(grid.api_url, node, _task_ids(flask_app, text_jobs), "grid.llm.summarise")
    finally:
        grid.stop()
        broker.flushdb()
    # Before (docs/decisions/0001) each message held the document in base64: 4/3 of its size.
    inline = QUEUED_JOBS * len(document) * 4 / 3
    return [
        f"broker memory for {queued} queued jobs of a {len(document) / 1e6:.1f} MB document: "
        f"{(after - before) / 1e6:.2f} MB ({message_bytes:.0f} bytes per message); with documents inside "
        f"the messages it would be ≥ {inline / 1e9:.2f} GB → ratio {(after - before) / inline:.5f}",
        f"input fetch per job (signed start, POST, input back), median of {FETCHES}: "
        f"{statistics.median(documents):.0f} ms for {len(document) / 1e6:.0f} MB, "
        f"{statistics.median(texts):.1f} ms for a {len('La réunion a voté le budget. ' * 60)}-character text",
    ]
