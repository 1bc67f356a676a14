"""Whatever a client sends, the API answers it with a 4xx and a stable code, never a 500.

Each case a fuzzer found a 500 with is here (a NUL byte in a node id or name, JSON nested
100 000 deep, a JSON body that is not an object, an owner longer than the database holds),
with the same pattern in every other route: job, node, participant and task ids, query
parameters, request bodies. Then a seeded fuzzer sends a few hundred more across the routes.
And a body shorter than its ``Content-Length`` is refused (``incomplete_body``) or times out
(``request_timeout``) instead of being taken for the whole or holding a thread forever.

Against a gunicorn API of this module's own, on Redis database 5 (nothing it queues reaches the
shared nodes), with a body timeout of 2 s.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import requests

from tests.grid import Client, Grid

MEMBER = "fuzzed-member@koprogo.test"
OPERATOR = "fuzzed-operator@koprogo.test"
BODY_TIMEOUT = 2


@pytest.fixture(scope="module")
def api(workdir: Path) -> Iterator[Grid]:
    env = dict(os.environ)
    env["GRID_BROKER_URL"] = env["GRID_BROKER_URL"].rsplit("/", 1)[0] + "/5"
    env["GRID_REQUEST_BODY_TIMEOUT"] = str(BODY_TIMEOUT)
    log_dir = workdir / "logs" / "malformed-requests"
    log_dir.mkdir(parents=True, exist_ok=True)
    running = Grid(env, log_dir)
    try:
        running.api()
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.stop()


@pytest.fixture(scope="module")
def member(api, make_token) -> Client:
    return Client(api.api_url, make_token(MEMBER, ("jobs:read", "jobs:write", "nodes:write")))


@pytest.fixture(scope="module")
def operator(api, make_token) -> Client:
    return Client(api.api_url, make_token(OPERATOR, ("admin",)))


def assert_refused(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, (response.request.method, response.url, response.text[:300])
    assert response.json()["error"]["code"] == code, response.text[:300]


def deep(levels: int, opening: str = "[", closing: str = "]") -> str:
    return opening * levels + closing * levels


# --- what the fuzzer found ---------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", "/pause", "/resume", "/revoke", "/approve"])
def test_a_nul_byte_in_a_node_id_is_not_found(operator, member, suffix):
    for client in (operator, member):
        for node_id in ("%00", "%00abc", "a%00" + "b" * 30, "0" * 36 + "%00"):
            call = client.get if suffix == "" else client.post
            if client is member and suffix == "/approve":  # an operator's only
                assert_refused(call(f"/api/v1/nodes/{node_id}{suffix}"), 403, "insufficient_scope")
            else:
                assert_refused(call(f"/api/v1/nodes/{node_id}{suffix}"), 404, "not_found")


def test_a_node_name_the_database_would_refuse_is_refused_before_any_lookup(operator, member):
    for name in ("a\x00b", "\x00", "alice-pi\n", "x" * 10_000, "ALICE", 5, ["alice-pi"], {"a": 1}):
        for client in (operator, member):
            assert_refused(client.post("/api/v1/nodes", json={"name": name}), 400, "invalid_parameter")
    for form_name in ("a\x00b", "%00", "é" * 80):
        assert_refused(member.post("/api/v1/nodes", data={"name": form_name}), 400, "invalid_parameter")


@pytest.mark.parametrize("levels", [50_000, 100_000])
def test_json_nested_deeper_than_the_parser_goes_is_invalid_json(member, levels):
    headers = {"Content-Type": "application/json"}
    for body in (deep(levels), deep(levels, '{"a":', "}"), '{"text": ' + deep(levels) + "}"):
        for path in ("/api/v1/jobs/summarise", "/api/v1/jobs/translate", "/api/v1/nodes"):
            assert_refused(member.post(path, data=body, headers=headers), 400, "invalid_json")


def test_a_json_body_that_is_not_an_object_is_invalid_json(member, operator):
    headers = {"Content-Type": "application/json"}
    for body in ("[1, 2]", '"alice-pi"', "5", "null", "true", "", "{", "\xff\xfe", '{"name": "\udc80"}'):
        for client, path in ((member, "/api/v1/nodes"), (operator, "/api/v1/nodes")):
            assert_refused(
                client.post(path, data=body.encode("utf-8", "surrogateescape"), headers=headers),
                400,
                "invalid_json",
            )
        assert_refused(
            member.post(
                "/api/v1/jobs/summarise", data=body.encode("utf-8", "surrogateescape"), headers=headers
            ),
            400,
            "invalid_json",
        )


def test_an_owner_the_database_cannot_hold_is_refused(operator):
    for owner in (
        "a" * 250 + "@koprogo.test",
        "someone\x00@koprogo.test",
        "no-at-sign",
        "two words@x.test",
        7,
    ):
        response = operator.post("/api/v1/nodes", json={"name": "fuzzed-owner", "owner": owner})
        assert_refused(response, 400, "invalid_parameter")


# --- the same pattern elsewhere ----------------------------------------------------------------


def test_a_job_id_that_cannot_be_one_is_not_found(member):
    for job_id in ("%00", "x" * 3000, "1" * 40, "00000000-0000-0000-0000-000000000000%00", "%F0%9F%99%82"):
        assert_refused(member.get(f"/api/v1/jobs/{job_id}"), 404, "not_found")
        assert_refused(member.post(f"/api/v1/jobs/{job_id}/cancel"), 404, "not_found")


def test_a_participant_id_beyond_the_database_is_not_found_and_a_bad_period_is_a_400(member):
    for participant_id in ("2147483648", "99999999999999999999999999"):
        assert_refused(member.get(f"/api/v1/participants/{participant_id}/statement"), 404, "not_found")
    enrolled = member.post("/api/v1/nodes", json={"name": "fuzzed-member-pi"})  # pending: never runs
    assert enrolled.status_code == 201, enrolled.text
    own = enrolled.json()["node"]["participant"]["id"]
    assert member.get(f"/api/v1/participants/{own}/statement").status_code == 200
    for period in ("2026-11%00", "%00", "9999-12", "2026-1" + "1" * 300, "2026-11%0A"):
        assert_refused(
            member.get(f"/api/v1/participants/{own}/statement?period={period}"), 400, "invalid_parameter"
        )


@pytest.mark.parametrize(
    "params",
    [
        {"page": "abc"},
        {"page": "%00"},
        {"page": "1e3"},
        {"page": "٣"},  # a digit, but not an ASCII one
        {"page": "9" * 40},
        {"per_page": "-1"},
        {"per_page": "1.5"},
        {"state": "a\x00b"},
        {"kind": "x" * 300},
    ],
)
def test_a_query_parameter_that_makes_no_sense_is_a_400(member, params):
    assert_refused(member.get("/api/v1/jobs", params=params), 400, "invalid_parameter")


def test_an_operators_owner_filter_the_database_would_refuse_is_a_400(operator):
    for owner in ("a\x00b", "o" * 300):
        assert_refused(operator.get("/api/v1/jobs", params={"owner": owner}), 400, "invalid_parameter")


def test_the_next_page_link_carries_only_the_parameters_it_understands(member):
    submitted = [
        member.post("/api/v1/jobs/summarise", json={"text": "Deux lignes de texte à résumer."}).json()["id"]
        for _ in range(2)
    ]
    query = {"per_page": 1, "endpoint": "x", "_scheme": "javascript", "_external": "1", "_method": "DELETE"}
    listed = member.get("/api/v1/jobs", params=query)
    for job_id in submitted:  # nothing is left queued
        assert member.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    assert listed.status_code == 200, listed.text
    assert listed.json()["next"] == "/api/v1/jobs?page=2&per_page=1"


def test_a_task_record_that_is_not_one_is_refused(api):
    for what in ("input", "progress"):
        for task_id, body in (
            ("%00", b'{"task_id": "\\u0000", "node_id": "\\u0000", "v": 1}'),
            ("x" * 3000, b"[1, 2]"),
            ("t", deep(1500).encode()),
            ("t", b"\xff\xfe\x00"),
            ("t", json.dumps({"v": 10**100, "attempt": 2**70, "kind": "started"}).encode()),
        ):
            response = requests.post(
                f"{api.api_url}/api/v1/work/{task_id}/{what}",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=30,
            )
            assert 400 <= response.status_code < 500, (what, task_id[:20], response.text)
        oversized = requests.post(f"{api.api_url}/api/v1/work/t/{what}", data=b" " * 5000, timeout=30)
        assert_refused(oversized, 413, "oversized")


def test_a_job_parameter_of_the_wrong_type_is_a_4xx(member):
    text = "Du texte à résumer ou à traduire."
    wrong = {
        "summarise": (
            {"text": ["a"]},
            {"text": {"a": 1}},
            {"text": None},
            {"text": text, "max_words": "ten"},
            {"text": text, "max_words": 10**400},
            {"text": text, "max_words": [20]},
            {"text": text, "language": ["fr"]},
            {"text": text, "language": {"fr": 1}},
        ),
        "translate": (
            {"text": text, "target": 5},
            {"text": text, "target": ["fr"]},
            {"text": 5, "target": "fr"},
        ),
    }
    for kind, bodies in wrong.items():
        for body in bodies:
            response = member.post(f"/api/v1/jobs/{kind}", json=body)
            assert 400 <= response.status_code < 500, (kind, body, response.text)
            assert response.json()["error"]["code"], response.text
    for raw in (b'{"text": "Du texte.", "max_words": 1e400}', b'{"text": "Du texte.", "max_words": NaN}'):
        response = member.post(
            "/api/v1/jobs/summarise", data=raw, headers={"Content-Type": "application/json"}
        )
        assert 400 <= response.status_code < 500, (raw, response.text)
    for kind in ("%00", "x" * 1000, "ocr%00"):
        assert_refused(
            member.post(f"/api/v1/jobs/{kind}", json={"text": "Du texte."}), 422, "invalid_parameter"
        )


def test_a_value_the_database_refuses_that_no_check_caught_is_a_400_not_a_500(flask_app):
    """The general guard behind every route's own checks (``app.errors.known_fault``)."""
    from sqlalchemy import select, text

    from app.errors import response_for
    from app.extensions import db
    from app.models import Node

    refused = []
    with flask_app.test_request_context():
        for statement in (
            select(Node).where(Node.name == "a\x00b"),  # psycopg2 refuses to send it
            text("SELECT CAST(:n AS integer)").bindparams(n="99999999999"),  # out of range
        ):
            try:
                db.session.execute(statement)
            except Exception as exc:  # noqa: BLE001
                body, status, _ = response_for(exc)
                refused.append((status, body.get_json()["error"]["code"]))
            db.session.rollback()
    assert refused == [(400, "invalid_parameter")] * 2


