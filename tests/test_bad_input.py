"""Bad input never produces a 500 and never kills a worker.

Two layers, both against the real grid (gunicorn API, Redis, PostgreSQL, worker processes):

- At submission, over HTTP: whatever the API can know then is refused with a 4xx and
  ``{"error": {"code", "message"}}``, the code stable, and no job is recorded.
- On the workers: input that gets past the API (a forged or compromised submission, or a fault
  only decoding reveals) ends the job ``failed`` with the same stable code and a message a
  person understands, is entered once in the ledger as failed, and the same node then serves
  the next, good, job.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from sqlalchemy import select

import celeryconfig as cc
from tests import page_pdfs
from tests.documents import (
    ENGLISH_LINES,
    FRENCH_LINES,
    blank_pdf,
    corrupt_pdf,
    encrypted_pdf,
    huge_page_pdf,
    text_image,
    text_pdf,
)

MEMBER = "member@koprogo.test"
JOBS = "/api/v1/jobs"
#: A Python exception's repr ("ValueError: …") is not a message for a person.
_EXCEPTION_TEXT = re.compile(r"\b\w*(Error|Exception)\b|Traceback")


# --- documents --------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header announces 400 megapixels but whose data is one empty row: harmless
    to send, ruinous to decode."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + _png_chunk(b"IEND", b"")
    )


def truncated_png() -> bytes:
    """A real scan cut short: its header is sound, so only decoding the pixels finds the fault."""
    image = text_image(ENGLISH_LINES[:3], dpi=100)
    return image[: len(image) // 2]


def zip_file() -> bytes:
    """An (empty) ZIP archive, as an office suite's export or a folder of scans would be."""
    return b"PK\x05\x06" + b"\x00" * 18


def text_renamed_pdf() -> bytes:
    return "Procès-verbal de l'assemblée générale (copié-collé)\n".encode()


def good_pdf() -> bytes:
    return text_pdf([ENGLISH_LINES[:3]])


def truncated_pdf() -> bytes:
    """A download cut short: a PDF's start without its pages, cross-reference or trailer."""
    return good_pdf()[:300]


# --- helpers ----------------------------------------------------------------------------------


def assert_refused(response, status: int, code: str) -> dict[str, str]:
    """The response is a refusal with this status and stable code, and a human message."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    assert_human(error["message"])
    return error


def assert_human(message: str | None) -> None:
    assert isinstance(message, str) and len(message.strip()) >= 10, message
    assert not _EXCEPTION_TEXT.search(message), message


def job_count(client) -> int:
    response = client.get(JOBS, params={"per_page": 1})
    assert response.status_code == 200, response.text
    return response.json()["total"]


def forge(flask_app, step: str, args: tuple, data: bytes, owner: str = MEMBER, input_kind: str = "") -> str:
    """Record and dispatch a one-step job as ``app.jobs.submit`` does, with an input and task
    arguments that ``plan()`` never checked: what a forged or compromised submission sends."""
    from app import jobs
    from app.extensions import db
    from app.models import Job, JobInput, JobStep, utcnow

    with flask_app.app_context():
        job = Job(kind=step, owner=owner, params={"forged": True})
        task_name, queue = jobs.STEPS[step]
        job.steps.append(JobStep(position=0, name=step, task_name=task_name, queue=queue))
        db.session.add(job)
        db.session.flush()
        kind = input_kind or ("document" if step == "ocr" else "text")
        db.session.add(JobInput(job_id=job.id, kind=kind, data=data))
        db.session.commit()  # before dispatch: the node must find the job and its input
        first = job.steps[0]
        flask_app.extensions["celery"].send_task(
            task_name, args=args, task_id=first.task_id, queue=jobs._QUEUES[queue], routing_key=queue
        )
        first.dispatched_at = utcnow()
        db.session.commit()
        return job.id


def ledger_entries(flask_app, job_id: str) -> list[Any]:
    from app.extensions import db
    from app.models import LedgerEntry

    with flask_app.app_context():
        return db.session.scalars(select(LedgerEntry).where(LedgerEntry.job_id == job_id)).all()


def step_result(flask_app, job_id: str) -> dict[str, Any]:
    """The first step's full result as the node sent it (the API shows only the outputs)."""
    from app.extensions import db
    from app.models import Job

    with flask_app.app_context():
        return db.session.get(Job, job_id).steps[0].result


