"""The API keeps the contract its OpenAPI document states (app/openapi.py, docs/api.md).

schemathesis reads the document from the live API (gunicorn, as in production) and sends
generated requests to every operation: valid requests and invalid ones (a wrong type, a value
out of range, a body that is not what the operation reads), with a member's token, an admin
token, a made-up token and none. Every answer must not be a 5xx, must carry a status the
document declares for the operation, in a declared media type, with a body its schema accepts.

The grid here is this module's own: a PostgreSQL database and a Redis database no other test
uses, a ledger worker and an LLM node (so that the OpenAI-compatible routes answer their
completions rather than wait), nothing shared with the session's grid. Nothing is excluded:
the admin token may revoke any token, erase any owner's data, approve, pause and revoke any
node, which would break other tests on the shared database. Token ids here start far above
what the generator tries (the sequence is moved on), so the module's own tokens stay valid;
the test checks that they are still valid at the end.

The /v1 operations that wait for their job run first, while the LLM node's queue is empty
(the job submissions generated afterwards queue summaries and translations for it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.grid import CELERY, ROOT, Grid

REDIS_DB = 11  # a Redis database no other test uses
DATABASE = "grid_contract"
MEMBER = "contract-member@koprogo.test"
ADMIN = "contract-admin@koprogo.test"
#: Where the token ids start: far from the small and boundary integers the generator tries.
TOKEN_IDS_FROM = 1_234_567_000
#: At least this many generated requests in all.
MIN_REQUESTS = 2000
#: No 5xx; a status, media type and body the document declares; and, beyond the contract, an
#: operation that asks for a token refuses a request without one (ignored_auth) and a request
#: the document says is invalid is refused (negative_data_rejection).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
    negative_data_rejection,
]
#: Examples per operation: (generation mode, who, how many).
PLAN = (
    (GenerationMode.POSITIVE, "member", 24),
    (GenerationMode.POSITIVE, "admin", 24),
    (GenerationMode.NEGATIVE, "member", 14),
    (GenerationMode.NEGATIVE, "admin", 6),
    (GenerationMode.POSITIVE, "made-up", 6),
    (GenerationMode.POSITIVE, "none", 6),
)
#: Fewer examples for the operations that wait for a job the LLM node runs.
WAITING = {("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")}
WAITING_EXAMPLES = 4


def _setup(env: dict[str, str]) -> dict[str, str]:
    """In this module's database: the tokens, an approved LLM node; their secrets."""
    from sqlalchemy import text

    from app import create_app, nodes
    from app.auth import create_token
    from app.extensions import db

    flask_app = create_app({"DATABASE_URL": env["GRID_DATABASE_URL"], "TESTING_NO_METRICS": True})
    with flask_app.app_context():
        db.session.execute(text(f"ALTER SEQUENCE api_tokens_id_seq RESTART WITH {TOKEN_IDS_FROM}"))
        _, member = create_token("contract", MEMBER, ["jobs:read", "jobs:write", "nodes:write"])
        _, admin = create_token("contract", ADMIN, ["admin"])
        node = nodes.create("contract-llm", "volunteer@contract.test")
        db.session.commit()
        secrets = {
            "member": member,
            "admin": admin,
            "GRID_NODE_ID": node.id,
            "GRID_NODE_SECRET": nodes.node_secret(node),
        }
        db.session.remove()
        db.engine.dispose()
    return secrets