# --- a fuzzer of our own -----------------------------------------------------------------------

_TEXTS = [
    "",
    "\x00",
    "a\x00b",
    "%00",
    "é",
    "🙂",
    "\u202e",
    "x" * 300,
    "x" * 5000,
    "-1",
    "0",
    "99999999999999999999",
    "1e400",
    "NaN",
    "null",
    "[]",
    "{}",
    "' OR 1=1 --",
    "\r\n",
    "00000000-0000-0000-0000-000000000000",
    "fra+eng",
    "fr",
    "2026-13",
]
_VALUES = [
    *_TEXTS,
    0,
    -1,
    2**31,
    2**63,
    10**100,
    1e308,
    -0.0,
    None,
    True,
    [],
    {},
    [[[[["deep"]]]]],
    {"a": {"b": 1}},
]
_FIELDS = ["text", "language", "max_words", "target", "translate_to", "languages", "name", "owner", "period"]
_QUERY = ["page", "per_page", "state", "kind", "owner", "mine", "period", "endpoint", "_external", "_anchor"]


def _fuzzed_requests(api_url: str, seed: int, count: int) -> Iterator[tuple[str, str, dict]]:
    rng = random.Random(seed)

    def segment() -> str:
        return quote(rng.choice(_TEXTS), safe="") or "x"

    def body() -> dict:
        roll = rng.random()
        if roll < 0.6:
            return {"json": {rng.choice(_FIELDS): rng.choice(_VALUES) for _ in range(rng.randint(0, 4))}}
        if roll < 0.8:
            return {"data": {rng.choice(_FIELDS): rng.choice(_TEXTS) for _ in range(rng.randint(0, 3))}}
        return {
            "data": rng.choice([b"[", b"\xff", b"null", b"1", deep(rng.randint(1, 3000)).encode()]),
            "headers": {"Content-Type": "application/json"},
        }

    routes = [
        lambda: ("GET", f"/api/v1/jobs/{segment()}", {}),
        lambda: ("POST", f"/api/v1/jobs/{segment()}/cancel", {}),
        lambda: ("POST", f"/api/v1/jobs/{rng.choice(['summarise', 'translate', 'ocr', 'pipeline'])}", body()),
        lambda: ("POST", f"/api/v1/jobs/{segment()}", body()),
        lambda: (
            "GET",
            "/api/v1/jobs",
            {"params": {rng.choice(_QUERY): rng.choice(_TEXTS) for _ in range(3)}},
        ),
        lambda: ("GET", f"/api/v1/nodes/{segment()}", {}),
        lambda: (
            "POST",
            f"/api/v1/nodes/{segment()}/{rng.choice(['pause', 'resume', 'revoke', 'approve'])}",
            {},
        ),
        lambda: ("POST", "/api/v1/nodes", body()),
        lambda: ("GET", "/api/v1/nodes", {"params": {rng.choice(_QUERY): rng.choice(_TEXTS)}}),
        lambda: ("GET", "/api/v1/ledger/nodes", {"params": {rng.choice(_QUERY): rng.choice(_TEXTS)}}),
        lambda: (
            "GET",
            f"/api/v1/participants/{rng.choice(['1', '0', '2147483648', '9' * 30, segment()])}/statement",
            {"params": {"period": rng.choice(_TEXTS)}},
        ),
        lambda: ("POST", f"/api/v1/work/{segment()}/{rng.choice(['input', 'progress'])}", body()),
    ]
    for _ in range(count):
        method, path, options = rng.choice(routes)()
        yield method, path, options


