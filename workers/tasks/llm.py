"""LLM tasks (queue ``llm``): summaries and translations with llama.cpp.

In a pipeline the previous step's result (a dict) arrives as the first argument; on its own
the task takes plain text.
"""

from __future__ import annotations

from celery import shared_task

import celeryconfig
from workers import metering
from workers.engines import llama
from workers.tasks.base import GridTask

_TEXT_KEYS = ("translation", "summary", "text")


def _text_of(source: str | dict) -> str:
    if isinstance(source, dict):
        for key in _TEXT_KEYS:
            if isinstance(source.get(key), str):
                return source[key]
        return ""
    return source


def _on_progress(task: GridTask):
    def report(done: int, total: int, usage: llama.Usage) -> None:
        metering.count(
            task.request.id,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        task.progress(pieces_done=done, pieces_total=total, tokens=usage.total_tokens)

    return report


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_SUMMARISE)
def summarise(
    self: GridTask,
    source: str | dict,
    language: str = "fr",
    max_words: int = celeryconfig.SUMMARY_DEFAULT_WORDS,
) -> dict:
    """A summary of the text (or of the previous step's text) in fr, en or nl."""
    # max_words is checked by the engine: a message may carry anything, and int("many") would
    # end the job with an internal error instead of invalid_parameter.
    return llama.summarise(_text_of(source), language, max_words, _on_progress(self))


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_TRANSLATE)
def translate(self: GridTask, source: str | dict, target: str = "en") -> dict:
    """The text (or the previous step's summary) translated into fr, en or nl."""
    return llama.translate(_text_of(source), target, _on_progress(self))