def pool_deaths(grid, name: str) -> int:
    """How many pool processes the named worker has lost (Celery logs each one)."""
    process = next(p for p in grid.processes if p.name == name)
    assert process.alive(), f"{name} is gone:\n{process.output()[-3000:]}"
    return process.output().count("exited with")


def assert_failed_with(client, flask_app, job_id: str, code: str, node_prefix: str) -> dict:
    """The job ended failed on that node with the code, and the ledger holds one failed entry."""
    job = client.wait(job_id, timeout=60)
    assert job["state"] == "failed", job
    (step,) = job["steps"]
    assert step["state"] == "failed", step
    assert step["node"].startswith(node_prefix), step
    assert step["error"]["code"] == code, step
    assert_human(step["error"]["message"])
    assert job["error"]["code"] == code, job
    assert_human(job["error"]["message"])
    assert step["attempts"] == 1, step  # bad input is not retried

    entries = ledger_entries(flask_app, job_id)
    assert [(e.outcome, e.error_code, e.node) for e in entries] == [("failed", code, step["node"])]
    return step


# --- at submission: refused over HTTP ---------------------------------------------------------

BAD_DOCUMENTS = [
    pytest.param("notes.pdf", text_renamed_pdf, {}, "unsupported_type", id="text-file-renamed-pdf"),
    pytest.param("scans.zip", zip_file, {}, "unsupported_type", id="zip-archive"),
    pytest.param("pv.pdf", corrupt_pdf, {}, "corrupt_document", id="corrupt-pdf"),
    pytest.param("pv.pdf", truncated_pdf, {}, "corrupt_document", id="truncated-pdf"),
    pytest.param("pv.pdf", encrypted_pdf, {}, "encrypted_document", id="password-protected-pdf"),
    pytest.param(
        "pv.pdf", partial(blank_pdf, cc.OCR_MAX_PAGES + 1), {}, "too_many_pages", id="too-many-pages"
    ),
    pytest.param("plan.pdf", huge_page_pdf, {}, "page_too_large", id="huge-pdf-page"),
    # Page boxes whose sizes pdfinfo prints as 1e+07, inf, -nan, -0, 1e-05… (tests/page_pdfs.py).
    *(
        pytest.param("plan.pdf", partial(bytes, h.data), {}, h.code, id=f"pdf-page-{h.name}")
        for h in page_pdfs.HOSTILE
    ),
    pytest.param("scan.png", bomb_png, {}, "page_too_large", id="huge-image"),
    pytest.param("pv.pdf", bytes, {}, "empty_document", id="empty-file"),
    pytest.param("pv.pdf", good_pdf, {"languages": "deu"}, "unknown_language", id="unknown-ocr-language"),
    pytest.param(
        "pv.pdf", good_pdf, {"languages": "fra+klingon"}, "unknown_language", id="one-unknown-ocr-language"
    ),
]


@pytest.mark.parametrize("kind", ["ocr", "pipeline"])
@pytest.mark.parametrize(("filename", "make", "fields", "code"), BAD_DOCUMENTS)
def test_bad_document_is_refused_at_submission_with_its_code(
    client, kind: str, filename: str, make: Callable[[], bytes], fields: dict, code: str
):
    before = job_count(client)
    response = client.post(f"{JOBS}/{kind}", files={"file": (filename, make())}, data=fields)
    assert_refused(response, 422, code)
    assert job_count(client) == before


@pytest.mark.parametrize("kind", ["ocr", "pipeline"])
def test_submission_without_a_document_is_refused(client, kind: str):
    response = client.post(f"{JOBS}/{kind}", data={"languages": "fra"})
    assert_refused(response, 422, "empty_document")


