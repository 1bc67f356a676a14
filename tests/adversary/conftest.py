"""A hostile node for each attack: enrolled like any other, run as a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from tests.grid import ROOT


class Hostile:
    """An enrolled node's credentials in the hands of an attacker."""

    def __init__(self, flask_app, name: str) -> None:
        from app import nodes
        from app.extensions import db
        from app.models import Node

        with flask_app.app_context():
            node = db.session.scalar(select(Node).where(Node.name == name)) or nodes.create(
                name, "attacker@koprogo.test"
            )
            db.session.commit()
            self.id, self.name = node.id, node.name
            self.env = nodes.worker_environment(node)
            self.flask_app = flask_app

    def on(self, grid) -> dict[str, str]:
        """Its environment on a grid of a test's own (another Redis database, another API)."""
        from app import broker_acl
        from app.extensions import db
        from app.models import Node

        with self.flask_app.app_context():
            url = broker_acl.node_url(db.session.get(Node, self.id), grid.env["GRID_BROKER_URL"])
        return {"GRID_BROKER_URL": url, "GRID_COORDINATOR_URL": grid.api_url}

    def run(self, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tests.adversary.hostile", *args],
            cwd=ROOT,
            env={**os.environ, **self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.adversary.hostile", *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.fixture
def hostile(flask_app, request):
    return Hostile(flask_app, f"hostile-{request.node.name[5:30].replace('_', '-').strip('-')}")


@pytest.fixture
def honest_node(flask_app, request):
    """Another enrolled node, used by the test as an honest one would."""
    return Hostile(flask_app, f"honest-{request.node.name[5:30].replace('_', '-').strip('-')}")


class Rejections:
    """Refused records stored since the test began."""

    def __init__(self, flask_app) -> None:
        self.flask_app = flask_app
        self.since = self._last()

    def _last(self) -> int:
        from app.extensions import db
        from app.models import LedgerRejection

        with self.flask_app.app_context():
            return db.session.scalar(select(func.coalesce(func.max(LedgerRejection.id), 0)))

    def new(self) -> list:
        from app.extensions import db
        from app.models import LedgerRejection

        with self.flask_app.app_context():
            rows = db.session.scalars(
                select(LedgerRejection).where(LedgerRejection.id > self.since).order_by(LedgerRejection.id)
            ).all()
            db.session.expunge_all()
            return rows


@pytest.fixture
def rejections(flask_app) -> Rejections:
    return Rejections(flask_app)
