"""Text from PDF and image pages with Tesseract, one page at a time.

Pages are rendered by poppler one by one in grayscale (FACTS.md: rendering a whole document at
once took gigabytes; grayscale brings pytesseract to the CLI's speed), and Tesseract runs with
``OMP_THREAD_LIMIT=1`` (several times faster on small machines).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytesseract
from pdf2image import convert_from_path
from pdf2image.exceptions import PDFPageCountError, PDFPopplerTimeoutError
from PIL import Image, ImageSequence

from workers.protocol import documents, errors
from workers.protocol.errors import BadInput, GridError, TransientError

#: Seconds Tesseract may spend on one page before the page counts as unreadable.
PAGE_TIMEOUT = int(os.environ.get("GRID_OCR_PAGE_TIMEOUT", "120"))

#: Separates pages in the returned text, as pdftotext and the tesseract CLI do.
PAGE_BREAK = "\f"


@cache
def installed_languages() -> frozenset[str]:
    """Tesseract's language packs on this machine."""
    return frozenset(pytesseract.get_languages(config=""))


def tesseract_version() -> str:
    return str(pytesseract.get_tesseract_version())


@contextmanager
def _one_thread() -> Iterator[None]:
    """OMP_THREAD_LIMIT=1 for the tesseract process only: set for the process it starts, then
    restored, so that llama.cpp (also OpenMP) in the same worker keeps its threads."""
    before = os.environ.get("OMP_THREAD_LIMIT")
    os.environ["OMP_THREAD_LIMIT"] = os.environ.get("GRID_OCR_THREADS", "1")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_THREAD_LIMIT", None)
        else:
            os.environ["OMP_THREAD_LIMIT"] = before


def _read(image: Image.Image, languages: str) -> str:
    try:
        with _one_thread():
            return pytesseract.image_to_string(image, lang=languages, timeout=PAGE_TIMEOUT)
    except pytesseract.TesseractNotFoundError:
        raise TransientError(
            "Tesseract is not installed on this worker.", code=errors.ENGINE_UNAVAILABLE
        ) from None
    except RuntimeError:  # pytesseract's timeout
        raise BadInput(
            f"A page took Tesseract more than {PAGE_TIMEOUT} s; it is not readable text.",
            code=errors.OCR_FAILED,
        ) from None
    except pytesseract.TesseractError as exc:
        if exc.status < 0:  # the tesseract process was killed (out of memory, most often)
            raise TransientError(
                f"Tesseract was killed (signal {-exc.status}).", code=errors.OCR_FAILED
            ) from None
        raise BadInput(f"Tesseract could not read a page: {exc.message}", code=errors.OCR_FAILED) from None


#: Pixels a rendered side may miss from the size asked for (poppler rounds up), before the
#: rendering counts as failed; far fewer is poppler's silent fallback (a 1 × 1 image).
RENDER_TOLERANCE = 2


def _check_rendering(page: documents.Page, image: Image.Image) -> None:
    """The page came out at the size it was asked for (either way round: the page's /Rotate
    turns it), or it is a failed page, never an empty one."""
    got, wanted = sorted(image.size), sorted(page.pixels)
    if all(
        want - RENDER_TOLERANCE <= side <= want + RENDER_TOLERANCE
        for side, want in zip(got, wanted, strict=True)
    ):
        return
    raise BadInput(
        f"Page {page.number} could not be rendered: poppler drew it at {image.width} × {image.height} "
        f"pixels instead of {page.pixels[0]} × {page.pixels[1]}.",
        code=errors.CORRUPT_DOCUMENT,
    )


def _render_pdf_page(path: Path, page: documents.Page) -> Image.Image:
    """The page's crop box (what a viewer shows, and what pdfinfo measured) at exactly the pixel
    size inspection chose: whatever boxes the document declares, no more pixels than the budget."""
    try:
        images = convert_from_path(
            str(path),
            dpi=page.dpi,
            first_page=page.number,
            last_page=page.number,
            grayscale=True,
            use_cropbox=True,
            size=page.pixels,
            timeout=PAGE_TIMEOUT,
        )
    except PDFPopplerTimeoutError:
        raise BadInput(
            f"Page {page.number} took more than {PAGE_TIMEOUT} s to render.",
            code=errors.OCR_FAILED,
        ) from None
    except PDFPageCountError:
        raise BadInput(
            "The PDF is damaged or not a PDF: it cannot be opened.", code=errors.CORRUPT_DOCUMENT
        ) from None
    if not images:
        raise BadInput(f"Page {page.number} could not be rendered.", code=errors.CORRUPT_DOCUMENT)
    image, *extra = images
    for other in extra:
        other.close()
    try:
        _check_rendering(page, image)
    except BadInput:
        image.close()
        raise
    return image


def ocr_file(
    path: str | Path,
    languages: str,
    on_page: Callable[[int, int], None] = lambda done, total: None,
) -> dict:
    """Read every page of a PDF or image file; calls ``on_page(done, total)`` after each page."""
    path = Path(path)
    languages = documents.parse_languages(languages)
    missing = set(languages.split("+")) - installed_languages()
    if missing:
        raise TransientError(  # another worker may have the pack; this one should not serve OCR
            f"Tesseract language pack(s) {', '.join(sorted(missing))} missing on this worker.",
            code=errors.ENGINE_UNAVAILABLE,
        )
    info = documents.inspect(path)
    total = info.page_count
    texts: list[str] = []
    try:
        if info.kind == "pdf":
            for page in info.pages:
                with _render_pdf_page(path, page) as image:
                    texts.append(_read(image, languages))
                on_page(len(texts), total)
        else:
            with Image.open(path) as document:
                for frame in ImageSequence.Iterator(document):
                    with frame.convert("L") as gray:
                        texts.append(_read(gray, languages))
                    on_page(len(texts), total)
    except GridError:
        raise
    except MemoryError:
        raise TransientError("The worker ran out of memory reading the document.") from None
    except (Image.DecompressionBombError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:  # disk full, no temp dir…
            raise TransientError(f"The worker could not read the document: {exc}") from None
        raise BadInput(
            f"The {info.kind.upper()} document is damaged: {exc}", code=errors.CORRUPT_DOCUMENT
        ) from None
    text = PAGE_BREAK.join(t.strip() for t in texts)
    return {
        "text": text,
        "pages": total,
        "languages": languages,
        "kind": info.kind,
        "characters": len(text),
        "engine": {"name": "tesseract", "version": tesseract_version()},
    }