@pytest.mark.parametrize("who", ["member", "operator"])
def test_a_few_hundred_fuzzed_requests_get_no_5xx(api, member, operator, who):
    client = {"member": member, "operator": operator}[who]
    answers: dict[int, int] = {}
    server_errors = []
    submitted, enrolled = [], []
    for method, path, options in _fuzzed_requests(api.api_url, seed=15 + len(who), count=300):
        response = client.session.request(method, api.api_url + path, timeout=30, **options)
        answers[response.status_code] = answers.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            server_errors.append((method, path[:80], str(options)[:200], response.text[:200]))
        elif response.status_code == 202:
            submitted.append(response.json()["id"])
        elif response.status_code == 201:
            enrolled.append(response.json()["node"]["id"])
        elif response.status_code != 414:  # gunicorn's own, for a request line over 4094 bytes
            assert response.headers["Content-Type"].startswith("application/json"), (path, response.text)
    for job_id in submitted:  # nothing fuzzed is left queued, nor enrolled
        client.post(f"/api/v1/jobs/{job_id}/cancel")
    for node_id in enrolled:
        client.post(f"/api/v1/nodes/{node_id}/revoke")
    print(f"{who}: answers by status {dict(sorted(answers.items()))}")
    assert not server_errors, (answers, server_errors[:5])


