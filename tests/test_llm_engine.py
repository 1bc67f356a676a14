"""The LLM engine as a volunteer node runs it: real llama.cpp on the tiny test model.

The tiny model (workers/tinymodel.py, context 512 here) generates noise and never ends a
reply on its own, so every completion runs to its ``max_tokens``: token counts are exact.
The first tests call the engine in this process; the last ones go through the API to the
shared grid's LLM node and check that it loads its model once per worker process.
"""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from tests.documents import ENGLISH_LINES, FRENCH_LINES, SAMPLE_PAGES
from workers.engines import llama
from workers.protocol import errors, texts
from workers.protocol.errors import BadInput

CONTEXT = 512
SHORT = "Le conseil approuve le budget des travaux de la toiture."
#: The demo's two-page minutes, three times over: about eight context windows of text.
LONG = "\n\n".join(["\n\n".join("\n".join(page) for page in SAMPLE_PAGES)] * 3)


class Progress:
    """Records the engine's progress calls: (done, total, tokens so far)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def __call__(self, done: int, total: int, usage: llama.Usage) -> None:
        self.calls.append((done, total, usage.total_tokens))

    def assert_monotonic(self) -> None:
        dones = [done for done, _, _ in self.calls]
        totals = {total for _, total, _ in self.calls}
        tokens = [seen for _, _, seen in self.calls]
        assert dones == sorted(set(dones)), "done must increase at every call"
        assert len(totals) == 1 and dones[-1] == totals.pop(), "the last call says all is done"
        assert tokens == sorted(tokens) and tokens[0] > 0


def _assert_usage(result: dict) -> None:
    assert result["prompt_tokens"] > 0
    assert result["completion_tokens"] > 0
    assert result["tokens"] == result["prompt_tokens"] + result["completion_tokens"]
    assert result["engine"]["name"] == "llama.cpp"
    assert result["engine"]["context"] == CONTEXT
    assert result["engine"]["seconds"] > 0


def test_the_result_says_how_long_the_engine_itself_worked():
    """The seconds inside llama.cpp's calls (bench/llm.py subtracts them from a job's end to end),
    within the whole summarise call's."""
    llama.get_model()  # loading is not generating
    began = time.perf_counter()
    result = llama.summarise(SHORT, "fr", 40)
    wall = time.perf_counter() - began
    assert result["llm_calls"] == 1
    assert 0 < result["engine"]["seconds"] <= wall


def test_the_test_session_runs_the_tiny_model_with_a_512_token_window():
    assert llama.context_size() == CONTEXT
    assert llama.get_model().n_ctx() == CONTEXT
    assert llama.count_tokens(LONG) > 8 * CONTEXT


def test_a_short_text_is_summarised_in_one_call_with_exact_token_counts():
    progress = Progress()
    result = llama.summarise(SHORT, "en", 50, progress)

    assert isinstance(result["summary"], str) and result["summary"].strip()
    _assert_usage(result)
    assert result["language"] == "en"
    assert (result["llm_calls"], result["pieces"]) == (1, [1])
    assert result["completion_tokens"] == 50 * 2  # two tokens per word, run to the end
    assert result["tokens"] <= CONTEXT
    assert progress.calls == [(1, 1, result["tokens"])]


def test_a_summary_answer_takes_at_most_a_quarter_of_the_window():
    result = llama.summarise(SHORT, "fr", 150)
    assert result["completion_tokens"] == CONTEXT // 4


def test_summaries_are_deterministic():
    assert llama.summarise(SHORT, "nl", 20)["summary"] == llama.summarise(SHORT, "nl", 20)["summary"]


def test_a_short_text_is_translated_in_one_call_that_fits_the_window():
    progress = Progress()
    result = llama.translate("\n".join(ENGLISH_LINES[:3]), "fr", progress)

    assert isinstance(result["translation"], str) and result["translation"].strip()
    _assert_usage(result)
    assert result["language"] == "fr"
    assert (result["llm_calls"], result["pieces"]) == (1, [1])
    # The answer may be as long as the window allows, which is at least the source's length.
    assert result["completion_tokens"] >= llama.count_tokens("\n".join(ENGLISH_LINES[:3]))
    assert result["tokens"] <= CONTEXT
    assert progress.calls == [(1, 1, result["tokens"])]


