"""A member follows a job live through Server-Sent Events (``GET /api/v1/jobs/<id>/events``)
on the real grid: its summary each time it changes, ``end`` when it is over; reconnection with
``Last-Event-ID``; the stream's bounded life; who may follow which job."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import requests

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import Client, wait_for

JOB_STATES = ("queued", "running", "succeeded")
SHORT = "Le conseil approuve le budget des travaux de la toiture."


@dataclass
class Block:
    """One block of an event stream (up to a blank line), parsed by the SSE rules, and when
    it arrived."""

    at: float
    event: str | None = None
    id: str | None = None
    data: str | None = None
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    def json(self) -> dict:
        return json.loads(self.data)


def read_stream(response: requests.Response) -> list[Block]:
    """Every block of the stream until the server closes it."""
    assert response.status_code == 200, response.text
    blocks: list[Block] = []
    block = None
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if block is None:
            block = Block(at=time.monotonic())
        if line == "":
            blocks.append(block)
            block = None
        elif line.startswith(":"):
            block.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                block.data = value if block.data is None else f"{block.data}\n{value}"
            elif name == "retry":
                block.retry = int(value)
            elif name in ("event", "id"):
                setattr(block, name, value)
    assert block is None, f"the stream ended mid-block: {block}"
    return blocks


def follow(client: Client, job_id: str, last_event_id: str | None = None) -> list[Block]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with client.session.get(
        f"{client.base_url}/api/v1/jobs/{job_id}/events", headers=headers, stream=True, timeout=(5, 60)
    ) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        return read_stream(response)


def events(blocks: list[Block], name: str) -> list[Block]:
    return [block for block in blocks if block.event == name]


def assert_ends_with_job_then_end(blocks: list[Block], job_id: str, state: str = "succeeded") -> dict:
    """The last job event shows the job final, an ``end`` event of the same id follows it, and
    nothing after; returns the last job event's summary."""
    named = [block for block in blocks if block.event]
    assert [block.event for block in named[-2:]] == ["job", "end"], named
    last, end = named[-2], named[-1]
    assert blocks[-1] is end
    assert end.json() == {"id": job_id, "state": state} and end.id == last.id
    summary = last.json()
    assert summary["id"] == job_id and summary["state"] == state
    return summary


def assert_each_event_changes_the_summary(jobs: list[Block]) -> None:
    ids = [block.id for block in jobs]
    assert len(set(ids)) == len(ids), ids
    summaries = [block.json() for block in jobs]
    assert all(a != b for a, b in zip(summaries, summaries[1:], strict=False))
    assert all("result" not in summary for summary in summaries)  # fetched from the job at the end
    order = [JOB_STATES.index(summary["state"]) for summary in summaries]
    assert order == sorted(order), [summary["state"] for summary in summaries]


def test_a_member_follows_a_multi_page_ocr_job_page_by_page_until_it_ends(client):
    pages = 5  # about a second a page: several reads of the stream while it runs
    job = client.submit_document("ocr", text_pdf([FRENCH_LINES] * pages), "long.pdf", languages="fra")

    blocks = follow(client, job["id"])

    assert blocks[0].retry is not None and blocks[0].event is None  # reconnection advice first
    jobs = events(blocks, "job")
    assert_each_event_changes_the_summary(jobs)
    done = [(block.json()["steps"][0]["progress"] or {}).get("pages_done", 0) for block in jobs]
    assert done == sorted(done), done
    assert any(0 < count < pages for count in done), f"no page count seen mid-way: {done}"
    assert jobs[0].json()["state"] in ("queued", "running")
    final = assert_ends_with_job_then_end(blocks, job["id"])
    assert final["steps"][0]["progress"] == {"pages_done": pages, "pages_total": pages}
    assert final["steps"][0]["node"].startswith("ocr-node@")
    fetched = client.job(job["id"])
    assert fetched["result"]["pages"] == pages  # the result is the job's, read once at the end
    assert {key: value for key, value in fetched.items() if key != "result"} == final


def test_a_member_watches_a_pipeline_move_from_ocr_to_the_summary(client):
    job = client.submit_document("pipeline", text_pdf([FRENCH_LINES] * 2), "pv.pdf", languages="fra")

    blocks = follow(client, job["id"])

    jobs = events(blocks, "job")
    assert_each_event_changes_the_summary(jobs)
    step_states = [[step["state"] for step in block.json()["steps"]] for block in jobs]
    # The summary waits for the OCR text: it is queued until the OCR step has succeeded.
    for ocr, summarise in step_states:
        assert summarise == "queued" or ocr == "succeeded", step_states
    assert any(ocr in ("queued", "running") for ocr, _ in step_states), step_states  # followed live
    final = assert_ends_with_job_then_end(blocks, job["id"])
    assert [step["state"] for step in final["steps"]] == ["succeeded", "succeeded"]
    assert final["steps"][1]["node"].startswith("llm-node@") and final["steps"][1]["progress"]["tokens"] > 0
    assert client.job(job["id"])["result"]["summary"]


