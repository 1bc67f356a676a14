"""A volunteer's calls to the coordinator (input, progress, a stream's text) share one kept-open
connection (workers.coordinator_http), against the real API under gunicorn: reused while it is
open, replaced when gunicorn closed it after its keep-alive, and the coordinator's refusals and
absence raise what the callers classify, as with a connection per call."""

from __future__ import annotations

import json
import time
import urllib.error
import uuid

import pytest

from tests.grid import free_port
from workers import coordinator_http


def _idle_sockets() -> list:
    return [connection.sock for idle in coordinator_http._idle.values() for connection in idle]


def _post(api_url: str, what: str = "progress") -> None:
    coordinator_http.post_json(f"{api_url}/api/v1/work/{uuid.uuid4()}/{what}", b"{}", 5, 64 * 1024)


def test_calls_share_a_connection_and_refusals_keep_their_status_and_code(grid):
    coordinator_http._idle.clear()
    kept = []
    for _ in range(3):
        with pytest.raises(urllib.error.HTTPError) as refused:
            _post(grid.api_url)
        assert 400 <= refused.value.code < 500
        assert json.loads(refused.value.read(4096))["error"]["code"]  # the body, for the reason
        kept += _idle_sockets()  # the refusal read whole: its connection kept open
    assert len(kept) == 3 and kept[0] is not None and kept[0] is kept[1] is kept[2]


def test_a_connection_the_coordinator_closed_is_replaced(grid):
    coordinator_http._idle.clear()
    with pytest.raises(urllib.error.HTTPError):
        _post(grid.api_url)
    [before] = _idle_sockets()
    time.sleep(3)  # gunicorn's keep-alive (2 s) closes the idle connection
    with pytest.raises(urllib.error.HTTPError) as refused:
        _post(grid.api_url, "input")
    assert 400 <= refused.value.code < 500  # an answer, on a new connection
    [after] = _idle_sockets()
    assert after is not before


def test_a_coordinator_that_cannot_be_reached_is_an_os_error():
    coordinator_http._idle.clear()
    with pytest.raises((urllib.error.URLError, OSError)):
        _post(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ValueError):
        _post("ftp://127.0.0.1")