def test_a_text_much_longer_than_the_window_is_summarised_by_map_reduce():
    progress = Progress()
    result = llama.summarise(LONG, "fr", 150, progress)

    assert result["summary"].strip()
    _assert_usage(result)
    pieces = result["pieces"]
    assert pieces[0] > 1, "the text was cut into pieces"
    assert pieces == sorted(pieces, reverse=True), "each combining round has fewer pieces"
    # One call per piece of each round, then one for the final summary.
    assert result["llm_calls"] == sum(pieces) + 1 > 1
    # Partial summaries take half the final answer's tokens (128 // 2), the final one all 128.
    assert result["completion_tokens"] == (result["llm_calls"] - 1) * 64 + 128
    assert result["tokens"] <= result["llm_calls"] * CONTEXT
    # Progress: one call per map piece, and a last one when the summary is written.
    progress.assert_monotonic()
    assert [done for done, _, _ in progress.calls] == list(range(1, pieces[0] + 2))
    assert progress.calls[-1][2] == result["tokens"]


def test_a_text_much_longer_than_the_window_is_translated_piece_by_piece():
    progress = Progress()
    result = llama.translate(LONG, "en", progress)

    _assert_usage(result)
    (pieces,) = result["pieces"]
    assert pieces > 1
    assert result["llm_calls"] == pieces
    assert result["tokens"] <= pieces * CONTEXT, "every piece and its answer fit the window"
    assert result["completion_tokens"] >= llama.count_tokens(LONG) // 2
    # Translated pieces are joined by blank lines (the tiny model never writes a newline).
    assert len(result["translation"].split("\n\n")) == pieces
    progress.assert_monotonic()
    assert [done for done, _, _ in progress.calls] == list(range(1, pieces + 1))
    assert progress.calls[-1][2] == result["tokens"]


def test_ocr_text_of_many_short_lines_fits_the_window_piece_by_piece():
    # OCR output is one short line per text line. After a newline a SentencePiece vocabulary
    # loses the word-start mark, so each line costs more than when it is counted alone; pieces
    # sized by counting lines alone overflowed the window ("Requested tokens … exceed").
    text = "\n".join(["copropriétaire"] * 150)

    summary = llama.summarise(text, "fr", 150)
    translation = llama.translate(text, "nl")

    assert summary["pieces"][0] > 1 and summary["summary"]
    assert translation["pieces"][0] > 1 and translation["tokens"] <= translation["llm_calls"] * CONTEXT


def test_invoice_fields_are_held_to_their_schema_and_counted():
    progress = Progress()
    text = "\n".join(["FACTURE N° 2025-0117", "Date : 12/03/2025", "Total : 4 350,00 EUR"] * 3)

    result = llama.invoice_fields(text, progress)

    assert result["complete"] in (True, False) and isinstance(result["fields"], dict)
    assert set(result["fields"]) <= set(texts.MODEL_FIELDS)
    assert all(
        isinstance(v, str) and 0 < len(v) <= texts.MODEL_FIELD_MAX_CHARS for v in result["fields"].values()
    )
    assert json.loads(result["answer"]) == result["fields"]  # compared between nodes in this one form
    _assert_usage(result)
    assert result["completion_tokens"] <= CONTEXT // 4 and progress.calls == [(1, 1, result["tokens"])]
    assert llama.invoice_fields(text)["answer"] == result["answer"]  # deterministic


@pytest.mark.parametrize(
    ("answer", "fields", "complete"),
    [
        (
            '{"total": "4 350,00", "iban": " BE71 0961 2345 6769 "}',
            {"total": "4 350,00", "iban": "BE71 0961 2345 6769"},
            True,
        ),
        ('{"total": 4350, "currency": "", "nope": "x", "iban": "' + "9" * 200 + '"}', {}, True),
        ('{"total": "4 35', {}, False),
        ("[1, 2]", {}, False),
    ],
    ids=["kept", "wrong-types-and-sizes", "cut-short", "not-an-object"],
)
def test_a_model_answer_keeps_only_known_fields_that_are_short_strings(answer, fields, complete):
    assert llama._parse_fields(answer) == (fields, complete)


@pytest.mark.parametrize("work", ["summarise", "translate"])
@pytest.mark.parametrize("language", ["de", "", "french", "FR"])
def test_an_unknown_language_is_refused_as_unknown_language(work, language):
    with pytest.raises(BadInput) as refused:
        if work == "summarise":
            llama.summarise(SHORT, language, 50)
        else:
            llama.translate(SHORT, language)
    assert refused.value.code == errors.UNKNOWN_LANGUAGE
    assert "fr, en, nl" in refused.value.message


