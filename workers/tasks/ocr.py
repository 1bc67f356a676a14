"""OCR tasks (queue ``ocr``): a document's pages to text."""

from __future__ import annotations

import os
import tempfile

from celery import shared_task

import celeryconfig
from workers import metering
from workers.engines import tesseract
from workers.protocol import documents, errors
from workers.protocol.errors import BadInput
from workers.tasks.base import GridTask


@shared_task(bind=True, base=GridTask, name=celeryconfig.TASK_OCR)
def extract(
    self: GridTask,
    languages: str = celeryconfig.OCR_DEFAULT_LANGUAGES,
    force_ocr: bool = False,
    quality: str = celeryconfig.OCR_QUALITIES[0],
) -> dict:
    """Text of every page of a PDF, PNG, JPEG or TIFF document (pages separated by form feeds):
    a PDF page's own text layer when it is usable, unless ``force_ocr``; Tesseract otherwise,
    working harder on small print at ``quality="best"``."""
    quality = documents.parse_quality(quality)  # a message may carry anything
    kind, data = self.fetch_input()
    if kind != "document":
        raise BadInput("The coordinator sent no document to read.", code=errors.CORRUPT_DOCUMENT)
    kind = documents.sniff(data[:16])

    def on_page(done: int, total: int) -> None:
        metering.count(self.request.id, pages=done)
        self.progress(pages_done=done, pages_total=total)

    with tempfile.TemporaryDirectory(prefix="grid-ocr-") as workdir:
        path = os.path.join(workdir, f"document.{kind}")
        with open(path, "wb") as handle:
            handle.write(data)
        return tesseract.ocr_file(
            path, languages, on_page=on_page, force_ocr=force_ocr is True, quality=quality
        )