@pytest.fixture(scope="module")
def contract_grid(postgres, workdir: Path) -> Iterator[tuple[Grid, dict[str, str]]]:
    env = {
        **os.environ,
        "GRID_DATABASE_URL": postgres.create_database(DATABASE),
        "GRID_BROKER_URL": os.environ["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{REDIS_DB}",
        # A job's event stream of a job that never ends closes soon (generated job ids name none).
        "GRID_EVENTS_MAX_SECONDS": "2",
    }
    upgrade = subprocess.run(
        [sys.executable, "manage.py", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert upgrade.returncode == 0, upgrade.stderr
    secrets = _setup(env)
    log_dir = workdir / "logs" / "openapi-contract"
    log_dir.mkdir(parents=True, exist_ok=True)
    grid = Grid(env, log_dir)
    try:
        grid.ledger_worker()
        node_env = {"GRID_NODE_ID": secrets["GRID_NODE_ID"], "GRID_NODE_SECRET": secrets["GRID_NODE_SECRET"]}
        argv = [CELERY, "-A", "workers", "worker", "-Q", "llm", "-n", "contract-llm@%h", "-c", "1"]
        argv += ["--loglevel=INFO", "--without-mingle", "--without-gossip"]
        grid._spawn("contract-llm", argv, node_env).wait_ready(" ready.")
        grid.api()
        yield grid, secrets
    except BaseException:
        print(grid.logs())
        raise
    finally:
        grid.stop()


def test_the_document_is_served_with_its_page(contract_grid):
    grid, _ = contract_grid
    document = requests.get(f"{grid.api_url}/api/v1/openapi.json", timeout=30)
    assert document.status_code == 200
    spec = document.json()
    assert spec["openapi"] == "3.1.0"
    operations = {
        (method, path) for path, item in spec["paths"].items() for method in item if method != "parameters"
    }
    for expected in (
        ("post", "/api/v1/jobs/{job_id_or_kind}"),
        ("get", "/api/v1/jobs/{job_id_or_kind}"),
        ("get", "/api/v1/jobs/{job_id}/result"),
        ("post", "/api/v1/work/{task_id}/input"),
        ("get", "/api/v1/ledger/nodes"),
        ("post", "/api/v1/admin/gdpr/erase"),
        ("get", "/metrics"),
        ("get", "/readyz"),
        ("post", "/v1/chat/completions"),
    ):
        assert expected in operations
    codes = spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert {"invalid_token", "rate_limited", "database_unavailable", "bad_signature"} <= set(codes)
    work = spec["paths"]["/api/v1/work/{task_id}/input"]["post"]
    assert work["security"] == [{"nodeSignature": []}]
    assert spec["paths"]["/api/v1/jobs"]["get"]["security"] == [{"bearer": []}]
    page = requests.get(f"{grid.api_url}/api/docs", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "POST /api/v1/jobs/{job_id_or_kind}" in page.text and "invalid_token" in page.text
    # Nothing fetched from elsewhere: every address in the page is the grid's own.
    assert "http://" not in page.text.replace(grid.api_url, "") and "https://" not in page.text
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]


def test_every_route_is_described_and_every_description_is_a_route():
    """The document is built from the URL map: a route added without its operation in
    app/openapi.py fails the build (and so this module), and no operation outlives its route."""
    from app import create_app, openapi

    flask_app = create_app({"TESTING_NO_METRICS": True})
    endpoints = {
        (rule.endpoint, method.lower()) for rule in flask_app.url_map.iter_rules() for method in rule.methods
    }
    stale = set(openapi.operations()) - endpoints - {("metrics", "get")}  # /metrics: not in this app
    assert not stale, stale
    flask_app.add_url_rule("/api/v1/undocumented", "undocumented", lambda: {})
    with pytest.raises(KeyError, match="undocumented"):
        openapi.build(flask_app)


def _run(
    strategy, examples: int, session: requests.Session, headers: dict[str, str], statuses: list[int]
) -> int:
    """Up to ``examples`` generated requests, each checked (their statuses kept); how many were sent."""
    sent = 0

    @settings(
        max_examples=examples,
        derandomize=True,  # the same requests on every run, in CI as here
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the first failure is reported as found
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def call(case) -> None:
        nonlocal sent
        sent += 1
        response = case.call_and_validate(session=session, headers=headers, checks=CHECKS, timeout=90)
        statuses.append(response.status_code)

    call()
    return sent


def test_every_operation_keeps_the_contract(contract_grid):
    grid, secrets = contract_grid
    schema = schemathesis.openapi.from_url(f"{grid.api_url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    documented = requests.get(f"{grid.api_url}/api/v1/openapi.json", timeout=30).json()["paths"]
    labels = {f"{method.upper()} {path}" for path, item in documented.items() for method in item}
    # schemathesis leaves out the document's own address (test_the_document_is_served_with_its_page)
    assert {operation.label for operation in operations} == labels - {"GET /api/v1/openapi.json"}
    operations.sort(key=lambda op: ((op.method.upper(), op.path) not in WAITING, op.path, op.method))
    headers = {
        "member": {"Authorization": f"Bearer {secrets['member']}"},
        "admin": {"Authorization": f"Bearer {secrets['admin']}"},
        "made-up": {"Authorization": "Bearer gridtok_made-up-and-never-issued"},
        "none": {},
    }
    session = requests.Session()
    sent = 0
    failures: list[str] = []
    answered: dict[tuple[str, str], list[int]] = defaultdict(list)
    began = time.monotonic()
    for operation in operations:
        waiting = (operation.method.upper(), operation.path) in WAITING
        for mode, who, examples in PLAN:
            if waiting:
                examples = min(examples, WAITING_EXAMPLES)
            strategy = operation.as_strategy(generation_mode=mode)
            try:
                sent += _run(strategy, examples, session, headers[who], answered[operation.label, who])
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise
                # An operation without parameters nor body (GET /healthz): no invalid request to make.
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001  every operation is tried
                failures.append(f"{operation.label} ({mode.value}, {who}): {exc}"[:3000])
    took = time.monotonic() - began
    print(f"schemathesis: {sent} requests to {len(operations)} operations in {took:.0f} s")
    for (label, who), statuses in sorted(answered.items()):
        print(label, who, dict(sorted(Counter(statuses).items())))
    assert not failures, "\n\n".join(failures)
    assert sent >= MIN_REQUESTS, sent
    # The valid tokens got past authentication: the routes' own answers were checked, not only
    # the refusals. Each of these answered a success at least once.
    succeeded = {label for (label, who), statuses in answered.items() if any(s < 300 for s in statuses)}
    for label in (
        "POST /api/v1/jobs/{job_id_or_kind}",
        "GET /api/v1/jobs",
        "POST /api/v1/nodes",
        "GET /api/v1/nodes",
        "POST /api/v1/tokens",
        "GET /api/v1/tokens",
        "GET /api/v1/stats",
        "GET /api/v1/ledger/nodes",
        "GET /api/v1/models",
        "POST /v1/chat/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /readyz",
        "GET /metrics",
    ):
        assert label in succeeded, label
    # The tokens the generated requests were sent with were valid throughout.
    for who in ("member", "admin"):
        answer = requests.get(f"{grid.api_url}/api/v1/tokens", headers=headers[who], timeout=30)
        assert answer.status_code == 200, answer.text