def test_upload_over_the_size_limit_is_refused_before_it_is_read(client):
    data = b"%PDF-1.4\n" + b"0" * (cc.MAX_DOCUMENT_BYTES + 1024 * 1024)  # over MAX_CONTENT_LENGTH
    before = job_count(client)
    response = client.post(f"{JOBS}/ocr", files={"file": ("big.pdf", data)})
    assert_refused(response, 413, "document_too_large")
    assert job_count(client) == before


def test_document_just_over_the_size_limit_is_refused_like_a_larger_upload(client):
    data = b"%PDF-1.4\n" + b"0" * cc.MAX_DOCUMENT_BYTES  # under MAX_CONTENT_LENGTH, over the limit
    error = assert_refused(
        client.post(f"{JOBS}/ocr", files={"file": ("big.pdf", data)}), 413, "document_too_large"
    )
    assert f"{cc.MAX_DOCUMENT_BYTES // 2**20} MB limit" in error["message"]


def test_pipeline_with_an_unknown_translation_language_is_refused(client):
    response = client.post(
        f"{JOBS}/pipeline", files={"file": ("pv.pdf", good_pdf())}, data={"translate_to": "de"}
    )
    assert_refused(response, 422, "unknown_language")


TOO_LONG = "mot " * (cc.MAX_TEXT_CHARS // 4 + 1)

BAD_TEXT_JOBS = [
    pytest.param("summarise", {}, "empty_text", id="summarise-without-text"),
    pytest.param("summarise", {"text": " \n\t "}, "empty_text", id="summarise-blank-text"),
    pytest.param("summarise", {"text": 42}, "empty_text", id="summarise-text-not-a-string"),
    pytest.param("summarise", {"text": TOO_LONG}, "text_too_long", id="summarise-text-too-long"),
    pytest.param(
        "summarise",
        {"text": "Bonjour.", "language": "de"},
        "unknown_language",
        id="summarise-unknown-language",
    ),
    pytest.param(
        "summarise",
        {"text": "Bonjour.", "language": ["fr"]},
        "unknown_language",
        id="summarise-language-not-a-string",
    ),
    pytest.param(
        "summarise", {"text": "Bonjour.", "max_words": 5}, "invalid_parameter", id="max-words-too-small"
    ),
    pytest.param(
        "summarise",
        {"text": "Bonjour.", "max_words": cc.SUMMARY_MAX_WORDS + 1},
        "invalid_parameter",
        id="max-words-too-large",
    ),
    pytest.param(
        "summarise",
        {"text": "Bonjour.", "max_words": "many"},
        "invalid_parameter",
        id="max-words-not-a-number",
    ),
    pytest.param(
        "summarise", b'{"text": "Bonjour.", "max_words": 1e400}', "invalid_parameter", id="max-words-infinite"
    ),
    pytest.param(
        "summarise",
        b'{"text": "Bonjour \\ud800 le monde."}',
        "invalid_parameter",
        id="text-with-a-lone-surrogate",
    ),
    pytest.param("translate", {"text": "Bonjour."}, "unknown_language", id="translate-without-target"),
    pytest.param(
        "translate", {"text": "Bonjour.", "target": "de"}, "unknown_language", id="translate-unknown-target"
    ),
    pytest.param(
        "translate",
        {"text": "Bonjour.", "target": {"lang": "en"}},
        "unknown_language",
        id="translate-target-not-a-string",
    ),
    pytest.param("translate", {"text": "", "target": "en"}, "empty_text", id="translate-empty-text"),
    pytest.param(
        "translate", {"text": TOO_LONG, "target": "en"}, "text_too_long", id="translate-text-too-long"
    ),
    pytest.param("ocr", {"languages": "deu"}, "unknown_language", id="ocr-unknown-language"),
    pytest.param("ocr", {"languages": 123}, "unknown_language", id="ocr-languages-not-a-string"),
    pytest.param("ocr", {}, "empty_document", id="ocr-without-document"),
    pytest.param("resize", {"text": "Bonjour."}, "invalid_parameter", id="unknown-job-kind"),
]


@pytest.mark.parametrize(("kind", "body", "code"), BAD_TEXT_JOBS)
def test_bad_text_job_is_refused_at_submission_with_its_code(
    client, kind: str, body: dict | bytes, code: str
):
    before = job_count(client)
    if isinstance(body, bytes):  # JSON that requests would not write: 1e400, a lone surrogate
        response = client.post(f"{JOBS}/{kind}", data=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(f"{JOBS}/{kind}", json=body)
    assert_refused(response, 422, code)
    assert job_count(client) == before


@pytest.mark.parametrize(
    "raw",
    [pytest.param(b"[1, 2]", id="not-an-object"), pytest.param(b'{"text": "Bonj', id="malformed")],
)
def test_a_json_body_that_is_not_an_object_is_refused(client, raw: bytes):
    response = client.post(f"{JOBS}/summarise", data=raw, headers={"Content-Type": "application/json"})
    assert_refused(response, 400, "invalid_json")


def test_submission_without_a_token_is_refused(grid):
    import requests

    response = requests.post(f"{grid.api_url}{JOBS}/summarise", json={"text": "Bonjour."}, timeout=30)
    assert_refused(response, 401, "auth_required")


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bearer kgg_not-a-real-token", id="unknown-token"),
        pytest.param("Basic bWVtYmVyOnNlY3JldA==", id="not-a-bearer-token"),
        pytest.param("Bearer ", id="empty-bearer"),
    ],
)
def test_submission_with_a_bad_token_is_refused(grid, header: str):
    import requests

    response = requests.post(
        f"{grid.api_url}{JOBS}/summarise",
        json={"text": "Bonjour."},
        headers={"Authorization": header},
        timeout=30,
    )
    assert_refused(response, 401, "invalid_token")


