"""Recognise and measure a document before any page is rendered.

Pure checks with poppler's ``pdfinfo`` and Pillow's header parsing: no page is rendered and no
engine is loaded, so the coordinator uses the same checks at submission (a 4xx there) that the
worker repeats before it works (a failed job there).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

import celeryconfig as limits
from workers.protocol import errors
from workers.protocol.errors import BadInput, TransientError

_MAGIC = (
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
MEDIA_TYPES = {
    "pdf": "application/pdf",
    "png": "image/png",
    "jpeg": "image/jpeg",
    "tiff": "image/tiff",
}
_PAGE_SIZE = re.compile(r"Page\s+(\d+)\s+size:\s*([\d.]+)\s*x\s*([\d.]+)\s*pts")


@dataclass(frozen=True)
class Page:
    """One page: its size in points (1/72 inch) or pixels, and the dpi it will be read at."""

    number: int
    width: float
    height: float
    dpi: int


@dataclass(frozen=True)
class DocumentInfo:
    kind: str  # pdf | png | jpeg | tiff
    pages: tuple[Page, ...]

    @property
    def page_count(self) -> int:
        return len(self.pages)


def sniff(head: bytes) -> str:
    """The document's kind from its first bytes, whatever its name claims."""
    if not head:
        raise BadInput("The document is empty.", code=errors.EMPTY_DOCUMENT)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    raise BadInput(
        "Unsupported document type: send a PDF, PNG, JPEG or TIFF file.",
        code=errors.UNSUPPORTED_TYPE,
    )


def parse_languages(value: object) -> str:
    """Validate a Tesseract language list such as ``fra+eng``; returns it normalised."""
    if value is not None and not isinstance(value, str):  # a JSON number or list, a forged task
        raise BadInput(
            f"Give the OCR languages as text: {' or '.join(limits.OCR_LANGUAGES)}, "
            "joined with + (e.g. fra+eng).",
            code=errors.UNKNOWN_LANGUAGE,
        )
    value = (value or limits.OCR_DEFAULT_LANGUAGES).strip()
    wanted = [part for part in re.split(r"[+,\s]+", value) if part]
    unknown = [lang for lang in wanted if lang not in limits.OCR_LANGUAGES]
    if unknown or not wanted:
        raise BadInput(
            f"Unknown OCR language {', '.join(unknown) or value!r}: "
            f"choose from {', '.join(limits.OCR_LANGUAGES)} (e.g. fra+eng).",
            code=errors.UNKNOWN_LANGUAGE,
        )
    return "+".join(dict.fromkeys(wanted))


def reading_dpi(width_in: float, height_in: float) -> int:
    """The dpi a page of this size is rendered at: the configured dpi, lowered to fit the budget."""
    area = width_in * height_in
    if area <= 0:
        raise BadInput("A page has no area.", code=errors.CORRUPT_DOCUMENT)
    budget_dpi = math.floor(math.sqrt(limits.OCR_MAX_PAGE_PIXELS / area))
    return min(limits.OCR_DPI, budget_dpi)


def _check_page(number: int, width_in: float, height_in: float) -> int:
    dpi = reading_dpi(width_in, height_in)
    if dpi < limits.OCR_MIN_DPI:
        raise BadInput(
            f"Page {number} is too large ({width_in * 2.54:.0f} × {height_in * 2.54:.0f} cm): "
            f"it cannot be read at {limits.OCR_MIN_DPI} dpi within the "
            f"{limits.OCR_MAX_PAGE_PIXELS / 1e6:.0f}-megapixel page budget.",
            code=errors.PAGE_TOO_LARGE,
        )
    return dpi


def _check_page_count(count: int) -> None:
    if count == 0:
        raise BadInput("The document has no pages.", code=errors.EMPTY_DOCUMENT)
    if count > limits.OCR_MAX_PAGES:
        raise BadInput(
            f"The document has {count} pages; the limit is {limits.OCR_MAX_PAGES}. "
            "Split it and submit the parts.",
            code=errors.TOO_MANY_PAGES,
        )


def inspect_pdf(path: str | Path) -> DocumentInfo:
    """Page count and page sizes from ``pdfinfo``; refuses what must not be rendered."""
    from pdf2image import pdfinfo_from_path
    from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError

    try:
        info = pdfinfo_from_path(str(path), timeout=30)
        count = int(info.get("Pages", 0))
        _check_page_count(count)
        sizes = pdfinfo_from_path(str(path), first_page=1, last_page=count, timeout=60)
    except PDFPageCountError as exc:
        text = str(exc).lower()
        if "password" in text or "encrypt" in text:
            raise BadInput(
                "The PDF is password-protected: remove the password and submit it again.",
                code=errors.ENCRYPTED_DOCUMENT,
            ) from None
        raise BadInput(
            "The PDF is damaged or not a PDF: it cannot be opened.", code=errors.CORRUPT_DOCUMENT
        ) from None
    except PDFInfoNotInstalledError:
        raise TransientError(
            "poppler-utils (pdfinfo, pdftoppm) is not installed on this machine.",
            code=errors.ENGINE_UNAVAILABLE,
        ) from None
    # pdfinfo_from_path keeps only "key: value" lines; page sizes come back as keys.
    found = {
        int(m[1]): (float(m[2]), float(m[3]))
        for key, value in sizes.items()
        if (m := _PAGE_SIZE.match(f"{key}: {value}"))
    }
    pages = []
    for number in range(1, count + 1):
        width_pt, height_pt = found.get(number, (595.0, 842.0))
        dpi = _check_page(number, width_pt / 72, height_pt / 72)
        pages.append(Page(number, width_pt, height_pt, dpi))
    return DocumentInfo("pdf", tuple(pages))


def inspect_image(path: str | Path, kind: str) -> DocumentInfo:
    """Frame count and pixel size from the image header; nothing is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                count = getattr(image, "n_frames", 1)
                _check_page_count(count)
                pages = []
                for index in range(count):
                    image.seek(index)
                    width, height = image.size
                    if width * height > limits.OCR_MAX_PAGE_PIXELS:
                        raise BadInput(
                            f"Page {index + 1} is {width} × {height} pixels, over the "
                            f"{limits.OCR_MAX_PAGE_PIXELS / 1e6:.0f}-megapixel page budget.",
                            code=errors.PAGE_TOO_LARGE,
                        )
                    pages.append(Page(index + 1, float(width), float(height), 0))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadInput("The image is too large to be read safely.", code=errors.PAGE_TOO_LARGE) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise BadInput(
            f"The {kind.upper()} image is damaged: it cannot be opened.",
            code=errors.CORRUPT_DOCUMENT,
        ) from None
    return DocumentInfo(kind, tuple(pages))


def check_size(size: int) -> None:
    """Refuse a document over the size limit."""
    if size > limits.MAX_DOCUMENT_BYTES:
        # The limit is set in MiB (GRID_MAX_DOCUMENT_MB): show both sizes in that unit, or a
        # document just over 20 MiB reads "21.0 MB; the limit is 21 MB".
        raise BadInput(
            f"The document is {size / 2**20:.1f} MB, over the "
            f"{limits.MAX_DOCUMENT_BYTES / 2**20:g} MB limit.",
            code=errors.DOCUMENT_TOO_LARGE,
        )


def inspect(path: str | Path) -> DocumentInfo:
    """Recognise a document file and check it against the limits, without rendering it."""
    path = Path(path)
    check_size(path.stat().st_size)
    with path.open("rb") as handle:
        kind = sniff(handle.read(16))
    if kind == "pdf":
        return inspect_pdf(path)
    return inspect_image(path, kind)
