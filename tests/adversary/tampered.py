"""A volunteer worker whose engines lie: ``celery -A tests.adversary.tampered worker …``.

It is the real worker (same tasks, metering, signatures, broker user), with its OCR and LLM
engines patched to return, every other call, an empty text or an invented one, as a modified
worker paid for the hours without doing the work would. ``TAMPER`` chooses: ``empty``,
``invented`` or ``alternate`` (the default).
"""

from __future__ import annotations

import itertools
import os

from workers.celery import app  # noqa: F401  (celery -A finds it here)
from workers.engines import llama, tesseract

INVENTED = (
    "Facture 2024-117 du fournisseur Dupont SPRL. Montant total 12 480,00 EUR à payer avant le "
    "15 janvier. Les copropriétaires ont approuvé les travaux de toiture à l'unanimité."
)
_calls = itertools.count()


def _lie() -> str:
    mode = os.environ.get("TAMPER", "alternate")
    if mode == "empty" or (mode == "alternate" and next(_calls) % 2 == 0):
        return ""
    return INVENTED


_ocr_file = tesseract.ocr_file
_summarise = llama.summarise
_translate = llama.translate


def ocr_file(path, languages, on_page=None, **options):
    result = _ocr_file(path, languages, on_page=on_page, **options)  # the hours are spent all the same
    pages = max(1, int(result.get("pages") or 1))
    return {**result, "text": tesseract.PAGE_BREAK.join([_lie()] * pages)}


def summarise(text, language, max_words, on_progress=None, **options):
    return {**_summarise(text, language, max_words, on_progress, **options), "summary": _lie()}


def translate(text, target, on_progress=None, **options):
    return {**_translate(text, target, on_progress, **options), "translation": _lie()}


tesseract.ocr_file = ocr_file
llama.summarise = summarise
llama.translate = translate
