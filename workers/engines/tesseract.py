"""Text from PDF and image pages, one page at a time: a PDF page's own text layer when it has
a usable one (``workers.engines.textlayer``), else Tesseract.

Pages are rendered by poppler one by one in grayscale (measured: rendering a whole document at
once took gigabytes; grayscale brings pytesseract to the CLI's speed). A scanned or photographed
page is made ready in milliseconds (``workers.engines.pages``: contrast, orientation, skew), then
read by one run of Tesseract (``OMP_THREAD_LIMIT=1``: several times faster on small machines)
as one uniform block, which writes its text and each word's confidence. A page read with little
confidence is read again turned (half round, then as Tesseract's OSD says), so an upright page
costs one reading only.
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import pytesseract
from pdf2image import convert_from_path
from pdf2image.exceptions import PDFPageCountError, PDFPopplerTimeoutError
from PIL import Image, ImageOps, ImageSequence
from pytesseract import Output

from workers.engines import pages, textlayer
from workers.protocol import documents, errors
from workers.protocol.errors import BadInput, GridError, TransientError

#: Seconds Tesseract may spend on one page before the page counts as unreadable.
PAGE_TIMEOUT = int(os.environ.get("GRID_OCR_PAGE_TIMEOUT", "120"))

PAGE_BREAK = documents.PAGE_BREAK


@cache
def installed_languages() -> frozenset[str]:
    """Tesseract's language packs on this machine."""
    return frozenset(pytesseract.get_languages(config=""))


@cache
def tesseract_version() -> str:
    """Tesseract's version, asked once per process (``tesseract --version`` took 25 ms: half of
    the time of reading a born-digital page from its text layer)."""
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


#: Below this mean word confidence (0–100), a page is checked for orientation: an upright page
#: of print reads at 80–95, a page on its side or upside down at 30 or less.
ROTATE_BELOW_CONFIDENCE = 50
#: A page the ink's measure turned half round is read the other way too below this confidence:
#: lines of capitals and amounts can fool the measure, and their upside-down reading scores 50.
TRUSTED_CONFIDENCE = 75
#: A page the ink's measure found upright is read again turned only below this: upside-down
#: pages of the evaluation set read at 17–38, small print the right way up at 40–60 (rereading
#: those cost 3× raw's time for nothing).
UPRIGHT_READS_ABOVE = 40
#: OSD's own confidence in the orientation it found, below which the page is left as it is.
MIN_ORIENTATION_CONFIDENCE = 2.0


#: Tesseract's page segmentation: one uniform block of text. Measured on the evaluation set
#: (bench/ocr_eval.py, bench/evalset.py): the default (3, automatic layout) reads the right-hand
#: column of amounts on invoices and receipts as blocks of their own, far from their labels
#: (clean scans: 18 % character errors, 87.7 % of fields right); 6 keeps each label beside its
#: amount (0.2 %, 96.8 %); 4 (one column of lines) gave 5.0 %, 93.7 %.
PAGE_SEGMENTATION = 6
#: Resolutions a page may say it has: outside them its own word is not taken.
_SANE_DPI = range(70, 1201)


def _read(image: Image.Image, languages: str, dpi: int | None = None) -> tuple[str, float | None]:
    """The page's text and Tesseract's mean word confidence (None without a word), from one
    run of Tesseract that writes both (txt and tsv), told the page's resolution when it is known.

    The page is handed over as an uncompressed PGM file: pytesseract's default, PNG, took as long
    to compress a noisy photo (0.5 s) as Tesseract took to read it."""
    config = f"--psm {PAGE_SEGMENTATION} -c tessedit_create_tsv=1"
    if dpi in _SANE_DPI:
        config += f" --dpi {dpi}"
    try:
        with _one_thread(), tempfile.TemporaryDirectory(prefix="grid-ocr-") as folder:
            page, base = Path(folder, "page.pgm"), Path(folder, "page")
            image.save(page)
            pytesseract.pytesseract.run_tesseract(
                str(page), str(base), "txt tsv", languages, config=config, timeout=PAGE_TIMEOUT
            )
            text, tsv = (
                Path(f"{base}.{extension}").read_text(errors="replace") for extension in ("txt", "tsv")
            )
        return text, _mean_confidence(tsv)
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


def _mean_confidence(tsv: str) -> float | None:
    scores = []
    for line in tsv.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) == 12 and fields[0] == "5" and fields[11].strip():
            try:
                score = float(fields[10])
            except ValueError:
                continue
            if score >= 0:
                scores.append(score)
    return round(sum(scores) / len(scores), 1) if scores else None


def _orientation(image: Image.Image) -> int:
    """Degrees to turn the page clockwise to stand it upright, by Tesseract's OSD (0 when it
    cannot tell: too little text, no ``osd`` pack)."""
    if "osd" not in installed_languages():
        return 0
    try:
        with _one_thread():
            found = pytesseract.image_to_osd(image, output_type=Output.DICT, timeout=PAGE_TIMEOUT)
    except (pytesseract.TesseractError, RuntimeError):
        return 0
    if float(found.get("orientation_conf", 0)) < MIN_ORIENTATION_CONFIDENCE:
        return 0
    return int(found.get("rotate", 0)) % 360


