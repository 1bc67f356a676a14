"""A batch of jobs (``POST /api/v1/jobs/batch``) against a hostile client: what the grid reads
and holds for a request it then refuses, on an app in this process (as tests/test_api_batch.py)."""

from __future__ import annotations

import tracemalloc

from tests.test_api_batch import BATCH, _app, _client, _owner, _token
from tests.web import address as new_address

#: A body at the batch's byte limit that parses into over a million objects (~100 MB in Python).
MANY_OBJECTS = 1_300_000


def _peak_megabytes(post) -> float:
    tracemalloc.start()
    try:
        answer = post()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return answer, peak / 1e6


def test_the_body_of_a_batch_without_a_token_that_may_submit_is_not_parsed():
    """The limiter counts a batch's jobs before the route checks the token: only for a token
    that may submit is the body read, else anyone could have the API build ~100 MB of objects
    out of 4 MB of ``[{},{},…]`` before its 401."""
    app = _app()
    body = b"[" + b"{}," * (MANY_OBJECTS - 1) + b"{}]"
    assert len(body) <= app.config["JOBS_BATCH_MAX_BYTES"]
    headers = {"Content-Type": "application/json"}

    anonymous = app.test_client()
    anonymous.environ_base["REMOTE_ADDR"] = new_address()
    answer, peak = _peak_megabytes(lambda: anonymous.post(BATCH, data=body, headers=headers))
    assert answer.status_code == 401 and peak < 30, (answer.status_code, peak)

    made_up = _client(app, "kg_made-up-token")
    answer, peak = _peak_megabytes(lambda: made_up.post(BATCH, data=body, headers=headers))
    assert answer.status_code == 401 and peak < 30, (answer.status_code, peak)

    owner = _owner()
    from app.auth import create_token
    from app.extensions import db

    with app.app_context():
        _, reader = create_token("test", owner, ["jobs:read"])
        db.session.commit()
    answer, peak = _peak_megabytes(lambda: _client(app, reader).post(BATCH, data=body, headers=headers))
    assert answer.status_code == 403 and peak < 30, (answer.status_code, peak)

    # A token that may submit has its batch read, and refused for its size in jobs.
    writer = _client(app, _token(app, owner))
    assert writer.post(BATCH, data=body, headers=headers).get_json()["error"]["code"] == "too_many_jobs"


def test_a_refused_batch_given_back_as_its_window_ends_leaves_no_count_below_zero():
    """A batch over what is left is given back its cost: were the count read and decremented
    apart, a window ending between the two would have the decrement start the next window below
    zero (that much over the limit there). Refused batches are sent as windows of a second end."""
    import time

    from flask_limiter import RequestLimit
    from limits import parse

    from app.api import limits
    from app.extensions import limiter

    app = _app()
    token = _token(app, _owner())
    item = parse("5 per 1 second")
    body = [{"kind": "noop"}] * 6
    headers = {"Authorization": f"Bearer {token}"}
    with app.test_request_context(BATCH, method="POST", json=body, headers=headers):
        strategy = limiter.limiter
        storage = strategy.storage
        args = [f"token:{_owner()}", "api-submit"]
        refused = RequestLimit(limiter, item, args, True, True)
        redis = storage.get_connection()
        counts = []
        for window in range(8):
            while not strategy.hit(item, *args):  # one submission opens the window
                time.sleep(0.001)
            ttl = redis.pttl(storage.prefixed_key(refused.key))
            # From 4 ms before the window ends, at a phase of the loop that changes each window.
            time.sleep(max(0, ttl - 4 + window * 0.07) / 1000)
            deadline = time.monotonic() + 0.012
            while time.monotonic() < deadline:  # across the window's end
                if not strategy.hit(item, *args, cost=6):
                    limits.give_back_batch(refused)
                counts.append(storage.get(refused.key))
        assert min(counts) >= 0, sorted(counts)[:5]


def test_a_batch_larger_than_the_whole_limit_is_told_it_never_fits_not_to_wait():
    """JOBS_BATCH_MAX (100) is above the default submission limit (60 a minute): such a batch
    was a 429 with Retry-After, which a client waits out and sends again, refused again forever."""
    app = _app(API_SUBMIT_LIMIT="10 per minute", JOBS_BATCH_MAX=20)
    client = _client(app, _token(app, _owner()))
    answer = client.post(BATCH, json=[{"kind": "noop"}] * 11)
    assert answer.status_code == 400 and "Retry-After" not in answer.headers, answer.status_code
    error = answer.get_json()["error"]
    assert error["code"] == "too_many_jobs" and "at most 10" in error["message"], error
    assert client.post(BATCH, json=[{"kind": "noop"}] * 10).status_code == 202  # it cost nothing
