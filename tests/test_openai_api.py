"""The OpenAI-compatible API (/v1), driven by the official ``openai`` package against the session's
grid (its LLM node runs the tiny model): chat, streamed chat, models, embeddings, errors, and the
stream channel's refusals of deltas a node may not post (docs/decisions/0018)."""

from __future__ import annotations

import json
import uuid

import openai
import pytest
import requests
from sqlalchemy import select

from tests.grid import enrolment
from workers import protocol
from workers.protocol import signing
from workers.tinymodel import N_EMBD

OWNER = "openai-client@koprogo.test"
MESSAGES = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What did the general assembly vote?"},
]


@pytest.fixture(scope="module")
def token(make_token) -> str:
    return make_token(OWNER)


@pytest.fixture(scope="module")
def ai(grid, token) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{grid.api_url}/v1", api_key=token, max_retries=0, timeout=60)


def _entry(flask_app, job_id: str):
    """The ledger's succeeded entry of the job's one step."""
    from app.extensions import db
    from app.models import Job, LedgerEntry

    with flask_app.app_context():
        job = db.session.get(Job, job_id)
        entry = db.session.scalar(
            select(LedgerEntry).where(
                LedgerEntry.task_id == job.steps[0].task_id, LedgerEntry.outcome == "succeeded"
            )
        )
        db.session.expunge_all()
        return job.steps[0].task_id, entry