def _read_page(
    image: Image.Image, languages: str, dpi: int | None = None, quality: str = "standard"
) -> tuple[str, dict]:
    """Read a page made ready by ``workers.engines.pages`` (contrast, orientation, skew). A poor
    reading (an upside-down page reads at 30 or less) is tried again turned half round, the most
    likely mistake of the ink's measures, then, if still poor, at the turn Tesseract's OSD finds;
    the best reading is kept. Returns its text and how it was read."""
    prepared = pages.prepare(image, enlarge_small_print=quality == "best")
    if dpi is not None:
        dpi *= prepared.enlarged
    try:
        text, confidence = _read(prepared.image, languages, dpi)
        turn, tried, runs = prepared.turn, {0}, 1
        for more in (180, None):
            # a page turned half round by the ink's measure is checked unless it reads well; one
            # the measure found upright only if it reads as badly as an upside-down page does
            if prepared.flipped and more == 180:
                enough = TRUSTED_CONFIDENCE
            elif prepared.orientation_known and not prepared.flipped:
                enough = UPRIGHT_READS_ABOVE
            else:
                enough = ROTATE_BELOW_CONFIDENCE
            if confidence is None or confidence >= enough:
                break  # a page without a word (blank) is not read again
            if more is None:
                more, runs = _orientation(prepared.image), runs + 1
            if more in tried:
                continue
            tried.add(more)
            runs += 1
            with prepared.image.rotate(-more, expand=True) as turned:  # PIL turns counter-clockwise
                again, again_confidence = _read(turned, languages, dpi)
            if (again_confidence or 0) > confidence:
                text, confidence, turn = again, again_confidence, (prepared.turn + more) % 360
    finally:
        if prepared.image is not image:
            prepared.image.close()
    return text, {
        "method": "ocr",
        "confidence": confidence,
        "rotated": turn,
        "skew": prepared.skew,
        "deskewed": prepared.deskewed,
        "contrast_normalised": prepared.contrast_normalised,
        "small_print": prepared.small_print,
        "enlarged": prepared.enlarged,
        "tesseract_runs": runs,
    }


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


def _dpi(resolution: object) -> int | None:
    """An image's horizontal resolution as its file says it, if it is a number (a TIFF may say
    0/0, NaN, or anything)."""
    try:
        value = float(resolution[0])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        return None
    return round(value) if math.isfinite(value) and 0 < value < 100_000 else None


def _gray(image: Image.Image) -> Image.Image:
    """The image in 8-bit grayscale, transparent parts white (a transparent PNG's hidden pixels
    are often black: read as they are, the page is a black sheet)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        with Image.new("RGBA", rgba.size, (255, 255, 255, 255)) as white:
            white.alpha_composite(rgba)
            rgba.close()
            return white.convert("L")
    return image.convert("L")


def ocr_file(
    path: str | Path,
    languages: str,
    on_page: Callable[[int, int], None] = lambda done, total: None,
    force_ocr: bool = False,
    quality: str = "standard",
) -> dict:
    """Read every page of a PDF or image file; calls ``on_page(done, total)`` after each page.

    A PDF page with a usable text layer is read from it unless ``force_ocr``; every other page
    by Tesseract, small print enlarged first at ``quality="best"``. The result says, per page,
    how it was read (``text_layer`` or ``ocr``), with Tesseract's mean word confidence and what
    was done to the page (see ``_read_page``)."""
    path = Path(path)
    languages = documents.parse_languages(languages)
    missing = set(languages.split("+")) - installed_languages()
    if missing:
        raise TransientError(  # another worker may have the pack; this one should not serve OCR
            f"Tesseract language pack(s) {', '.join(sorted(missing))} missing on this worker.",
            code=errors.ENGINE_UNAVAILABLE,
        )
    with path.open("rb") as handle:
        head = handle.read(16)
    layer_reading = None if force_ocr or documents.sniff(head) != "pdf" else textlayer.start(path)
    try:
        return _read_file(path, languages, on_page, quality, layer_reading)
    finally:
        textlayer.stop(layer_reading)  # on every way out: a time limit, an error, a bad page


def _read_file(
    path: Path,
    languages: str,
    on_page: Callable[[int, int], None],
    quality: str,
    layer_reading: subprocess.Popen | None,
) -> dict:
    info = documents.inspect(path)
    total = info.page_count
    texts: list[str] = []
    readings: list[dict] = []

    def read(image: Image.Image, number: int, dpi: int | None) -> None:
        text, how = _read_page(image, languages, dpi, quality)
        texts.append(text)
        readings.append({"page": number, **how})

    try:
        if info.kind == "pdf":
            layers = textlayer.pages_text(layer_reading, total)
            for page, layer in zip(info.pages, layers, strict=True):
                if textlayer.usable(layer):
                    texts.append(layer)
                    readings.append(
                        {"page": page.number, "method": "text_layer", "confidence": None, "rotated": 0}
                    )
                else:
                    with _render_pdf_page(path, page) as image:
                        read(image, page.number, page.dpi)
                on_page(len(texts), total)
        else:
            with Image.open(path) as document:
                for number, frame in enumerate(ImageSequence.Iterator(document), start=1):
                    resolution = frame.info.get("dpi") or document.info.get("dpi")
                    with ImageOps.exif_transpose(frame) as shown, _gray(shown) as gray:
                        read(gray, number, _dpi(resolution))
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
        "page_readings": readings,
        "engine": {"name": "tesseract", "version": tesseract_version()},
    }
