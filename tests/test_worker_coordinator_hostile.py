"""A coordinator that answers a volunteer's calls a drop at a time (workers.coordinator_http):
a progress report or a stream's text is given up within its deadline, never left waiting on a
coordinator that keeps the answer going (each wait within the per-read timeout)."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pytest

from workers import inputs, progress

#: A chunked answer whose body ends at once, then trailer lines without end.
ENDLESS_TRAILER = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", b"X-More: 1\r\n")
#: An answer of 60,000 bytes sent a byte at a time.
DRIPPED_BODY = (b"HTTP/1.1 200 OK\r\nContent-Length: 60000\r\n\r\n", b"x")


@pytest.fixture
def dripping():
    """Starts a coordinator that reads a request, sends ``head``, then ``drop`` every 0.2 s."""
    stop = threading.Event()
    listeners = []

    def start(head: bytes, drop: bytes) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.2)
        listeners.append(listener)

        def answer(conn: socket.socket) -> None:
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    piece = conn.recv(65536)
                    if not piece:
                        return
                    data += piece
                conn.sendall(head)
                while not stop.is_set():
                    try:
                        conn.sendall(drop)
                    except OSError:
                        return
                    time.sleep(0.2)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    yield start
    stop.set()
    for listener in listeners:
        listener.close()


@pytest.mark.parametrize("answer", [ENDLESS_TRAILER, DRIPPED_BODY], ids=["endless_trailer", "dripped_body"])
def test_a_progress_report_to_a_coordinator_that_never_ends_its_answer_is_given_up(
    dripping, monkeypatch, answer
):
    monkeypatch.setenv(inputs.COORDINATOR_URL_ENV, dripping(*answer))
    faults = []

    def report() -> None:
        try:
            progress.report(str(uuid.uuid4()), 0, "celery@volunteer", final=True, pages_done=1, pages_total=2)
        except BaseException as exc:  # noqa: BLE001  shown by the test
            faults.append(exc)

    started = time.monotonic()
    call = threading.Thread(target=report, daemon=True)
    call.start()
    call.join(progress._TIMEOUT * 3)
    assert not call.is_alive(), "the report still waits on the coordinator"
    assert not faults and time.monotonic() - started < progress._TIMEOUT + 2, faults
