"""The volunteer's HTTP calls to the coordinator (an input, progress, a stream's text) on
connections kept open between calls (keep-alive), a few per worker process.

Each call used to open a connection of its own (``urllib.request``): a TCP handshake, with
TLS a full handshake, and for the coordinator's API a connection to accept and set up, per
request. The calls keep what they had: the same timeouts (per call), the same TLS
verification (``http.client``'s default context, as ``urllib``'s), the same proxies (a
coordinator reached through one from the environment is asked through ``urllib`` as before),
and the same errors: an answer other than 2xx raises ``urllib.error.HTTPError`` with its
status, headers and body; a coordinator that cannot be reached raises ``URLError`` or
``OSError``. A connection the coordinator closed while it was idle (gunicorn's
``--keep-alive``) is noticed before it is used, and a request that meets it closed anyway (a
race with that close) is sent once more on a new one: the coordinator never answered it.
"""

from __future__ import annotations

import http.client
import io
import os
import select
import threading
import urllib.error
import urllib.parse
import urllib.request
from email.message import Message

#: Idle connections kept per coordinator address in a process (the task's thread, a stream's
#: thread: rarely more than two at once).
IDLE_MAX = 4

_lock = threading.Lock()
_idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
_pid = os.getpid()


def post_json(url: str, body: bytes, timeout: float, max_bytes: int) -> tuple[Message, bytes]:
    """POST ``body`` (JSON) to ``url``: the answer's headers and at most ``max_bytes + 1`` bytes
    of its body (more than ``max_bytes``: the caller refuses it)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unknown url type: {url!r}")
    if _proxied(parts):
        return _through_urllib(url, body, timeout, max_bytes)
    key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json"}
    for fresh in (False, True):
        connection, reused = _take(key, timeout, fresh)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            connection.close()
            if reused:  # closed by the coordinator as it was reused: it never answered
                continue
            raise urllib.error.URLError(exc) from None
        except http.client.HTTPException as exc:
            connection.close()
            raise urllib.error.URLError(exc) from None
        except BaseException:
            connection.close()
            raise
        try:
            data = response.read(max_bytes + 1)
        except http.client.HTTPException as exc:
            connection.close()
            raise urllib.error.URLError(exc) from None
        except BaseException:
            connection.close()
            raise
        if len(data) > max_bytes or response.will_close or not response.isclosed():
            connection.close()  # the rest is not read: the connection cannot carry another
        else:
            _give_back(key, connection)
        if not 200 <= response.status < 300:
            answer = io.BytesIO(data)
            raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, answer)
        return response.headers, data
    raise AssertionError("unreachable")  # the second pass is on a new connection


def _proxied(parts: urllib.parse.SplitResult) -> bool:
    proxies = urllib.request.getproxies()
    return bool(proxies.get(parts.scheme)) and not urllib.request.proxy_bypass(parts.netloc)


def _through_urllib(url: str, body: bytes, timeout: float, max_bytes: int) -> tuple[Message, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.headers, response.read(max_bytes + 1)


def _take(key: tuple[str, str, int], timeout: float, fresh: bool) -> tuple[http.client.HTTPConnection, bool]:
    """An idle connection to ``key`` still open (and True), or a new one (and False)."""
    global _pid
    with _lock:
        if _pid != os.getpid():  # a forked child: its parent's connections are not its own
            _idle.clear()
            _pid = os.getpid()
        idle = _idle.get(key, [])
        while idle and not fresh:
            connection = idle.pop()
            if _still_open(connection):
                connection.timeout = timeout
                connection.sock.settimeout(timeout)
                return connection, True
            connection.close()
    scheme, host, port = key
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout), False
    return http.client.HTTPConnection(host, port, timeout=timeout), False


def _give_back(key: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
    with _lock:
        idle = _idle.setdefault(key, [])
        if _pid == os.getpid() and len(idle) < IDLE_MAX:
            idle.append(connection)
            return
    connection.close()


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """False when the coordinator closed the idle connection (it reads as ready: its end, or
    bytes nobody asked for)."""
    if connection.sock is None:
        return False
    try:
        readable, _, _ = select.select([connection.sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
