"""A member submits documents and texts through the web form, follows a job on its page and lists
their jobs; the real app (Flask's test client, signed in by an invitation) against the session's
grid, whose OCR and LLM workers really do the work. The form goes through the API's own checks
(same stable codes), and nobody else sees a member's job (404 on every route of it)."""

from __future__ import annotations

import json
import re
import time

import pytest
from sqlalchemy import func, select

from tests.documents import FRENCH_LINES, corrupt_pdf, encrypted_pdf, text_pdf
from tests.grid import Client, wait_for
from tests.test_job_events import Block
from tests.web import client as _client
from tests.web import csrf as _csrf
from tests.web import signed_up as _signed_up

SHORT = "Le conseil approuve le budget des travaux de la toiture et le calendrier du chantier."
FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def web_app(grid):
    # The grid's workers take the jobs this app sends to the broker, and fetch their inputs
    # from the grid's API, which shares the database.
    from app import create_app

    return create_app({"TESTING": True})


@pytest.fixture(scope="module")
def member(web_app):
    browser = _client(web_app)
    browser.email = _signed_up(browser)
    return browser


@pytest.fixture
def stranger(web_app):
    browser = _client(web_app)
    _signed_up(browser)
    return browser


def _send(browser, data: dict, file: tuple[bytes, str] | None = None):
    form = browser.get("/submit")
    assert form.status_code == 200
    fields = {"csrf_token": _csrf(form), "text": "", **data}
    if file is not None:
        import io

        fields["file"] = (io.BytesIO(file[0]), file[1])
    return browser.post("/submit", data=fields, content_type="multipart/form-data")


def _job_id(answer) -> str:
    assert answer.status_code == 303, answer.get_data(as_text=True)[-3000:]
    found = re.fullmatch(r"/jobs/([0-9a-f-]{36})", answer.headers["Location"])
    assert found, answer.headers["Location"]
    return found.group(1)


def _status(browser, job_id: str) -> dict:
    answer = browser.get(f"/jobs/{job_id}/status")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()


def _wait(browser, job_id: str, timeout: float = 120) -> dict:
    def done():
        status = _status(browser, job_id)
        return status if status["state"] in FINAL else None

    return wait_for(done, timeout, f"job {job_id} to end", interval=0.3)


def _blocks(body: str) -> list[Block]:
    """The blocks of a whole event stream's text, by the SSE rules (as tests/test_job_events)."""
    blocks = []
    for raw in body.strip("\n").split("\n\n"):
        block = Block(at=0.0)
        for line in raw.split("\n"):
            if line.startswith(":"):
                block.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                block.data = value
            elif name == "retry":
                block.retry = int(value)
            elif name in ("event", "id"):
                setattr(block, name, value)
        blocks.append(block)
    return blocks


def _jobs_of(web_app, email: str) -> int:
    from app.extensions import db
    from app.models import Job

    with web_app.app_context():
        return db.session.scalar(select(func.count()).select_from(Job).where(Job.owner == email))


