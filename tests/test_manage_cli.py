"""The operator's command line, run as an operator runs it: ``python manage.py …`` in a shell."""

from __future__ import annotations

import requests
from sqlalchemy import select

from tests.documents import FRENCH_LINES, cer, text_pdf
from tests.grid import manage


def test_an_operator_creates_a_read_only_token_that_works_and_is_stored_only_as_a_hash(grid, flask_app):
    from app.auth import hash_token
    from app.extensions import db
    from app.models import ApiToken

    created = manage("tokens", "create", "--owner", "x@y", "--scope", "jobs:read")

    assert created.returncode == 0, created.stderr
    header, token = created.stdout.strip().splitlines()
    assert "x@y" in header and "(jobs:read)" in header and "shown once" in header
    assert token.startswith("kgg_") and len(token) > 40

    auth = {"Authorization": f"Bearer {token}"}
    listed = requests.get(f"{grid.api_url}/api/v1/jobs", headers=auth, timeout=10)
    assert listed.status_code == 200, listed.text
    assert listed.json()["total"] == 0
    refused = requests.post(
        f"{grid.api_url}/api/v1/jobs/summarise", json={"text": "Bonjour."}, headers=auth, timeout=10
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"

    with flask_app.app_context():
        (row,) = db.session.scalars(select(ApiToken).where(ApiToken.owner == "x@y")).all()
        assert row.token_hash == hash_token(token)
        assert row.scopes == "jobs:read"
        stored = [str(getattr(row, column.key)) for column in ApiToken.__table__.columns]
    assert not any(token in value for value in stored), "the token itself is never stored"


def test_an_operator_submits_a_pdf_and_waits_for_its_text(grid, tmp_path):
    pdf = tmp_path / "pv.pdf"
    pdf.write_bytes(text_pdf([FRENCH_LINES]))

    submitted = manage("submit", str(pdf), "--kind", "ocr", "--languages", "fra", "--force-ocr", "--wait")

    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    first, *rest = submitted.stdout.splitlines()
    # The job's state as read back after its submission: a worker may have started it already.
    assert first.startswith("job ") and first.rsplit(" ", 1)[1] in ("queued", "running"), first
    output = "\n".join(rest)
    assert output.startswith("--- text\n")
    text = output.split("--- text\n", 1)[1].split("\n--- pages\n")[0]
    assert cer("\n".join(FRENCH_LINES), text) <= 0.02, text
    assert output.endswith("--- pages\n1\n--- page_readings\npage 1: ocr")  # read by Tesseract, as forced


def test_a_document_the_grid_cannot_read_is_refused_with_its_code_and_exit_status_1(tmp_path):
    bogus = tmp_path / "notes.pdf"
    bogus.write_text("not a PDF at all")

    submitted = manage("submit", str(bogus), "--kind", "ocr")

    assert submitted.returncode == 1
    assert "unsupported_type" in submitted.stderr


def _manage_with(**env: str):
    import os
    import subprocess
    import sys

    from tests.grid import ROOT

    return subprocess.run(
        [sys.executable, "manage.py", "nodes", "list"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_broker_other_than_redis_is_refused_with_the_reason():
    refused = _manage_with(GRID_BROKER_URL="amqp://guest:guest@localhost:5672//")

    assert refused.returncode != 0
    assert "GRID_BROKER_URL must be a Redis URL" in refused.stderr and "amqp://" in refused.stderr


def test_a_database_other_than_postgresql_is_refused_with_the_reason(tmp_path):
    refused = _manage_with(GRID_DATABASE_URL=f"sqlite:///{tmp_path / 'grid.db'}")

    assert refused.returncode != 0
    assert "GRID_DATABASE_URL must be a PostgreSQL URL" in refused.stderr
    assert not (tmp_path / "grid.db").exists()


def test_a_plain_postgresql_url_uses_the_pinned_driver():
    import os

    plain = os.environ["GRID_DATABASE_URL"].replace("postgresql+psycopg2://", "postgresql://")
    listed = _manage_with(GRID_DATABASE_URL=plain)

    assert listed.returncode == 0, listed.stderr
