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

A call may also have a deadline for the whole of it (progress, a stream's text: small answers),
kept by one thread a process: a coordinator that drips its answer (a byte, a header or a chunked
body's trailer line at a time, each within the per-read timeout) no longer holds the caller
for as long as it keeps dripping (the task's time limit ends a task, not a stream's thread).
A forked child starts with its own locks and no connection of its parent's.
"""

from __future__ import annotations

import http.client
import io
import os
import select
import socket
import threading
import time
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


def post_json(
    url: str, body: bytes, timeout: float, max_bytes: int, deadline: float | None = None
) -> tuple[Message, bytes]:
    """POST ``body`` (JSON) to ``url``: the answer's headers and at most ``max_bytes + 1`` bytes
    of its body (more than ``max_bytes``: the caller refuses it). ``timeout`` bounds each wait
    for the coordinator; ``deadline``, if given, the whole call (a resend included): past it
    the connection is cut and ``URLError`` raised, whatever a coordinator dripping its answer
    (a byte, a header or a chunked body's trailer line at a time) keeps sending. Without it the
    call is bounded only by the task's time limit (an input of megabytes on a slow link)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"unknown url type: {url!r}")
    if _proxied(parts):
        return _through_urllib(url, body, timeout, max_bytes)
    key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json"}
    end = None if deadline is None else time.monotonic() + deadline
    for fresh in (False, True):
        connection, reused = _take(key, timeout, fresh)
        clock = None if end is None else _Clock(connection, end - time.monotonic())
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as exc:
            connection.close()
            _over(clock, deadline)
            if reused:  # closed by the coordinator as it was reused: it never answered
                continue
            raise urllib.error.URLError(exc) from None
        except http.client.HTTPException as exc:
            connection.close()
            _over(clock, deadline)
            raise urllib.error.URLError(exc) from None
        except BaseException:
            connection.close()
            _over(clock, deadline)
            raise
        try:
            data = response.read(max_bytes + 1)
        except http.client.HTTPException as exc:
            connection.close()
            _over(clock, deadline)
            raise urllib.error.URLError(exc) from None
        except BaseException:
            connection.close()
            _over(clock, deadline)
            raise
        if clock is not None and clock.stop():  # cut as the answer ended: not to be reused
            connection.close()
            _over(clock, deadline)
        if len(data) > max_bytes or response.will_close or not response.isclosed():
            connection.close()  # the rest is not read: the connection cannot carry another
        else:
            _give_back(key, connection)
        if not 200 <= response.status < 300:
            answer = io.BytesIO(data)
            raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, answer)
        return response.headers, data
    raise AssertionError("unreachable")  # the second pass is on a new connection


#: How often the deadlines of the calls under way are looked at: a call is cut at most this
#: late. One thread a process looks (a timer thread a call cost ~2 ms of a loaded machine).
WATCH_SECONDS = 0.25

_clocks_lock = threading.Lock()
_clocks: dict[int, _Clock] = {}
_watcher_pid: int | None = None


class _Clock:
    """Has ``connection`` cut (its socket shut down, which ends any read waiting on it) once
    ``seconds`` have passed, unless stopped first."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        global _watcher_pid
        self.connection = connection
        self.end = time.monotonic() + max(0.0, seconds)
        self.fired = False
        with _clocks_lock:
            _clocks[id(self)] = self
            if _watcher_pid != os.getpid():
                _watcher_pid = os.getpid()
                threading.Thread(target=_watch, name="coordinator-deadlines", daemon=True).start()

    def stop(self) -> bool:
        """Stops the clock; True if the connection was cut (or is being cut)."""
        with _clocks_lock:
            _clocks.pop(id(self), None)
            return self.fired


def _watch() -> None:
    while True:
        time.sleep(WATCH_SECONDS)
        now = time.monotonic()
        with _clocks_lock:
            due = [clock for clock in _clocks.values() if clock.end <= now]
            for clock in due:
                del _clocks[id(clock)]
                clock.fired = True  # its call closes the connection: never reused
        for clock in due:
            sock = clock.connection.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def _over(clock: _Clock | None, deadline: float | None) -> None:
    """Raises ``URLError`` (a timeout) if ``clock`` cut the call; else stops it."""
    if clock is not None and clock.stop():
        raise urllib.error.URLError(TimeoutError(f"no whole answer within {deadline} s")) from None


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


def _after_fork() -> None:
    """A forked child (Celery's prefork pool) starts with its own locks, none of its parent's
    connections, and no watcher (its parent's thread is not in it)."""
    global _lock, _clocks_lock, _pid, _watcher_pid
    _lock, _clocks_lock = threading.Lock(), threading.Lock()
    _idle.clear()
    _clocks.clear()
    _pid, _watcher_pid = os.getpid(), None


os.register_at_fork(after_in_child=_after_fork)