def test_a_pdf_sent_through_the_form_is_read_and_summarised_and_its_page_shows_the_result(
    web_app, member, grid, make_token
):
    answer = _send(
        member,
        {
            "action": "pipeline",
            "languages": ["fra"],
            "language": "fr",
            "max_words": "40",
            "force_ocr": "true",
        },
        (text_pdf([FRENCH_LINES] * 2), "pv-ag.pdf"),
    )
    job_id = _job_id(answer)

    running = member.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="job-news" role="status" aria-live="polite"' in running
    assert f'data-events="/jobs/{job_id}/events"' in running and "pv-ag.pdf" in running
    final = _wait(member, job_id)
    assert final["state"] == "succeeded", final
    assert final["owner"] == member.email and final["params"]["languages"] == "fra"
    assert [step["name"] for step in final["steps"]] == ["ocr", "summarise"]
    assert "result" not in final  # as the events give it

    page = member.get(f"/jobs/{job_id}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert 'id="job-state" class="state state-ok" data-state="succeeded"' in html
    assert '<progress id="pages-progress" max="2" value="2">' in html
    assert "ocr-node@" in html and "llm-node@" in html
    # The same job through the API, with a token of the member's: the page shows its result.
    api = Client(grid.api_url, make_token(member.email)).job(job_id)
    summary = api["result"]["summary"]
    assert summary and _escaped(summary) in html
    assert 'id="result-summary" role="region" tabindex="0"' in html and 'data-copy="result-summary"' in html
    assert 'id="cancel"' not in html  # over: nothing to cancel
    assert "€" in html and "CO₂" in html  # its cost and footprint once granted

    text = member.get(f"/jobs/{job_id}/summary.txt")
    assert text.status_code == 200 and text.get_data(as_text=True) == summary
    assert text.headers["Content-Disposition"] == f'attachment; filename="job-{job_id[:8]}-summary.txt"'
    assert text.mimetype == "text/plain"
    read = member.get(f"/jobs/{job_id}/text.txt")
    assert read.status_code == 200 and read.get_data(as_text=True) == api["result"]["text"]
    assert member.get(f"/jobs/{job_id}/translation.txt").status_code == 404  # none was asked for
    whole = member.get(f"/jobs/{job_id}/job.json")
    assert whole.status_code == 200 and whole.headers["Content-Disposition"].startswith("attachment;")
    body = json.loads(whole.get_data(as_text=True))
    assert body["result"]["summary"] == summary and body["id"] == job_id and body["cost"] == api["cost"]


def _escaped(text: str) -> str:
    from markupsafe import escape

    return str(escape(text))


def test_a_pasted_text_is_summarised_and_translated_through_the_form(member):
    summarised = _job_id(
        _send(member, {"action": "summarise", "text": SHORT, "language": "en", "max_words": "20"})
    )
    translated = _job_id(_send(member, {"action": "translate", "text": SHORT, "target": "nl"}))

    first, second = _wait(member, summarised), _wait(member, translated)
    assert first["kind"] == "summarise" and first["state"] == "succeeded"
    assert first["params"] == {"language": "en", "max_words": 20}
    assert second["kind"] == "translate" and second["params"] == {"target": "nl"}
    html = member.get(f"/jobs/{translated}").get_data(as_text=True)
    assert 'id="result-translation"' in html and "(néerlandais)" in html.lower()


@pytest.mark.parametrize(
    ("data", "file", "code", "status", "words"),
    [
        ({"action": "ocr"}, (b"GIF89a not a document", "scan.pdf"), "unsupported_type", 422, "PNG, JPEG"),
        ({"action": "ocr"}, (corrupt_pdf(), "broken.pdf"), "corrupt_document", 422, "endommagé"),
        ({"action": "invoice"}, (encrypted_pdf(), "locked.pdf"), "encrypted_document", 422, "mot de passe"),
        ({"action": "pipeline", "languages": ["deu"]}, "pdf", "unknown_language", 422, "langues"),
        ({"action": "translate", "text": SHORT, "target": ""}, None, "unknown_language", 422, "traduire"),
        ({"action": "summarise", "text": "x" * 200_001}, None, "text_too_long", 422, "trop long"),
        ({"action": "summarise", "text": "   "}, None, "empty_text", 422, "aucun texte"),
        ({"action": "summarise", "text": SHORT, "max_words": "5"}, None, "invalid_parameter", 422, "600"),
        ({"action": "ocr"}, None, "empty_document", 422, "Choisissez un fichier"),
        ({"action": "ocr", "text": SHORT}, None, "needs_document", 400, "PDF"),
        ({"action": "summarise", "text": SHORT}, "pdf", "file_or_text", 400, "pas les deux"),
        ({"action": "translate", "target": "en"}, "pdf", "translation_needs_text", 400, "pipeline"),
        ({"action": "shred", "text": SHORT}, None, "choose_action", 400, "Choisissez"),
    ],
)
def test_a_bad_submission_gets_its_message_and_stable_code_the_form_kept_filled_and_no_job(
    web_app, member, data, file, code, status, words
):
    before = _jobs_of(web_app, member.email)
    if file == "pdf":
        file = (text_pdf([FRENCH_LINES]), "pv.pdf")

    answer = _send(member, {"max_words": "150", **data}, file)

    html = answer.get_data(as_text=True)
    assert answer.status_code == status, html[-2000:]
    assert f"<code>{code}</code>" in html and 'role="alert"' in html, html[html.find("<main") :][:1500]
    assert words.lower() in html.lower(), html[html.find('role="alert"') :][:800]
    assert _jobs_of(web_app, member.email) == before
    action = data["action"]
    if action in ("ocr", "summarise", "translate", "pipeline", "invoice"):
        assert f'value="{action}" aria-describedby="action-{action}-hint" checked' in html
    if data.get("text", "").strip() and len(data["text"]) < 1000:
        assert f">{_escaped(data['text'])}</textarea>" in html  # the text is kept
    if file is not None:
        assert 'id="file-lost"' in html  # a browser never keeps a file: the page says so


def test_a_document_over_the_size_limits_is_refused_on_the_page_with_its_code(web_app, member, monkeypatch):
    import celeryconfig

    before = _jobs_of(web_app, member.email)
    # Over the document limit (the shared check), and over the request limit (refused before
    # the form is read): both the API's code, on a page.
    monkeypatch.setattr(celeryconfig, "MAX_DOCUMENT_BYTES", 1024)
    over_document = _send(member, {"action": "ocr"}, (text_pdf([FRENCH_LINES] * 3), "big.pdf"))
    assert over_document.status_code == 413
    assert "<code>document_too_large</code>" in over_document.get_data(as_text=True)
    monkeypatch.undo()

    form = member.get("/submit")
    huge = b"%PDF-1.4\n" + b"0" * (web_app.config["MAX_CONTENT_LENGTH"] + 10)
    import io

    over_request = member.post(
        "/submit",
        data={"csrf_token": _csrf(form), "action": "ocr", "file": (io.BytesIO(huge), "huge.pdf")},
        content_type="multipart/form-data",
    )
    html = over_request.get_data(as_text=True)
    assert over_request.status_code == 413 and "<code>document_too_large</code>" in html
    assert "20 Mo" in html and "<form" in html
    assert _jobs_of(web_app, member.email) == before


def test_a_job_is_its_owner_s_only_page_events_status_downloads_and_cancel_are_404_to_others(
    web_app, member, stranger
):
    job_id = _job_id(_send(member, {"action": "summarise", "text": SHORT, "max_words": "20"}))
    _wait(member, job_id)
    token_page = stranger.get("/submit")
    for path in (
        f"/jobs/{job_id}",
        f"/jobs/{job_id}/events",
        f"/jobs/{job_id}/status",
        f"/jobs/{job_id}/summary.txt",
        f"/jobs/{job_id}/job.json",
        "/jobs/not-a-job",
        "/jobs/00000000-0000-0000-0000-000000000000/status",
    ):
        answer = stranger.get(path)
        assert answer.status_code == 404, path
        html = answer.get_data(as_text=True)
        assert 'id="job"' not in html and SHORT not in html and "event:" not in html
    cancel = stranger.post(f"/jobs/{job_id}/cancel", data={"csrf_token": _csrf(token_page)})
    assert cancel.status_code == 404
    assert member.get(f"/jobs/{job_id}").status_code == 200
    # Signed out: to the sign-in page, never the job.
    anonymous = _client(web_app)
    answer = anonymous.get(f"/jobs/{job_id}/status")
    assert answer.status_code == 302 and "/sign-in" in answer.headers["Location"]


def test_an_operator_sees_a_member_s_job(web_app, member):
    job_id = _job_id(_send(member, {"action": "summarise", "text": SHORT, "max_words": "20"}))
    operator = _client(web_app)
    _signed_up(operator, "--operator")
    assert operator.get(f"/jobs/{job_id}").status_code == 200
    assert operator.get(f"/jobs/{job_id}/status").get_json()["owner"] == member.email
    _wait(member, job_id)


def test_the_page_s_events_are_the_api_s_stream_for_the_same_job(member, grid, make_token):
    job_id = _job_id(_send(member, {"action": "summarise", "text": SHORT, "max_words": "20"}))
    # Followed while it runs: job events until end, as the API's stream gives them.
    live = member.get(f"/jobs/{job_id}/events")
    assert live.status_code == 200 and live.mimetype == "text/event-stream"
    assert live.headers["Cache-Control"] == "no-cache" and live.headers["X-Accel-Buffering"] == "no"
    blocks = _blocks(live.get_data(as_text=True))
    named = [block.event for block in blocks if block.event]
    assert blocks[0].retry is not None and named[-1] == "end" and set(named) == {"job", "end"}

    api = Client(grid.api_url, make_token(member.email))
    with api.session.get(f"{grid.api_url}/api/v1/jobs/{job_id}/events", timeout=30) as response:
        from_api = _blocks(response.text)
    again = _blocks(member.get(f"/jobs/{job_id}/events").get_data(as_text=True))
    # The job over, both say the same: its last summary (same id, same data), then end.
    assert [(b.event, b.id, b.data, b.retry) for b in again] == [
        (b.event, b.id, b.data, b.retry) for b in from_api
    ]
    assert [b.event for b in again] == [None, "job", "end"]
    assert json.loads(again[1].data) == _status(member, job_id) and again[1].id == blocks[-1].id
    # Last-Event-ID: nothing changed since, only end.
    resumed = member.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": again[1].id})
    assert [b.event for b in _blocks(resumed.get_data(as_text=True))] == [None, "end"]


def test_a_running_job_is_cancelled_from_its_page(web_app, member):
    pages = 8  # a few seconds of reading: still running when cancelled
    job_id = _job_id(
        _send(member, {"action": "ocr", "force_ocr": "true"}, (text_pdf([FRENCH_LINES] * pages), "long.pdf"))
    )
    page = member.get(f"/jobs/{job_id}")
    html = page.get_data(as_text=True)
    assert 'id="cancel"' in html and 'id="refresh"' in html and "http-equiv" not in html

    cancelled = member.post(f"/jobs/{job_id}/cancel", data={"csrf_token": _csrf(page)})
    assert cancelled.status_code == 303 and cancelled.headers["Location"] == f"/jobs/{job_id}"
    assert _status(member, job_id)["state"] == "cancelled"
    html = member.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'data-state="cancelled"' in html and 'id="cancel"' not in html
    # Again: it is over; the page says so with the API's code.
    again = member.post(f"/jobs/{job_id}/cancel", data={"csrf_token": _csrf(page)})
    assert again.status_code == 409 and "<code>job_finished</code>" in again.get_data(as_text=True)
    # Without the form's token: refused.
    assert member.post(f"/jobs/{job_id}/cancel").status_code == 400


def test_one_s_jobs_are_listed_newest_first_filtered_and_paged(web_app):
    browser = _client(web_app)
    email = _signed_up(browser)
    from app.extensions import db
    from app.models import Job

    # 23 summaries and 2 finished OCR jobs, recorded directly: listing needs no work done.
    with web_app.app_context():
        for number in range(25):
            kind = "ocr" if number < 2 else "summarise"
            state = "succeeded" if number < 2 else "queued"
            db.session.add(Job(kind=kind, owner=email, state=state, params={"n": number}))
            db.session.commit()
            time.sleep(0.002)
        ids = [
            job.id
            for job in db.session.scalars(select(Job).where(Job.owner == email).order_by(Job.created_at))
        ]
    first = browser.get("/jobs").get_data(as_text=True)
    listed = re.findall(r'<a href="/jobs/([0-9a-f-]{36})">', first)
    assert listed == ids[::-1][:20]
    assert "page 1 of 2 (25 jobs)" in first.replace("page 1 sur 2 (25 tâches)", "page 1 of 2 (25 jobs)")
    assert 'href="/jobs?page=2" rel="next"' in first and 'rel="prev"' not in first
    assert first.count('action="/jobs/') == 20  # every queued one can be cancelled
    second = browser.get("/jobs?page=2").get_data(as_text=True)
    assert re.findall(r'<a href="/jobs/([0-9a-f-]{36})">', second) == ids[::-1][20:]
    assert 'href="/jobs?page=1" rel="prev"' in second

    ocr = browser.get("/jobs?kind=ocr&state=succeeded").get_data(as_text=True)
    assert re.findall(r'<a href="/jobs/([0-9a-f-]{36})">', ocr) == ids[1::-1]
    assert 'action="/jobs/' not in ocr.split('id="jobs"')[1]  # finished: no cancel button
    assert '<option value="ocr" selected>' in ocr and '<option value="succeeded" selected>' in ocr
    queued = browser.get("/jobs?kind=summarise&page=2").get_data(as_text=True)
    assert re.findall(r'<a href="/jobs/([0-9a-f-]{36})">', queued) == ids[2:5][::-1]
    assert 'href="/jobs?kind=summarise&amp;page=1" rel="prev"' in queued
    none = browser.get("/jobs?kind=invoice").get_data(as_text=True)
    assert 'id="no-jobs"' in none

    bad = browser.get("/jobs?state=lost")
    assert bad.status_code == 400 and "<code>invalid_parameter</code>" in bad.get_data(as_text=True)
    assert browser.get("/jobs?page=0").status_code == 400

    # Cancelled from the list: back to the same list.
    listing = browser.get("/jobs?kind=summarise")
    newest = ids[-1]
    done = browser.post(
        f"/jobs/{newest}/cancel", data={"csrf_token": _csrf(listing), "next": "/jobs?kind=summarise"}
    )
    assert done.status_code == 303 and done.headers["Location"] == "/jobs?kind=summarise"
    with web_app.app_context():
        assert db.session.get(Job, newest).state == "cancelled"


def test_an_erased_job_s_page_says_so_and_its_texts_are_gone(web_app, member):
    from app import gdpr
    from app.extensions import db
    from app.models import Job

    job_id = _job_id(
        _send(member, {"action": "summarise", "text": SHORT, "language": "fr", "max_words": "20"})
    )
    assert _wait(member, job_id)["state"] == "succeeded"
    assert member.get(f"/jobs/{job_id}/summary.txt").status_code == 200
    with web_app.app_context():
        assert gdpr.erase_job_content(db.session.get(Job, job_id))
        db.session.commit()

    page = member.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="content-erased"' in page and 'id="result-summary"' not in page
    gone = member.get(f"/jobs/{job_id}/summary.txt")
    assert gone.status_code == 410 and "effacé" in gone.get_data(as_text=True)


def test_a_member_s_submissions_through_the_page_are_under_the_api_s_submission_limit(grid):
    from app import create_app

    limited = create_app({"TESTING": True, "API_SUBMIT_LIMIT": "3 per minute"})
    browser = _client(limited)
    _signed_up(browser)
    answers = [_send(browser, {"action": "summarise", "text": "   "}) for _ in range(4)]
    # Refused submissions count too: a member cannot flood the grid's checks through the page.
    assert [a.status_code for a in answers] == [422, 422, 422, 429]
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
    # The form itself is still served: reading is not limited by it.
    assert browser.get("/submit").status_code == 200
