"""The API's rate limits (app.api.limits) and its tokens (expiry, last use, listing and revoking:
app.api.tokens, manage.py tokens).

Limits are counted in the broker's Redis: two gunicorn processes share one count. Each test sets
small limits on an app or a grid of its own and speaks from addresses of its own (the suite's
grid keeps limits nothing here or elsewhere reaches: tests/conftest.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from tests.grid import Grid, wait_for
from tests.web import address as new_address

DB = 6  # a Redis database no other test uses
TEXT = "Le conseil de copropriété approuve le budget des travaux de la toiture pour l'année."


def _app(**settings):
    from app import create_app

    return create_app({"TESTING": True, **settings})


def _token(app, owner: str, scopes=("jobs:read", "jobs:write"), expires_at=None) -> tuple[int, str]:
    from app.auth import create_token
    from app.extensions import db

    with app.app_context():
        row, token = create_token("test", owner, list(scopes), expires_at=expires_at)
        db.session.commit()
        return row.id, token


def _owner() -> str:
    return f"member-{uuid.uuid4().hex[:10]}@limits.test"


def _client(app, address: str | None = None):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address or new_address()
    return client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_rate_limited(response) -> int:
    """A 429 of the API: JSON ``rate_limited`` and a Retry-After in seconds within the window."""
    assert response.status_code == 429, (response.status_code, response.get_data(as_text=True))
    assert response.get_json()["error"]["code"] == "rate_limited", response.get_data(as_text=True)
    wait = int(response.headers["Retry-After"])
    assert 1 <= wait <= 60, wait
    return wait


# --- limits, across two API processes ---------------------------------------------------------


@pytest.mark.parametrize("fresh_grid", [DB], indirect=True)
def test_two_api_processes_share_the_limits_and_workers_are_not_starved_by_clients(fresh_grid, make_token):
    from app import broker_acl

    broker_acl.client(db=DB).flushdb()  # no count left from an earlier run
    fresh_grid.env.update(
        {
            "GRID_API_SUBMIT_LIMIT": "3 per minute",
            "GRID_API_READ_LIMIT": "1000 per minute",
            "GRID_API_ADDRESS_LIMIT": "12 per minute",
            "GRID_TRUSTED_PROXIES": "1",  # the test's clients name their address; workers do not
        }
    )
    fresh_grid.ledger_worker()
    fresh_grid.worker("limits-llm", "llm")
    first = fresh_grid.api()
    other = Grid(fresh_grid.env, fresh_grid.log_dir)
    try:
        second = other.api()
        token = make_token(_owner())
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"

        def call(method: str, url: str, address: str | None, **kwargs) -> requests.Response:
            headers = {"X-Forwarded-For": address} if address else {}
            return session.request(method, url, headers=headers, timeout=30, **kwargs)

        # 127.0.0.1, the workers' address, spends its client allowance (either process counts).
        codes = [call("GET", f"{(first, second)[i % 2]}/api/v1/jobs", None).status_code for i in range(13)]
        assert codes == [200] * 12 + [429], codes
        refused = call("GET", f"{second}/api/v1/jobs", None)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        for path in ("/healthz", "/readyz", "/metrics"):  # never limited
            assert requests.get(first + path, timeout=30).status_code == 200, path

        # Three submissions in the window, through either process; the fourth is refused.
        submitted = []
        for url in (first, second, first):
            answer = call("POST", f"{url}/api/v1/jobs/summarise", new_address(), json={"text": TEXT})
            assert answer.status_code == 202, answer.text
            submitted.append(answer.json()["id"])
        fourth = call("POST", f"{second}/api/v1/jobs/summarise", new_address(), json={"text": TEXT})
        assert fourth.status_code == 429, fourth.text
        assert fourth.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(fourth.headers["Retry-After"]) <= 60
        assert call("POST", f"{first}/api/v1/jobs/{submitted[0]}/cancel", new_address()).status_code == 429
        # Reads still pass, on both.
        assert call("GET", f"{second}/api/v1/jobs/{submitted[0]}", new_address()).status_code == 200

        # The worker, at 127.0.0.1, fetches every input and reports: the jobs succeed.
        def states() -> list[str] | None:
            found = [
                call("GET", f"{first}/api/v1/jobs/{job}", new_address()).json()["state"] for job in submitted
            ]
            return found if all(state in ("succeeded", "failed") for state in found) else None

        assert wait_for(states, 90, "the jobs to end", interval=0.5) == ["succeeded"] * 3
    finally:
        other.stop()
        broker_acl.client(db=DB).flushdb()


# --- limits, in one process -------------------------------------------------------------------


def test_the_submission_past_the_limit_is_429_while_reads_still_pass_and_headers_say_so():
    app = _app(API_SUBMIT_LIMIT="2 per minute", API_READ_LIMIT="50 per minute")
    _, token = _token(app, _owner())
    client = _client(app)
    # Submissions refused for what they hold count as submissions too (no job is made here).
    answers = [client.post("/api/v1/jobs/summarise", headers=_bearer(token), json={}) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [422, 422], [a.get_json() for a in answers]
    assert_rate_limited(answers[2])
    # Only a 429 says when to come back: the other answers carry no Retry-After of the limiter's.
    assert "Retry-After" not in answers[0].headers and "Retry-After" not in answers[1].headers
    read = client.get("/api/v1/jobs", headers=_bearer(token))
    assert read.status_code == 200
    # Another token of the same address has its own count.
    _, other = _token(app, _owner())
    assert client.post("/api/v1/jobs/summarise", headers=_bearer(other), json={}).status_code == 422


def test_made_up_tokens_are_stopped_by_address_but_not_a_live_token_there():
    app = _app(API_AUTH_FAILURE_LIMIT="5 per minute")
    _, token = _token(app, _owner())
    attacker = _client(app)
    answers = [attacker.get("/api/v1/jobs", headers=_bearer(f"kgg_{uuid.uuid4().hex}")) for _ in range(4)] + [
        attacker.get("/api/v1/jobs")
    ]  # no token at all counts too
    assert [a.status_code for a in answers] == [401] * 5
    assert answers[0].get_json()["error"]["code"] == "invalid_token"
    assert_rate_limited(attacker.get("/api/v1/jobs", headers=_bearer(f"kgg_{uuid.uuid4().hex}")))
    assert_rate_limited(attacker.get("/api/v1/jobs"))
    # A live token at that address (a shared proxy, an office) is not held back by them.
    assert attacker.get("/api/v1/jobs", headers=_bearer(token)).status_code == 200
    assert _client(app).get("/api/v1/jobs", headers=_bearer(f"kgg_{uuid.uuid4().hex}")).status_code == 401


def test_one_address_is_limited_whatever_tokens_it_uses():
    app = _app(API_ADDRESS_LIMIT="4 per minute")
    tokens = [_token(app, _owner())[1] for _ in range(4)]
    client = _client(app)
    codes = [client.get("/api/v1/jobs", headers=_bearer(tokens[i % 4])).status_code for i in range(4)]
    assert codes == [200] * 4
    assert_rate_limited(client.get("/api/v1/jobs", headers=_bearer(tokens[0])))
    assert _client(app).get("/api/v1/jobs", headers=_bearer(tokens[0])).status_code == 200


def test_the_workers_routes_have_their_own_limit_apart_from_the_clients():
    app = _app(
        API_WORK_LIMIT="3 per minute", API_ADDRESS_LIMIT="1 per minute", API_AUTH_FAILURE_LIMIT="1 per minute"
    )
    _, token = _token(app, _owner())
    node = _client(app)
    task = str(uuid.uuid4())
    answers = [node.post(f"/api/v1/work/{task}/progress", data=b"not json") for _ in range(3)]
    assert [a.get_json()["error"]["code"] for a in answers] == ["malformed"] * 3
    assert_rate_limited(node.post(f"/api/v1/work/{task}/input", data=b"not json"))
    # The work requests spent nothing of the clients' allowance at that address.
    assert node.get("/api/v1/jobs", headers=_bearer(token)).status_code == 200
    assert_rate_limited(node.get("/api/v1/jobs", headers=_bearer(token)))
    # Health checks are never limited.
    assert [node.get("/healthz").status_code for _ in range(3)] == [200] * 3


def test_an_event_stream_counts_once_however_long_it_lasts():
    from app.extensions import db
    from app.models import Job

    app = _app(API_READ_LIMIT="3 per minute", EVENTS_MAX_SECONDS=1, EVENTS_POLL_SECONDS=0.1)
    owner = _owner()
    _, token = _token(app, owner)
    with app.app_context():
        job = Job(kind="summarise", owner=owner, params={})
        db.session.add(job)
        db.session.commit()
        job_id = job.id
    client = _client(app)
    stream = client.get(f"/api/v1/jobs/{job_id}/events", headers=_bearer(token), buffered=True)
    assert stream.status_code == 200
    assert "reconnect with Last-Event-ID" in stream.get_data(as_text=True)  # it polled for a second
    assert [client.get(f"/api/v1/jobs/{job_id}", headers=_bearer(token)).status_code for _ in range(2)] == [
        200,
        200,
    ]
    assert_rate_limited(client.get(f"/api/v1/jobs/{job_id}", headers=_bearer(token)))


# --- tokens -----------------------------------------------------------------------------------


def test_an_expired_token_is_refused_with_its_own_code():
    app = _app()
    past = datetime.now(UTC) - timedelta(seconds=1)
    _, expired = _token(app, _owner(), expires_at=past)
    _, later = _token(app, _owner(), expires_at=datetime.now(UTC) + timedelta(days=1))
    client = _client(app)
    refused = client.get("/api/v1/jobs", headers=_bearer(expired))
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "token_expired"
    assert client.get("/api/v1/jobs", headers=_bearer(later)).status_code == 200


def test_tokens_are_listed_made_and_revoked_by_their_owner_and_by_an_operator():
    app = _app()
    alice, bob = _owner(), _owner()
    _, alice_token = _token(app, alice, ("jobs:read", "jobs:write"))
    bob_id, bob_token = _token(app, bob, ("jobs:read",))
    _, operator_token = _token(app, _owner(), ("admin",))
    client = _client(app)

    made = client.post(
        "/api/v1/tokens",
        headers=_bearer(alice_token),
        json={"name": "scanner", "scopes": ["jobs:write"], "expires_in_days": 2},
    )
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert body["token"].startswith("kgg_") and body["owner"] == alice and body["scopes"] == ["jobs:write"]
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=2) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(days=2)
    assert made.headers["Cache-Control"] == "no-store"
    new_token = body["token"]
    assert client.post("/api/v1/jobs/summarise", headers=_bearer(new_token), json={}).status_code == 422

    listing = client.get("/api/v1/tokens", headers=_bearer(alice_token)).get_json()["items"]
    assert [row["name"] for row in listing] == ["scanner", "test"]
    assert {row["owner"] for row in listing} == {alice}
    for row in listing:
        assert set(row) == {
            "id", "name", "owner", "prefix", "scopes", "state",
            "created_at", "last_used_at", "expires_at", "revoked_at",
        }  # fmt: skip
        assert new_token not in str(row) and alice_token not in str(row)
    # The secret and its hash are nowhere in a listing.
    text = client.get("/api/v1/tokens", headers=_bearer(operator_token)).get_data(as_text=True)
    from app.auth import hash_token

    for secret in (alice_token, bob_token, new_token):
        assert secret not in text and hash_token(secret) not in text

    # Another's token: not found, and still working.
    assert client.post(f"/api/v1/tokens/{bob_id}/revoke", headers=_bearer(alice_token)).status_code == 404
    assert client.post("/api/v1/tokens/2147483648/revoke", headers=_bearer(alice_token)).status_code == 404
    assert client.get("/api/v1/jobs", headers=_bearer(bob_token)).status_code == 200
    # One's own: revoked, refused from then on.
    revoked = client.post(f"/api/v1/tokens/{body['id']}/revoke", headers=_bearer(alice_token))
    assert revoked.status_code == 200 and revoked.get_json()["state"] == "revoked"
    assert (
        client.get("/api/v1/jobs", headers=_bearer(new_token)).get_json()["error"]["code"] == "invalid_token"
    )

    # An operator sees everyone's (or one owner's) and revokes any.
    everyone = client.get("/api/v1/tokens", headers=_bearer(operator_token)).get_json()["items"]
    assert {alice, bob} <= {row["owner"] for row in everyone}
    bobs = client.get("/api/v1/tokens", headers=_bearer(operator_token), query_string={"owner": bob})
    assert [row["id"] for row in bobs.get_json()["items"]] == [bob_id]
    assert client.post(f"/api/v1/tokens/{bob_id}/revoke", headers=_bearer(operator_token)).status_code == 200
    assert client.get("/api/v1/jobs", headers=_bearer(bob_token)).status_code == 401


def test_a_token_gives_no_more_than_it_has():
    app = _app(TOKENS_PER_OWNER=3)
    owner = _owner()
    soon = datetime.now(UTC) + timedelta(hours=1)
    _, reader = _token(app, owner, ("jobs:read",), expires_at=soon)
    client = _client(app)

    def make(token: str, **body):
        return client.post("/api/v1/tokens", headers=_bearer(token), json={"name": "child", **body})

    lacking = make(reader, scopes=["jobs:read", "jobs:write"])
    assert lacking.status_code == 403 and lacking.get_json()["error"]["code"] == "insufficient_scope"
    assert make(reader, scopes=["admin"]).status_code == 403
    # It cannot outlive its maker; asked for no expiry, it gets its maker's.
    assert make(reader, expires_in_days=1).get_json()["error"]["code"] == "invalid_parameter"
    child = make(reader)
    assert child.status_code == 201, child.get_json()
    assert child.get_json()["scopes"] == ["jobs:read"]
    assert datetime.fromisoformat(child.get_json()["expires_at"]) == soon
    # Malformed requests.
    for body in (
        {"name": ""},
        {"name": "x" * 121},
        {"scopes": "jobs:read"},
        {"scopes": ["jobs:read", "root"]},
        {"expires_in_days": 0},
        {"expires_in_days": True},
        {"expires_at": "tomorrow"},
        {"expires_at": "2020-01-01T00:00:00+00:00"},
        {"expires_at": "2099-01-01T00:00:00"},  # no zone
        {"expires_in_days": 1, "expires_at": (datetime.now(UTC) + timedelta(minutes=5)).isoformat()},
    ):
        answer = make(reader, **body)
        assert answer.status_code == 400, (body, answer.get_json())
    # At most TOKENS_PER_OWNER live tokens (the maker and its child are two).
    assert make(reader).status_code == 201
    too_many = make(reader)
    assert too_many.status_code == 409 and too_many.get_json()["error"]["code"] == "too_many_tokens"
    # Only an operator's token makes an admin token.
    _, operator = _token(app, _owner(), ("admin",))
    assert make(operator, scopes=["admin"]).status_code == 201


def test_last_use_is_recorded():
    app = _app()
    owner = _owner()
    _, token = _token(app, owner)
    client = _client(app)
    _, fresh = _token(app, owner)
    before = datetime.now(UTC) - timedelta(seconds=1)
    rows = client.get("/api/v1/tokens", headers=_bearer(token)).get_json()["items"]
    by_prefix = {row["prefix"]: row for row in rows}
    assert by_prefix[fresh[:10]]["last_used_at"] is None
    assert datetime.fromisoformat(by_prefix[token[:10]]["last_used_at"]) >= before
    client.get("/api/v1/jobs", headers=_bearer(fresh))
    rows = client.get("/api/v1/tokens", headers=_bearer(token)).get_json()["items"]
    assert datetime.fromisoformat({r["prefix"]: r for r in rows}[fresh[:10]]["last_used_at"]) >= before


def test_the_cli_makes_tokens_that_expire_lists_them_by_owner_and_revokes_them():
    # manage.py's commands, run in this process (Flask's CLI runner) rather than a new one each.
    runner = _app().test_cli_runner()

    def manage(*args: str):
        result = runner.invoke(args=list(args))
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    owner = _owner()
    made = manage("tokens", "create", "--owner", owner, "--name", "cron", "--expires-in-days", "3")
    token_id = int(made.split()[1])
    token = made.strip().splitlines()[-1]
    assert token.startswith("kgg_") and "expires" in made
    listed = manage("tokens", "list", "--owner", owner.upper())
    lines = [line for line in listed.splitlines() if owner in line]
    assert len(lines) == 1 and lines[0].split()[0] == str(token_id) and " active " in lines[0], listed
    assert (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%d") in lines[0]
    assert token not in listed
    assert "revoked" in manage("tokens", "revoke", str(token_id))
    assert " revoked " in manage("tokens", "list", "--owner", owner).splitlines()[-1]
    assert runner.invoke(args=["tokens", "create", "--owner", owner, "--expires-in-days", "0"]).exit_code != 0


def test_the_tokens_page_makes_a_token_that_expires_and_says_when():
    import re

    from app import accounts
    from app.extensions import db
    from tests.web import PASSWORD, accept, csrf

    app = _app()
    email = _owner()
    with app.app_context():
        _, invitation = accounts.invite(email)
        db.session.commit()
    browser = _client(app)
    assert accept(browser, f"/invite/{invitation}", PASSWORD).status_code == 303

    def create(days: str):
        page = browser.get("/account/tokens?lang=en")
        form = {"csrf_token": csrf(page), "name": "cron", "scope": ["jobs:read"], "expires_in_days": days}
        return browser.post("/account/tokens", data=form)

    for wrong in ("0", "-1", "2.5", "x", "3651"):
        refused = create(wrong)
        assert refused.status_code == 400 and "whole number from 1 to 3650" in refused.get_data(as_text=True)
    made = create("2")
    assert made.status_code == 201, made.get_data(as_text=True)
    token = re.search(r'value="(kgg_[^"]+)"', made.get_data(as_text=True)).group(1)
    listed = _client(app).get("/api/v1/tokens", headers=_bearer(token)).get_json()["items"]
    expires = datetime.fromisoformat(listed[0]["expires_at"])
    assert timedelta(days=2) - timedelta(minutes=1) < expires - datetime.now(UTC) <= timedelta(days=2)
    assert create("").status_code == 201  # no expiry
    page = browser.get("/account/tokens").get_data(as_text=True)
    assert "Expires" in page and "never" in page
