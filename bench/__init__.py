"""Benchmarks of the grid, run by ``make bench`` (``python -m bench``). Not tests.

Every figure is a ratio between two things measured in the same run, on the same machine, a
few seconds apart: this machine is shared and noisy, so an absolute time means little and a time
from another run means nothing. Each line reads::

    name: grid X s vs raw Y s → ratio Z (n=…)

with ``ratio = grid / raw`` (above 1: the grid costs that many times the raw engine) and
``X``, ``Y`` medians of ``n`` alternating repetitions.

``ocr, end to end``
    An N-page French PDF (``tests.documents.text_pdf``) submitted as an OCR job through the HTTP
    API to an ocr-only volunteer, from just before the POST to the job's ``finished_at`` (set
    when the ledger worker records success), vs the raw Tesseract CLI on the same pages
    (``pdftoppm -r 300 -gray`` then ``tesseract -l fra``, ``OMP_THREAD_LIMIT=1``, page after
    page). What the grid adds: HTTP, database, broker, the volunteer, pytesseract and pdf2image,
    metering, the ledger round trip.
``ocr, worker side``
    The step's ``wall_seconds`` (measured by the volunteer's metering signals around the task
    body) vs the same raw time: the engine's own overhead (pdf2image + pytesseract vs the CLI).
    End to end minus worker side is queueing and bookkeeping.
``llm summarise, end to end`` / ``llm summarise, worker side``
    A summarise job on the tiny random-weight model (``workers.tinymodel``, context 512, one
    thread) vs one ``create_chat_completion`` of llama-cpp-python in this process with the same
    prompt and ``max_tokens`` (model loaded beforehand, as the volunteer has after its first
    job). The tiny model generates thousands of tokens a second, so this ratio is mostly the
    grid's fixed overhead per job: with a real model it shrinks towards the worker-side ratio.
``throughput`` (goal part, ``bench/throughput.py``)
    No-op grid jobs per second (submitted one by one over HTTP by several client threads, run by
    a volunteer, entered and granted by the ledger, seen succeeded by the client) over bare Celery
    no-op tasks per second with the Redis result backend (``bench.bare:results_app``), one worker
    process of concurrency 2 on each side: at least 0.5 is the goal.
"""