# --- a body shorter than its Content-Length -------------------------------------------------


def _raw(api_url: str, data: bytes) -> socket.socket:
    where = urlsplit(api_url)
    connection = socket.create_connection((where.hostname, where.port), timeout=30)
    connection.sendall(data)
    return connection


def _head(path: str, token: str | None, length: int | None, kind: str = "application/json") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: grid.test", f"Content-Type: {kind}"]
    lines.append(f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked")
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(connection: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_a_body_that_ends_before_its_content_length_is_refused_not_taken_for_the_whole(api, member):
    token = member.session.headers["Authorization"].split()[1]
    form = "multipart/form-data; boundary=cut"
    upload = b'--cut\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n\r\n%PDF-1.4 '
    for path, who, kind, body in (
        ("/api/v1/jobs/summarise", token, "application/json", b'{"text": "Une phrase coup'),
        ("/api/v1/jobs/summarise", token, "application/x-www-form-urlencoded", b"text=Une+phrase+coup"),
        ("/api/v1/jobs/ocr", token, form, upload),
        ("/api/v1/nodes", token, "application/json", b'{"name": "alice-'),
        ("/api/v1/work/t/input", None, "application/json", b'{"task_id": "t", '),
    ):
        connection = _raw(api.api_url, _head(path, who, len(body) + 100, kind) + body)
        connection.shutdown(socket.SHUT_WR)  # the client is done: 100 bytes will never come
        status, _, answer = _answer(connection)
        connection.close()
        assert status == 400, (path, kind, answer)
        assert json.loads(answer)["error"]["code"] == "incomplete_body", (path, kind, answer)
    # Chunked, and cut before its last chunk, or with a chunk size that is not one.
    for chunks in (b'9\r\n{"text": \r\n', b'zz\r\n{"text": \r\n0\r\n\r\n', b'9\r\n{"text": XXXX0\r\n\r\n'):
        connection = _raw(api.api_url, _head("/api/v1/jobs/summarise", token, None) + chunks)
        connection.shutdown(socket.SHUT_WR)
        status, _, answer = _answer(connection)
        connection.close()
        assert status == 400, (chunks, answer)
        assert json.loads(answer)["error"]["code"] == "incomplete_body", answer


def test_a_body_that_stops_arriving_times_out_and_holds_no_thread(api, member):
    """gunicorn reads a body from a blocking socket without a timeout: a client that sends part
    of it and waits would hold a thread for as long as it likes (``app.request_body``)."""
    token = member.session.headers["Authorization"].split()[1]
    threads = 4  # tests.grid's gunicorn
    began = time.monotonic()
    stalled = [
        _raw(api.api_url, _head("/api/v1/jobs/summarise", token, 1000) + b'{"text": "')
        for _ in range(threads + 2)
    ]
    # Every thread is waiting for a body; the API still answers, soon.
    assert requests.get(f"{api.api_url}/healthz", timeout=4 * BODY_TIMEOUT + 5).status_code == 200
    for connection in stalled:
        status, headers, answer = _answer(connection)
        assert status == 408, answer
        assert json.loads(answer)["error"]["code"] == "request_timeout"
    for connection in stalled:
        assert connection.recv(1) == b""  # and the connection is closed
        connection.close()
    assert time.monotonic() - began < 4 * BODY_TIMEOUT + 10


def test_nothing_above_was_logged_as_a_bug(api):
    assert not [p.name for p in api.processes if "unexpected error" in p.output()]