def test_read_only_token_cannot_submit(grid, make_token):
    from tests.grid import Client

    reader = Client(grid.api_url, make_token(MEMBER, ("jobs:read",)))
    response = reader.post(f"{JOBS}/summarise", json={"text": "Bonjour."})
    assert_refused(response, 403, "insufficient_scope")


@pytest.mark.parametrize(
    "job_id",
    [
        pytest.param("00000000-0000-0000-0000-000000000000", id="unknown-uuid"),
        pytest.param("not-a-job", id="not-a-uuid"),
        pytest.param("x" * 300, id="longer-than-an-id"),
        pytest.param("%00", id="nul-byte"),
    ],
)
def test_unknown_job_is_not_found(client, job_id: str):
    assert_refused(client.get(f"{JOBS}/{job_id}"), 404, "not_found")
    assert_refused(client.post(f"{JOBS}/{job_id}/cancel"), 404, "not_found")


def test_another_members_job_is_not_found(client, make_token, grid, flask_app):
    """Not 403: whether a job exists is none of another member's business."""
    from tests.grid import Client

    job_id = forge(flask_app, "translate", ("en",), b"", owner="other@koprogo.test")
    assert_refused(client.get(f"{JOBS}/{job_id}"), 404, "not_found")
    other = Client(grid.api_url, make_token("other@koprogo.test"))
    assert other.wait(job_id, timeout=60)["error"]["code"] == "empty_text"


@pytest.mark.parametrize(
    "query",
    [
        pytest.param({"state": "lost"}, id="unknown-state"),
        pytest.param({"kind": "resize"}, id="unknown-kind"),
        pytest.param({"per_page": 0}, id="per-page-zero"),
        pytest.param({"page": -1}, id="negative-page"),
    ],
)
def test_bad_job_listing_query_is_refused(client, query: dict):
    assert_refused(client.get(JOBS, params=query), 400, "invalid_parameter")


def test_filename_with_control_characters_is_shown_without_them(client):
    response = client.post(
        f"{JOBS}/ocr", files={"file": ("p\x00v\x01.pdf", good_pdf())}, data={"languages": "eng"}
    )
    assert response.status_code == 202, response.text
    assert response.json()["input"]["filename"] == "pv.pdf"
    assert client.wait(response.json()["id"], timeout=60)["state"] == "succeeded"


def test_job_listing_for_an_owner_with_a_nul_byte_is_refused(admin):
    assert_refused(admin.get(JOBS, params={"owner": "a\x00b"}), 400, "invalid_parameter")


