"""The request body as the API reads it, under gunicorn: bounded in time, and whole or refused.

gunicorn's threaded worker reads a request body from a blocking socket with no timeout: a
client that announces a ``Content-Length`` and sends less, then neither sends nor closes, holds
a worker thread for as long as it keeps the connection open (measured with gunicorn 27: a
thread still held after 70 s; a few such connections stop the API). And a client that sends
less, then closes its side, has its short body handed to the application as if it were whole.

This WSGI middleware, for a request that has a body:

- waits at most ``REQUEST_BODY_TIMEOUT`` seconds for each piece of it (a socket timeout on
  gunicorn's connection, ``environ["gunicorn.socket"]``); past that the request is answered
  408 ``request_timeout``, and gunicorn closes the connection (it cannot drain the rest of
  the body). The limit is lifted once the answer starts, so a slow reader of a large answer (a
  volunteer fetching a document) is not cut off;
- refuses a body that ends before its ``Content-Length`` (or before its last chunk, or whose
  chunked encoding is broken): 400 ``incomplete_body``, never a truncated upload or text taken
  for the whole, nor a 500 from gunicorn's own parsing error;
- answers ``Connection: close`` when it leaves more of the body unread than gunicorn drains (a
  body refused before it was read: 413), as gunicorn then closes the connection.

Under any other WSGI server (Flask's test client) only the second holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from werkzeug.exceptions import RequestTimeout

from app.errors import IncompleteBody

#: What gunicorn (27) reads and throws away of a body left unread before it takes the
#: connection's next request; past that it closes the connection.
SERVER_DRAINS_BYTES = 64 * 1024


class _Body:
    """``wsgi.input``, counting what it gives against the announced length."""

    def __init__(self, stream: Any, length: int | None, timeout: float | None) -> None:
        self.stream = stream
        self.length = length
        self.timeout = timeout
        self.received = 0
        self.timed_out = False
        self.ended = False

    def _read(self, method: Callable[[int], bytes], size: int | None, *, line: bool = False) -> bytes:
        try:
            data = method(-1 if size is None else size)
        except TimeoutError:
            self.timed_out = True
            raise RequestTimeout(
                f"The request body stopped arriving for {self.timeout:g} s before it was complete."
            ) from None
        except Exception:  # noqa: BLE001  the server's reader: the body ended early, or is broken
            raise IncompleteBody(
                "The request body could not be read whole: it ended before its last chunk, or its "
                "chunked encoding is broken."
            ) from None
        self.received += len(data)
        wanted_all = not line and (size is None or size < 0)
        ended = not data and size != 0
        self.ended = self.ended or ended or wanted_all
        if self.length is not None and self.received < self.length and (ended or wanted_all):
            raise IncompleteBody(
                f"The request body ended after {self.received} of the {self.length} bytes its "
                "Content-Length announced."
            )
        return data

    def left_unread(self) -> bool:
        """More of the body is still to come than the server drains before its next request: a
        body refused before it was read (413), or a chunked one not read to its end."""
        if self.length is None:
            return not self.ended
        return self.length - self.received > SERVER_DRAINS_BYTES

    def read(self, size: int | None = -1) -> bytes:
        return self._read(self.stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._read(self.stream.readline, size, line=True)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self):
        return iter(self.readline, b"")


def _close_after(start_response: Callable) -> None:
    """Has gunicorn close the connection after this answer, and say so (``Connection: close``).
    It does not take that header from an application, and, left to itself, answers
    ``keep-alive``, then finds more of the body than it drains and closes the connection
    anyway: a client sending its next request on it meets a connection closed without an
    answer (a POST is not sent again)."""
    response = getattr(start_response, "__self__", None)
    force_close = getattr(response, "force_close", None)
    if callable(force_close):
        force_close()


def _content_length(environ: dict[str, Any]) -> int | None:
    value = environ.get("CONTENT_LENGTH", "")
    return int(value) if value.isascii() and value.isdigit() else None


class BoundedBody:
    """WSGI middleware: see the module."""

    def __init__(self, wsgi_app: Callable, timeout: float) -> None:
        self.wsgi_app = wsgi_app
        self.timeout = timeout

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        length = _content_length(environ)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if not length and not chunked:
            return self.wsgi_app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        if not environ.get("SERVER_PROTOCOL", "").startswith("HTTP/1"):
            sock = None  # an HTTP/2 connection carries other streams: leave its socket alone
        body = _Body(environ["wsgi.input"], length, self.timeout if sock is not None else None)
        environ["wsgi.input"] = body
        if sock is None:
            return self.wsgi_app(environ, start_response)
        previous = sock.gettimeout()
        sock.settimeout(self.timeout)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable:
            # The answer is written without the body's limit. After a timeout the limit stays:
            # gunicorn then fails to drain the rest of the body and closes the connection.
            if not body.timed_out:
                sock.settimeout(previous)
            if body.left_unread():
                _close_after(start_response)
            return start_response(status, headers, exc_info)

        try:
            return self.wsgi_app(environ, start)
        except BaseException:
            if not body.timed_out:
                sock.settimeout(previous)
            raise
