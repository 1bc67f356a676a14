"""Recognise and measure a document before any page is rendered.

Pure checks with poppler's ``pdfinfo`` and Pillow's header parsing: no page is rendered and no
engine is loaded, so the coordinator uses the same checks at submission (a 4xx there) that the
worker repeats before it works (a failed job there).
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

import celeryconfig as limits
from workers.protocol import errors
from workers.protocol.errors import BadInput, TransientError

#: Separates the pages of a document's text, as pdftotext and the tesseract CLI do.
PAGE_BREAK = "\f"

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

#: The smallest page side a PDF may have (ISO 32000-1, annex C: 3 × 3 units); anything smaller
#: is a broken or hostile box, not a page with text on it.
MIN_PAGE_POINTS = 3.0
#: The widest or tallest image Tesseract reads ("Image too large" beyond): a page is read at a
#: dpi low enough to fit, or refused.
MAX_PAGE_SIDE_PIXELS = 32767
#: Seconds pdfinfo may take to list a document's pages.
PDFINFO_TIMEOUT = 60

# pdfinfo prints "Page    7 size:  595.276 x 841.89 pts (A4)" with printf's %g: an integer, a
# decimal, an exponent (1e+07, 1e-05), a signed zero (-0), inf or nan (-nan), depending on the
# numbers in the PDF (poppler 22.12: a 400-digit MediaBox gives inf, inf - inf gives -nan).
_PAGE_LINE = re.compile(r"Page\s+(\d+)\s+size:(.*)")
_NUMBER = r"[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|inf(?:inity)?|nan)"
_PAGE_SIZE = re.compile(rf"\s*({_NUMBER})\s*x\s*({_NUMBER})\s*pts\b.*", re.IGNORECASE)
_PAGE_COUNT = re.compile(r"Pages:\s*(\d+)\s*")


@dataclass(frozen=True)
class Page:
    """One page: its size in points (1/72 inch) or pixels, the dpi it will be read at, and the
    size in pixels it is rendered to (before the page's rotation), within the page budget."""

    number: int
    width: float
    height: float
    dpi: int
    pixels: tuple[int, int] = (0, 0)


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


def _mm(points: float) -> str:
    mm = points / 72 * 25.4
    return f"{mm:.1e}" if mm >= 1e6 else f"{mm:.0f}" if mm >= 10 else f"{mm:.2g}"


def _too_large(number: int, width_pt: float, height_pt: float) -> BadInput:
    if math.isfinite(width_pt) and math.isfinite(height_pt):
        size = f"{_mm(width_pt)} × {_mm(height_pt)} mm"
    else:
        size = "its size is infinite"
    return BadInput(
        f"Page {number} is too large ({size}): it cannot be read at {limits.OCR_MIN_DPI} dpi "
        f"within the {limits.OCR_MAX_PAGE_PIXELS / 1e6:.0f}-megapixel page budget.",
        code=errors.PAGE_TOO_LARGE,
    )


def measure_page(number: int, width_pt: float, height_pt: float) -> Page:
    """A PDF page of this size in points, with the dpi it is read at and its size in pixels.

    The dpi is the configured one, lowered until the rendered page fits the pixel budget and
    Tesseract's largest side; a page that does not fit at ``OCR_MIN_DPI`` is refused, and so is
    a size that is not a number, not positive, or smaller than any real page.
    """
    if math.isnan(width_pt) or math.isnan(height_pt):
        raise BadInput(
            f"Page {number} has no measurable size: the PDF is damaged.", code=errors.CORRUPT_DOCUMENT
        )
    if width_pt <= 0 or height_pt <= 0:
        raise BadInput(f"Page {number} has no area: the PDF is damaged.", code=errors.CORRUPT_DOCUMENT)
    width_in, height_in = width_pt / 72, height_pt / 72
    if min(width_pt, height_pt) < MIN_PAGE_POINTS:
        raise BadInput(
            f"Page {number} is {_mm(width_pt)} × {_mm(height_pt)} mm, smaller than any page can be "
            f"(a side of at least {MIN_PAGE_POINTS:g} points, about 1 mm): the PDF is damaged.",
            code=errors.CORRUPT_DOCUMENT,
        )
    if math.isinf(width_in) or math.isinf(height_in):
        raise _too_large(number, width_pt, height_pt)
    area = width_in * height_in  # inf past 1e308: the budget dpi is then 0
    dpi = min(
        limits.OCR_DPI,
        math.floor(math.sqrt(limits.OCR_MAX_PAGE_PIXELS / area)),
        math.floor(MAX_PAGE_SIDE_PIXELS / max(width_in, height_in)),
    )
    # Poppler rounds a page's pixels up: lower the dpi until the rounded page fits too.
    while dpi >= max(limits.OCR_MIN_DPI, 1):
        width_px, height_px = math.ceil(width_in * dpi), math.ceil(height_in * dpi)
        if (
            width_px * height_px <= limits.OCR_MAX_PAGE_PIXELS
            and max(width_px, height_px) <= MAX_PAGE_SIDE_PIXELS
        ):
            return Page(number, width_pt, height_pt, dpi, (width_px, height_px))
        dpi -= 1
    raise _too_large(number, width_pt, height_pt)


def _check_page_count(count: int) -> None:
    if count == 0:
        raise BadInput("The document has no pages.", code=errors.EMPTY_DOCUMENT)
    if count > limits.OCR_MAX_PAGES:
        raise BadInput(
            f"The document has {count} pages; the limit is {limits.OCR_MAX_PAGES}. "
            "Split it and submit the parts.",
            code=errors.TOO_MANY_PAGES,
        )


def _pdfinfo(path: str | Path, last_page: int) -> str:
    """pdfinfo's report on pages 1 to ``last_page`` (fewer if the document has fewer)."""
    command = ["pdfinfo", "-f", "1", "-l", str(last_page), str(path)]
    try:
        # The C locale: sizes printed "595.276", never "595,276".
        environment = {**os.environ, "LC_ALL": "C"}
        done = subprocess.run(
            command, capture_output=True, timeout=PDFINFO_TIMEOUT, check=False, env=environment
        )
    except FileNotFoundError:
        raise TransientError(
            "poppler-utils (pdfinfo, pdftoppm) is not installed on this machine.",
            code=errors.ENGINE_UNAVAILABLE,
        ) from None
    except subprocess.TimeoutExpired:
        raise BadInput(
            f"The PDF took more than {PDFINFO_TIMEOUT} s to open: it cannot be read.",
            code=errors.CORRUPT_DOCUMENT,
        ) from None
    if done.returncode == -signal.SIGKILL:  # out of memory, most often: a fault of this machine
        raise TransientError("pdfinfo was killed while opening the PDF.")
    if done.returncode != 0:
        text = done.stderr.decode("utf-8", "replace").lower()
        if "password" in text or "encrypt" in text:
            raise BadInput(
                "The PDF is password-protected: remove the password and submit it again.",
                code=errors.ENCRYPTED_DOCUMENT,
            )
        raise BadInput("The PDF is damaged or not a PDF: it cannot be opened.", code=errors.CORRUPT_DOCUMENT)
    return done.stdout.decode("utf-8", "replace")


def _parse_pdfinfo(report: str) -> tuple[int, dict[int, tuple[float, float]]]:
    """The page count and each reported page's size in points.

    Only what follows the last ``Pages:`` line is read: the document's metadata (its title, its
    author…) comes before it and may hold lines that look like pdfinfo's own.
    """
    lines = report.split("\n")  # pdfinfo ends its lines with \n; a title may hold \r, \f…
    counts = [index for index, line in enumerate(lines) if _PAGE_COUNT.fullmatch(line)]
    if not counts:
        raise BadInput("The PDF is damaged or not a PDF: it cannot be opened.", code=errors.CORRUPT_DOCUMENT)
    count = int(_PAGE_COUNT.fullmatch(lines[counts[-1]])[1])
    sizes: dict[int, tuple[float, float]] = {}
    for line in lines[counts[-1] + 1 :]:
        if not (page := _PAGE_LINE.fullmatch(line)):
            continue
        number = int(page[1])
        if not (size := _PAGE_SIZE.fullmatch(page[2])):
            raise BadInput(
                f"Page {number} has a size that cannot be read ({page[2].strip()[:60]!r}): "
                "the PDF is damaged.",
                code=errors.CORRUPT_DOCUMENT,
            )
        sizes[number] = (float(size[1]), float(size[2]))
    return count, sizes


def inspect_pdf(path: str | Path) -> DocumentInfo:
    """Page count and page sizes from ``pdfinfo``; refuses what must not be rendered."""
    # One run: pdfinfo stops at the last page asked for, so a document of a million pages costs
    # no more than one just over the limit.
    count, sizes = _parse_pdfinfo(_pdfinfo(path, limits.OCR_MAX_PAGES + 1))
    _check_page_count(count)
    pages = []
    for number in range(1, count + 1):
        if number not in sizes:  # never assume a size: that is how a huge page would get through
            raise BadInput(
                f"The size of page {number} cannot be read: the PDF is damaged.",
                code=errors.CORRUPT_DOCUMENT,
            )
        pages.append(measure_page(number, *sizes[number]))
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
                    if max(width, height) > MAX_PAGE_SIDE_PIXELS:
                        raise BadInput(
                            f"Page {index + 1} is {width} × {height} pixels: Tesseract reads no "
                            f"side longer than {MAX_PAGE_SIDE_PIXELS} pixels.",
                            code=errors.PAGE_TOO_LARGE,
                        )
                    pages.append(Page(index + 1, float(width), float(height), 0, (width, height)))
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


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def parse_flag(value: object, name: str) -> bool:
    """A yes/no option as JSON gives it (true, false) or a form does (true, 1, yes, on…)."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadInput(f"{name} is true or false, not {str(value)[:40]!r}.", code=errors.INVALID_PARAMETER)


def parse_quality(value: object) -> str:
    """An OCR quality (``celeryconfig.OCR_QUALITIES``); none given is ``standard``."""
    if value is None or value == "":
        return limits.OCR_QUALITIES[0]
    if isinstance(value, str):
        value = value.strip().lower()
    if value not in limits.OCR_QUALITIES:
        raise BadInput(
            f"ocr_quality is one of {', '.join(limits.OCR_QUALITIES)}, not {str(value)[:40]!r}.",
            code=errors.INVALID_PARAMETER,
        )
    return value