# --- on the workers: the job fails with its code, the node lives on ---------------------------


@pytest.fixture(scope="module")
def good_ocr(client, flask_app):
    """Runs a good OCR job through the API; returns its finished description."""

    def run() -> dict:
        job = client.submit_document("ocr", good_pdf(), "minutes.pdf", languages="eng")
        job = client.wait(job["id"], timeout=60)
        assert job["state"] == "succeeded", job
        assert "KoproGo" in job["result"]["text"]
        return job

    return run


@pytest.fixture(scope="module")
def good_summary(client, flask_app):
    """Runs a good summary job through the API; returns its step and the serving process's pid."""

    def run() -> tuple[dict, int]:
        job = client.submit_text("summarise", text="\n".join(FRENCH_LINES), language="fr", max_words=20)
        job = client.wait(job["id"], timeout=60)
        assert job["state"] == "succeeded", job
        engine = step_result(flask_app, job["id"])["engine"]
        assert engine["loads_in_process"] == 1  # the model was not loaded again: same process
        return job["steps"][0], engine["pid"]

    return run


@pytest.fixture(scope="module")
def llm_pid(good_summary) -> int:
    """The pid of the llm node's pool process, from a good job before any bad one."""
    return good_summary()[1]


#: Page boxes the API refuses (above), sent past it: the worker's own inspection refuses them too.
FORGED_PAGES = [
    h
    for h in page_pdfs.HOSTILE
    if h.name in ("exponent-1e+07", "infinite", "not-a-number", "tiny-exponent", "size-forged-in-the-title")
]

FORGED_OCR = [
    pytest.param(lambda: (corrupt_pdf(), "fra"), "corrupt_document", id="corrupt-pdf"),
    pytest.param(lambda: (encrypted_pdf(), "fra"), "encrypted_document", id="password-protected-pdf"),
    pytest.param(lambda: (zip_file(), "fra"), "unsupported_type", id="zip-archive"),
    pytest.param(lambda: (text_renamed_pdf(), "fra"), "unsupported_type", id="text-file"),
    pytest.param(lambda: (blank_pdf(cc.OCR_MAX_PAGES + 1), "fra"), "too_many_pages", id="too-many-pages"),
    pytest.param(lambda: (huge_page_pdf(), "fra"), "page_too_large", id="huge-pdf-page"),
    *(
        pytest.param(partial(lambda h: (h.data, "fra"), h), h.code, id=f"pdf-page-{h.name}")
        for h in FORGED_PAGES
    ),
    pytest.param(lambda: (bomb_png(), "fra"), "page_too_large", id="huge-image"),
    pytest.param(lambda: (good_pdf(), "deu"), "unknown_language", id="unknown-language"),
    pytest.param(lambda: (good_pdf(), 123), "unknown_language", id="languages-not-a-string"),
    pytest.param(lambda: (b"", "fra"), "empty_document", id="empty-document"),
]


@pytest.mark.parametrize(("make_args", "code"), FORGED_OCR)
def test_forged_ocr_job_fails_with_its_code_and_the_ocr_node_serves_the_next_job(
    client, flask_app, grid, good_ocr, make_args: Callable[[], tuple], code: str
):
    deaths = pool_deaths(grid, "ocr-node")
    data, languages = make_args()
    job_id = forge(flask_app, "ocr", (languages,), data)

    failed = assert_failed_with(client, flask_app, job_id, code, "ocr-node@")

    served = good_ocr()["steps"][0]
    assert served["node"] == failed["node"]
    assert pool_deaths(grid, "ocr-node") == deaths


def test_image_damaged_past_its_header_fails_on_the_worker_and_the_node_serves_the_next_job(
    client, flask_app, grid, good_ocr
):
    deaths = pool_deaths(grid, "ocr-node")
    # Its header is sound, so the API accepts it: only decoding the pixels finds the fault.
    job = client.submit_document("ocr", truncated_png(), "scan.png", languages="eng")

    failed = assert_failed_with(client, flask_app, job["id"], "corrupt_document", "ocr-node@")

    assert good_ocr()["steps"][0]["node"] == failed["node"]
    assert pool_deaths(grid, "ocr-node") == deaths