def _job(grid, token: str, job_id: str) -> dict:
    response = requests.get(
        f"{grid.api_url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return response.json()


def test_models_are_the_registry_s(ai):
    models = ai.models.list().data
    assert models, "the LLM node registered its model"
    tiny = [m for m in models if m.file_name == "tiny.gguf"]
    assert tiny and tiny[0].object == "model" and tiny[0].available


def test_chat_usage_is_what_the_ledger_entered(ai, grid, token, flask_app):
    model = ai.models.list().data[0].id
    answer = ai.chat.completions.create(model=model, messages=MESSAGES, max_tokens=12, temperature=0)
    assert answer.object == "chat.completion"
    text = answer.choices[0].message.content
    assert text and answer.choices[0].finish_reason == "length"  # the tiny model never stops
    info = answer.model_extra["execution_info"]
    assert info["node"] and info["latency_ms"] > 0 and info["co2_grams"] >= 0
    _, entry = _entry(flask_app, info["job_id"])
    assert entry.unit == "token" and entry.granted_ms > 0
    assert answer.usage.total_tokens == entry.units
    assert answer.usage.completion_tokens == 12
    assert answer.usage.prompt_tokens + answer.usage.completion_tokens == entry.units
    # the token owner's job, like any other
    job = _job(grid, token, info["job_id"])
    assert (job["kind"], job["state"], job["owner"]) == ("chat", "succeeded", OWNER)
    assert job["result"]["text"] == text


def test_a_streamed_answer_arrives_as_it_is_produced(ai, grid, token, flask_app):
    stream = ai.chat.completions.create(
        model="default",
        messages=MESSAGES,
        max_tokens=400,
        temperature=0.7,
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, state_at_first, usage, finish = [], None, None, None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if not pieces:  # the job is still running when its first token arrives
                state_at_first = _job(grid, token, chunk.id.removeprefix("chatcmpl-"))["state"]
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        if chunk.usage is not None:
            usage, job_id = chunk.usage, chunk.id.removeprefix("chatcmpl-")
    assert state_at_first in ("queued", "running"), state_at_first
    assert len(pieces) >= 2 and finish == "length"
    job = _job(grid, token, job_id)
    assert job["state"] == "succeeded" and job["result"]["text"] == "".join(pieces)
    _, entry = _entry(flask_app, job_id)
    assert usage.total_tokens == entry.units and usage.completion_tokens == 400


def test_the_stream_is_server_sent_events_ending_with_done(grid, token):
    response = requests.post(
        f"{grid.api_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "messages": MESSAGES,
            "max_tokens": 5,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        stream=True,
        timeout=60,
    )
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.iter_lines(decode_unicode=True) if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5


def test_embeddings(ai, flask_app):
    answer = ai.embeddings.create(model="default", input=["Le budget est voté.", "The roof leaks."])
    assert [item.index for item in answer.data] == [0, 1]
    assert all(len(item.embedding) == N_EMBD for item in answer.data)
    assert answer.data[0].embedding != answer.data[1].embedding
    _, entry = _entry(flask_app, answer.model_extra["execution_info"]["job_id"])
    assert answer.usage.prompt_tokens == answer.usage.total_tokens == entry.units > 0
    floats = ai.embeddings.create(model="default", input="The roof leaks.", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(answer.data[1].embedding, rel=1e-5)


def test_bad_requests_are_answered_in_openai_s_shape(ai, grid):
    with pytest.raises(openai.BadRequestError) as bad:
        ai.chat.completions.create(model="default", messages=MESSAGES, temperature=5)
    assert bad.value.code == "invalid_parameter" and bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as bad:
        ai.chat.completions.create(model="default", messages=[{"role": "robot", "content": "hi"}])
    assert bad.value.param == "messages[0].role"
    # too long for the model's window (512 tokens): known only to the node, which fails the job
    with pytest.raises(openai.BadRequestError) as bad:
        ai.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "copropriété " * 900}], max_tokens=8
        )
    assert bad.value.code == "context_length_exceeded"
    with pytest.raises(openai.NotFoundError) as missing:
        ai.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert missing.value.code == "model_not_found"
    other = openai.OpenAI(base_url=f"{grid.api_url}/v1", api_key="kgg_not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        other.models.list()
    assert refused.value.code == "invalid_token"


def _delta(task_id: str, node: dict[str, str], worker: str, seq: int = 0, text: str = "free money") -> dict:
    body = protocol.body("delta", task_id=task_id, node=worker, attempt=0, seq=seq, text=text)
    return signing.sign({**body, "node_id": node["GRID_NODE_ID"]}, node["GRID_NODE_SECRET"])


def test_the_stream_channel_refuses_what_a_node_may_not_post(ai, grid, flask_app):
    answer = ai.chat.completions.create(model="default", messages=MESSAGES, max_tokens=3)
    task_id, _ = _entry(flask_app, answer.model_extra["execution_info"]["job_id"])
    url = f"{grid.api_url}/api/v1/work/{task_id}/delta"
    # unsigned
    unsigned = _delta(task_id, enrolment("llm-node"), "llm-node@host")
    unsigned.pop("signature")
    response = requests.post(url, json=unsigned, timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (400, "malformed")  # no signature
    # signed by an enrolled node that was never given this task
    mallory = enrolment("mallory-streamer", owner="mallory@koprogo.test")
    response = requests.post(url, json=_delta(task_id, mallory, "mallory-streamer@host"), timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (409, "not_started")
    # signed with another node's id
    forged = _delta(task_id, {**mallory, "GRID_NODE_ID": enrolment("llm-node")["GRID_NODE_ID"]}, "llm-node@x")
    response = requests.post(url, json=forged, timeout=10)
    assert (response.status_code, response.json()["error"]["code"]) == (403, "bad_signature")
    # a task never dispatched
    ghost = str(uuid.uuid4())
    response = requests.post(
        f"{grid.api_url}/api/v1/work/{ghost}/delta",
        json=_delta(ghost, mallory, "mallory-streamer@host"),
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]["code"]) == (404, "never_dispatched")


def test_deltas_follow_in_sequence_within_the_answer_s_bound(flask_app, grid, token, make_token):
    """The checks past the node's identity, on a chat step a node was seen starting."""
    from app import chat_stream
    from app.extensions import db
    from app.ledger.verification import Refused
    from app.models import ExecutionSighting, JobStep, StepState, utcnow

    node = enrolment("stream-checker", owner="volunteer@koprogo.test")
    with flask_app.app_context():
        from app.models import Job, JobInput

        chat = Job(kind="chat", owner=OWNER, params={"max_tokens": 2, "temperature": 0, "stop": []})
        chat.steps.append(JobStep(position=0, name="chat", task_name="grid.llm.chat", queue="llm"))
        db.session.add(chat)
        db.session.flush()
        db.session.add(JobInput(job_id=chat.id, kind="chat", data=b"[]"))
        step = chat.steps[0]
        step.state = StepState.RUNNING
        db.session.add(
            ExecutionSighting(
                task_id=step.task_id, attempt=0, node_id=node["GRID_NODE_ID"], first_seen_at=utcnow()
            )
        )
        db.session.commit()
        task_id = step.task_id
        worker = "stream-checker@host"
        assert chat_stream.append(_delta(task_id, node, worker, 0, "ab")) == 0
        with pytest.raises(Refused) as refused:  # the same number again
            chat_stream.append(_delta(task_id, node, worker, 0, "ab"))
        assert refused.value.reason == "out_of_sequence"
        with pytest.raises(Refused) as refused:  # a gap
            chat_stream.append(_delta(task_id, node, worker, 2, "cd"))
        assert refused.value.reason == "out_of_sequence"
        bound = chat_stream.bound(2)
        with pytest.raises(Refused) as refused:  # more than 2 tokens' worth of text
            chat_stream.append(_delta(task_id, node, worker, 1, "x" * bound))
        assert refused.value.reason == "oversized"
        assert [d["text"] for d in chat_stream.read(task_id, 0, 0)] == ["ab"]
        step = db.session.get(JobStep, step.id)
        step.state = step.job.state = StepState.SUCCEEDED
        db.session.commit()
        with pytest.raises(Refused) as refused:  # the step is over
            chat_stream.append(_delta(task_id, node, worker, 1, "cd"))
        assert refused.value.reason == "step_finished"
        db.session.rollback()


def test_the_api_s_limits_hold_on_v1(make_token):
    """/v1 counts in the limits of /api/v1 (app.api.limits) and answers 429 in OpenAI's shape."""
    from app import create_app

    app = create_app({"API_SUBMIT_LIMIT": "1 per minute"})
    headers = {"Authorization": f"Bearer {make_token(OWNER)}"}  # a fresh token: a count of its own
    client = app.test_client()
    first = client.post("/v1/embeddings", json={"input": []}, headers=headers)
    assert first.status_code == 400 and first.json["error"]["param"] == "input"
    second = client.post("/v1/embeddings", json={"input": []}, headers=headers)
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 0
    assert second.json["error"]["code"] == "rate_limited"
    assert second.json["error"]["type"] == "rate_limit_error"


def test_a_member_s_pages_show_their_chat_jobs(grid, make_token):
    """A chat job made through /v1 is listed on its owner's jobs page and has a page of its own."""
    from app import create_app
    from tests.web import client as browser_for
    from tests.web import signed_up

    web_app = create_app({"TESTING": True})
    browser = browser_for(web_app)
    email = signed_up(browser)
    ai = openai.OpenAI(base_url=f"{grid.api_url}/v1", api_key=make_token(email), max_retries=0, timeout=60)
    answer = ai.chat.completions.create(model="default", messages=MESSAGES, max_tokens=4)
    job_id = answer.model_extra["execution_info"]["job_id"]
    listing = browser.get("/jobs")
    assert listing.status_code == 200 and f"/jobs/{job_id}" in listing.text
    assert ">Conversation (API des programmes):" in listing.text
    assert 'value="chat"' in listing.text  # the page's filter offers it too
    page = browser.get(f"/jobs/{job_id}")
    assert page.status_code == 200 and "Réponse de conversation" in page.text


def test_waiting_requests_are_counted_with_the_event_streams(make_token):
    """A /v1 request holds an API thread while its job runs: past the event streams' bound it is
    429 too_many_streams, and no job is made."""
    from app import create_app

    app = create_app({"EVENTS_STREAMS_PER_PROCESS": 0})
    headers = {"Authorization": f"Bearer {make_token(OWNER)}"}
    for path, body in (("/v1/chat/completions", {"messages": MESSAGES}), ("/v1/embeddings", {"input": "x"})):
        answer = app.test_client().post(path, json=body, headers=headers)
        assert answer.status_code == 429 and answer.headers["Retry-After"]
        assert (answer.json["error"]["code"], answer.json["error"]["type"]) == (
            "too_many_streams",
            "rate_limit_error",
        )
        assert "X-Grid-Job" not in answer.headers


def test_a_node_that_streams_one_text_and_reports_another_is_not_believed(fresh_grid, make_token):
    """The client keeps the entered answer: a stream that does not lead to it ends with an error
    event the SDK raises (stream_mismatch), never with [DONE]."""
    from tests.adversary.two_faced import REPORTED

    fresh_grid.ledger_worker()
    fresh_grid.worker("two-faced", "llm", owner="mallory@koprogo.test", app="tests.adversary.two_faced")
    fresh_grid.api()
    ai = openai.OpenAI(
        base_url=f"{fresh_grid.api_url}/v1", api_key=make_token(OWNER), max_retries=0, timeout=60
    )
    streamed = []
    with pytest.raises(openai.APIError) as mismatch:
        for chunk in ai.chat.completions.create(
            model="default", messages=MESSAGES, max_tokens=30, temperature=0, stream=True
        ):
            if chunk.choices and chunk.choices[0].delta.content:
                streamed.append(chunk.choices[0].delta.content)
    assert mismatch.value.code == "stream_mismatch"
    assert streamed and "".join(streamed) != REPORTED  # what the node showed, not what it reported
    answer = ai.chat.completions.create(model="default", messages=MESSAGES, max_tokens=30, temperature=0)
    assert answer.choices[0].message.content == REPORTED  # the entered answer, the node's to answer for