def test_a_reconnection_with_the_final_state_s_id_gets_end_at_once(client):
    job = client.submit_text("summarise", text=SHORT, language="fr")
    first = follow(client, job["id"])
    final_id = events(first, "end")[0].id

    asked = time.monotonic()
    again = follow(client, job["id"], last_event_id=final_id)

    assert events(again, "job") == []  # nothing changed since that event
    assert [block.event for block in again if block.event] == ["end"]
    assert again[-1].id == final_id and again[-1].at - asked < 3
    # An id that is not the current state's gets the state, then end.
    stale = follow(client, job["id"], last_event_id=events(first, "job")[0].id)
    assert [block.event for block in stale if block.event] == ["job", "end"]
    assert stale[-2].id == final_id


def test_only_the_job_s_owner_follows_it_and_only_with_a_token(grid, client, make_token):
    job = client.submit_text("summarise", text=SHORT, language="fr")
    path = f"/api/v1/jobs/{job['id']}/events"

    stranger = Client(grid.api_url, make_token("stranger@koprogo.test"))
    response = stranger.get(path)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert stranger.get("/api/v1/jobs/not-a-job-id/events").status_code == 404

    response = requests.get(grid.api_url + path, timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "auth_required"
    response = requests.get(grid.api_url + path, headers={"Authorization": "Bearer kgg_nope"}, timeout=10)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"
    client.wait(job["id"])


def test_a_stream_on_a_job_that_does_not_end_closes_after_its_time_with_retry_advice(fresh_grid, make_token):
    # An API of this test's own, with a stream's life of 3 s and a heartbeat each second; no
    # volunteer consumes its queue, so the job stays queued.
    fresh_grid.env.update({"GRID_EVENTS_MAX_SECONDS": "3", "GRID_EVENTS_HEARTBEAT_SECONDS": "1"})
    client = Client(fresh_grid.api(), make_token("waiter@koprogo.test"))
    job = client.submit_text("summarise", text=SHORT, language="fr")
    try:
        opened = time.monotonic()
        blocks = follow(client, job["id"])
        lasted = blocks[-1].at - opened

        assert 3 <= lasted < 8, lasted
        jobs = events(blocks, "job")
        assert len(jobs) == 1 and jobs[0].json()["state"] == "queued"
        assert events(blocks, "end") == []
        assert sum("keep-alive" in block.comments for block in blocks) >= 1
        assert blocks[-1].retry == 2000 and blocks[-1].event is None  # GRID_EVENTS_RETRY_MILLISECONDS

        # The client reconnects with the last id: nothing changed, so no event, only keep-alives.
        again = follow(client, job["id"], last_event_id=jobs[0].id)
        assert events(again, "job") == [] and events(again, "end") == []
        assert any("keep-alive" in block.comments for block in again)
    finally:
        assert client.post(f"/api/v1/jobs/{job['id']}/cancel").status_code == 200


def test_open_streams_are_bounded_per_client_and_per_process(fresh_grid, make_token):
    """A stream holds one of the API's threads: one client's tabs or script cannot take them all."""
    fresh_grid.env.update(
        GRID_EVENTS_STREAMS_PER_CLIENT="2",
        GRID_EVENTS_STREAMS_PER_PROCESS="3",
        GRID_EVENTS_HEARTBEAT_SECONDS="1",  # a client gone is noticed at the next write
    )
    mine = Client(fresh_grid.api(), make_token("streamer@koprogo.test"))
    theirs = Client(fresh_grid.api_url, make_token("another-streamer@koprogo.test"))
    job_id = mine.submit_text("summarise", text=SHORT, language="fr")["id"]  # no worker: stays queued
    other_job = theirs.submit_text("summarise", text=SHORT, language="fr")["id"]

    def open_stream(who: Client, job: str) -> requests.Response:
        return who.session.get(f"{who.base_url}/api/v1/jobs/{job}/events", stream=True, timeout=(5, 30))

    first, second = open_stream(mine, job_id), open_stream(mine, job_id)
    assert first.status_code == second.status_code == 200
    third = open_stream(mine, job_id)
    assert third.status_code == 429 and third.json()["error"]["code"] == "too_many_streams"
    assert int(third.headers["Retry-After"]) >= 1
    # Another client still gets one, up to the process's bound (a thread is left for the rest).
    one = open_stream(theirs, other_job)
    assert one.status_code == 200
    full = open_stream(theirs, other_job)
    assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_streams"
    assert theirs.get(f"/api/v1/jobs/{other_job}").status_code == 200  # reads still answered
    # A stream its client leaves gives its place back.
    first.close()
    again = wait_for(
        lambda: (r := open_stream(mine, job_id)).status_code == 200 and r, 10, "a place to open again"
    )
    for response in (second, one, again):
        response.close()