FORGED_LLM = [
    pytest.param("summarise", ("", "fr", 50), "empty_text", id="summarise-empty-text"),
    pytest.param("summarise", (" \n ", "fr", 50), "empty_text", id="summarise-blank-text"),
    pytest.param("summarise", ("Bonjour.", "de", 50), "unknown_language", id="summarise-unknown-language"),
    pytest.param(
        "summarise", ("Bonjour.", ["fr"], 50), "unknown_language", id="summarise-language-not-a-string"
    ),
    pytest.param("summarise", ("Bonjour.", "fr", 5), "invalid_parameter", id="max-words-too-small"),
    pytest.param("summarise", ("Bonjour.", "fr", "many"), "invalid_parameter", id="max-words-not-a-number"),
    pytest.param("summarise", ("Bonjour.", "fr", None), "invalid_parameter", id="max-words-null"),
    pytest.param("summarise", (TOO_LONG, "fr", 50), "text_too_long", id="summarise-text-too-long"),
    pytest.param(
        "summarise",
        ("Bonjour \ud800 le monde.", "fr", 50),
        "invalid_parameter",
        id="summarise-text-with-a-lone-surrogate",
    ),
    pytest.param(
        "summarise",
        (b"Bonjour \xff\xfe le monde.", "fr", 50),
        "invalid_parameter",
        id="summarise-text-not-utf8",
    ),
    pytest.param("translate", ("", "en"), "empty_text", id="translate-empty-text"),
    pytest.param("translate", ("Bonjour.", "de"), "unknown_language", id="translate-unknown-target"),
    pytest.param("translate", ("Bonjour.", None), "unknown_language", id="translate-target-null"),
    pytest.param(
        "translate", ("Bonjour.", {"lang": "en"}), "unknown_language", id="translate-target-not-a-string"
    ),
]


@pytest.mark.parametrize(("step", "args", "code"), FORGED_LLM)
def test_forged_llm_job_fails_with_its_code_and_the_llm_node_serves_the_next_job(
    client, flask_app, grid, good_summary, llm_pid, step: str, args: tuple, code: str
):
    deaths = pool_deaths(grid, "llm-node")
    text, *params = args
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    job_id = forge(flask_app, step, tuple(params), data)

    failed = assert_failed_with(client, flask_app, job_id, code, "llm-node@")

    served, pid_after = good_summary()
    assert served["node"] == failed["node"]
    assert pid_after == llm_pid  # the very process that met the bad input served the next job
    assert pool_deaths(grid, "llm-node") == deaths


def test_pipeline_on_a_blank_scan_fails_at_the_summary_and_the_llm_node_serves_the_next_job(
    client, flask_app, grid, good_summary, llm_pid
):
    deaths = pool_deaths(grid, "llm-node")
    # A blank page is a sound document, so the API accepts it; only OCR finds it has no text.
    job = client.submit_document("pipeline", blank_pdf(1), "scan.pdf", languages="fra", translate_to="en")

    job = client.wait(job["id"], timeout=60)

    assert job["state"] == "failed", job
    assert job["error"]["code"] == "empty_text", job
    assert_human(job["error"]["message"])
    ocr, summary, translation = job["steps"]
    assert ocr["state"] == "succeeded" and ocr["node"].startswith("ocr-node@"), ocr
    assert summary["state"] == "failed" and summary["node"].startswith("llm-node@"), summary
    assert summary["error"]["code"] == "empty_text"
    assert translation["state"] == "skipped", translation
    entries = ledger_entries(flask_app, job["id"])
    assert sorted((e.task_name, e.outcome, e.error_code) for e in entries) == [
        ("grid.llm.summarise", "failed", "empty_text"),
        ("grid.ocr.extract", "succeeded", None),
    ]

    served, pid_after = good_summary()
    assert served["node"] == summary["node"]
    assert pid_after == llm_pid
    assert pool_deaths(grid, "llm-node") == deaths
