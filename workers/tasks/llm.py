"""LLM tasks (queue ``llm``): summaries and translations with llama.cpp.

The text comes from the coordinator (``GridTask.fetch_input``): the job's text, or in a
pipeline the step before's entered result.
"""

from __future__ import annotations

import json

from celery import shared_task

import celeryconfig
from workers import metering, stream
from workers.engines import llama
from workers.protocol import errors
from workers.protocol.errors import BadInput
from workers.tasks.base import GridTask


def _text(task: GridTask) -> str:
    _, data = task.fetch_input()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("The text is not valid UTF-8.", code=errors.INVALID_PARAMETER) from None


def _on_progress(task: GridTask):
    def report(done: int, total: int, usage: llama.Usage) -> None:
        metering.count(
            task.request.id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        # The last piece's report would reach the coordinator a moment before the completion
        # record, which carries the same counts: it is not sent, so the job's end waits for no
        # round trip to the coordinator (bench/llm.py measured it). A finished step shows its
        # result's tokens (app.jobs.describe_step); the earlier pieces are reported as before.
        if done < total:
            task.progress(pieces_done=done, pieces_total=total, tokens=usage.total_tokens)

    return report


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_SUMMARISE)
def summarise(
    self: GridTask, language: str = "fr", max_words: int = celeryconfig.SUMMARY_DEFAULT_WORDS
) -> dict:
    """A summary of the text (or of the previous step's text) in fr, en or nl."""
    # max_words is checked by the engine: a message may carry anything, and int("many") would
    # end the job with an internal error instead of invalid_parameter.
    return llama.summarise(_text(self), language, max_words, _on_progress(self))


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_TRANSLATE)
def translate(self: GridTask, target: str = "en") -> dict:
    """The text (or the previous step's summary) translated into fr, en or nl."""
    return llama.translate(_text(self), target, _on_progress(self))


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_INVOICE_FIELDS)
def invoice_fields(self: GridTask) -> dict:
    """An invoice's fields as the model reads them from the OCR step's text (the coordinator keeps
    only those it finds printed in that text)."""
    return llama.invoice_fields(_text(self), _on_progress(self))


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_CHAT)
def chat(self: GridTask, max_tokens: int, temperature: float, stop: list[str] | None = None) -> dict:
    """A chat completion of the job's messages (its input), its text streamed to the coordinator
    as it is produced (``workers.stream``)."""
    kind, data = self.fetch_input()
    try:
        messages = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput("The messages are not valid JSON.", code=errors.INVALID_PARAMETER) from None
    request = self.request
    sender = None
    if request.id and not request.called_directly:
        sender = stream.DeltaSender(request.id, request.retries, metering.worker_name(request.hostname))
    try:
        result = llama.chat(messages, max_tokens, temperature, stop or [], sender.put if sender else None)
    finally:
        if sender is not None:
            sender.close()
    metering.count(
        request.id, prompt_tokens=result["prompt_tokens"], completion_tokens=result["completion_tokens"]
    )
    return result


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_EMBEDDINGS)
def embeddings(self: GridTask) -> dict:
    """One vector per input of the job (its input: a JSON list of strings)."""
    _, data = self.fetch_input()
    try:
        inputs = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadInput("The inputs are not valid JSON.", code=errors.INVALID_PARAMETER) from None
    result = llama.embeddings(inputs)
    metering.count(self.request.id, prompt_tokens=result["prompt_tokens"], completion_tokens=0)
    return result


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_NOOP)
def noop(self: GridTask) -> dict:
    """Nothing but the path every task takes: its input fetched (the coordinator's sight of the
    start), metered, its record sent to the ledger. Its input's bytes are counted as prompt tokens
    (a token reads at least one byte), so its few milliseconds are granted within the LLM's
    bounds. The coordinator sends it only where GRID_NOOP_JOBS is on (the throughput benchmark)."""
    _, data = self.fetch_input()
    metering.count(self.request.id, prompt_tokens=len(data), completion_tokens=0)
    return {"bytes": len(data)}