@pytest.mark.parametrize("work", ["summarise", "translate"])
@pytest.mark.parametrize("text", ["", "   \n\t  "])
def test_no_text_is_refused_as_empty_text(work, text):
    with pytest.raises(BadInput) as refused:
        if work == "summarise":
            llama.summarise(text, "fr", 50)
        else:
            llama.translate(text, "fr")
    assert refused.value.code == errors.EMPTY_TEXT


def test_a_text_over_the_character_limit_is_refused_as_text_too_long(monkeypatch):
    import celeryconfig

    monkeypatch.setattr(celeryconfig, "MAX_TEXT_CHARS", 1000)
    with pytest.raises(BadInput) as refused:
        llama.summarise("mot " * 300, "fr", 50)
    assert refused.value.code == errors.TEXT_TOO_LONG


@pytest.mark.parametrize("max_words", [0, 9, 601])
def test_a_summary_length_out_of_range_is_refused_as_invalid_parameter(max_words):
    with pytest.raises(BadInput) as refused:
        llama.summarise(SHORT, "fr", max_words)
    assert refused.value.code == errors.INVALID_PARAMETER


def test_this_process_loaded_the_model_once_for_all_its_work():
    llama.summarise(SHORT, "en", 10)
    llama.translate(SHORT, "nl")
    assert llama.LOADS == 1
    assert llama.describe()["loads_in_process"] == 1


# --- through the grid ------------------------------------------------------------------------


def _step_results(flask_app, job_ids: list[str]) -> list[dict]:
    from app.extensions import db
    from app.models import JobStep

    with flask_app.app_context():
        steps = db.session.scalars(select(JobStep).where(JobStep.job_id.in_(job_ids))).all()
        by_job = {step.job_id: step.result for step in steps}
    return [by_job[job_id] for job_id in job_ids]


def test_the_llm_node_loads_its_model_once_per_worker_process(client, flask_app):
    texts = [SHORT, "\n".join(FRENCH_LINES[:4]), "\n".join(ENGLISH_LINES[:4])]
    submitted = [client.submit_text("summarise", text=text, language="en") for text in texts]
    jobs = [client.wait(job["id"]) for job in submitted]

    assert [job["state"] for job in jobs] == ["succeeded"] * 3, jobs
    assert {job["steps"][0]["node"].split("@")[0] for job in jobs} == {"llm-node"}
    engines = [result["engine"] for result in _step_results(flask_app, [job["id"] for job in jobs])]
    # The node runs one pool process (concurrency 1): one process, one load, three jobs.
    assert [engine["loads_in_process"] for engine in engines] == [1, 1, 1]
    assert len({engine["pid"] for engine in engines}) == 1
    assert engines[0]["context"] == CONTEXT and engines[0]["model"] == "tiny.gguf"


def test_an_llm_task_reports_its_pieces_but_not_the_last_one_which_its_completion_says(client, flask_app):
    """The last piece's progress report would come a moment before the completion record, with the
    same counts: not sent (the job's end waits for no extra round trip); the pieces before it are
    reported. A finished step shows its result's tokens."""
    from app import broker_acl
    from app.extensions import db
    from app.models import JobStep
    from app.progress import KEY_PREFIX

    short = client.submit_text("summarise", text=SHORT, language="fr", max_words=10)
    long = client.submit_text("summarise", text=LONG, language="fr", max_words=10)
    jobs = [client.wait(job["id"], timeout=300) for job in (short, long)]
    assert [job["state"] for job in jobs] == ["succeeded"] * 2, jobs
    with flask_app.app_context():
        steps = [db.session.scalar(select(JobStep).where(JobStep.job_id == job["id"])) for job in jobs]
        results, task_ids = [step.result for step in steps], [step.task_id for step in steps]
    broker = broker_acl.client()
    kept = [broker.get(f"{KEY_PREFIX}{task_id}") for task_id in task_ids]
    broker.close()

    assert results[0]["pieces"] == [1] and kept[0] is None  # one piece: nothing reported
    pieces = results[1]["pieces"][0]
    assert pieces > 1 and kept[1] is not None
    reported = json.loads(kept[1])
    assert 1 <= reported["pieces_done"] < reported["pieces_total"] == pieces + 1
    assert 0 < reported["tokens"] < results[1]["tokens"]
    for job, result in zip(jobs, results, strict=True):
        assert job["steps"][0]["progress"] == {"tokens": result["tokens"]}
