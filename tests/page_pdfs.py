"""PDFs whose page boxes make poppler's ``pdfinfo`` print every kind of number, written by hand.

``pdfinfo`` prints a page's size (its crop box) with printf's ``%g``: ``595``, ``595.276``,
``1e+07``, ``1e-05``, ``-0``, ``inf``, ``-nan``. PDF itself has no exponent notation (poppler
reads ``1e7`` in a box as ``1`` then a stray keyword, and falls back to US Letter), so the
exponents come from long integers (``10000000`` prints ``1e+07``), ``inf`` from a number too long
for a double and ``-nan`` from ``inf - inf``. A box written backwards or below the origin is
normalised by poppler (``[0 0 -595 -842]`` prints ``595 x 842``), so the only negative sizes it
prints are ``-0`` and ``-nan``.

``HOSTILE`` lists the documents that must be refused, with what poppler 22.12 prints for them
and the code they are refused with; ``rotated_pdf``, ``banner_pdf``, ``card_pdf`` and
``cropped_pdf`` are unusual but sound pages that must still be read.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.documents import ENGLISH_LINES, _assemble, _stream, _text_content

_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
#: A number too long for a double: poppler reads it as inf.
_HUGE = b"1" + b"0" * 400


def page_pdf(*pages: bytes, count: int | None = None, info: bytes | None = None) -> bytes:
    """A PDF with one page per entry, each entry the page dictionary's own keys (a /MediaBox…)
    plus, optionally, a content stream after ``b"\\nstream\\n"``; ``count`` is the /Count the
    page tree claims, ``info`` the document information dictionary (its /Title…)."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", _FONT]
    kids = []
    for page in pages:
        keys, _, content = page.partition(b"\nstream\n")
        kids.append(b"%d 0 R" % (len(objects) + 1))
        resources = b" /Resources << /Font << /F1 3 0 R >> >>"
        if content:
            objects.append(
                b"<< /Type /Page /Parent 2 0 R "
                + keys
                + resources
                + b" /Contents %d 0 R >>" % (len(objects) + 2)
            )
            objects.append(_stream(content))
        else:
            objects.append(b"<< /Type /Page /Parent 2 0 R " + keys + resources + b" >>")
    objects[1] = b"<< /Type /Pages /Count %d /Kids [%s] >>" % (
        len(pages) if count is None else count,
        b" ".join(kids),
    )
    trailer_info = b""
    if info is not None:
        objects.append(info)
        trailer_info = b" /Info %d 0 R" % len(objects)
    return _assemble(objects).replace(b"/Root 1 0 R", b"/Root 1 0 R" + trailer_info)


def _text(lines: list[str], size: tuple[float, float], font_size: float = 14) -> bytes:
    return b"\nstream\n" + _text_content(lines, size, font_size)


A4_PAGE = b"/MediaBox [0 0 595 842]" + _text(ENGLISH_LINES[:2], (595, 842))


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    prints: str  # the size pdfinfo prints for the offending page
    code: str


HOSTILE = [
    # The chaos run's document: accepted as A4, rendered by poppler as a 1 x 1 image.
    Hostile(
        "exponent-1e+07", page_pdf(b"/MediaBox [0 0 10000000 10000000]"), "1e+07 x 1e+07", "page_too_large"
    ),
    Hostile(
        "exponent-1e+11-wide", page_pdf(b"/MediaBox [0 0 99999999999 842]"), "1e+11 x 842", "page_too_large"
    ),
    Hostile("infinite", page_pdf(b"/MediaBox [0 0 %s %s]" % (_HUGE, _HUGE)), "inf x inf", "page_too_large"),
    Hostile(
        "minus-to-plus-infinity",
        page_pdf(b"/MediaBox [-%s 0 %s 842]" % (_HUGE, _HUGE)),
        "inf x 842",
        "page_too_large",
    ),
    Hostile(
        "not-a-number",
        page_pdf(b"/MediaBox [%s 0 %s 842]" % (_HUGE, _HUGE)),
        "-nan x 842",
        "corrupt_document",
    ),
    Hostile("negative-zero", page_pdf(b"/MediaBox [0 0 -0.0 842]"), "-0 x 842", "corrupt_document"),
    Hostile(
        "tiny-exponent", page_pdf(b"/MediaBox [0 0 0.00001 0.00001]"), "1e-05 x 1e-05", "corrupt_document"
    ),
    Hostile("tiny-decimal", page_pdf(b"/MediaBox [0 0 0.001 0.001]"), "0.001 x 0.001", "corrupt_document"),
    Hostile("long-and-thin", page_pdf(b"/MediaBox [0 0 1000000 0.5]"), "1e+06 x 0.5", "corrupt_document"),
    Hostile("page-count-lies", page_pdf(A4_PAGE, count=3), "0 x 0", "corrupt_document"),
    Hostile(
        "huge-third-page",
        page_pdf(A4_PAGE, A4_PAGE, b"/MediaBox [0 0 10000000 842]"),
        "1e+07 x 842",
        "page_too_large",
    ),
    # A title with line breaks forges pdfinfo's own lines: an A4 size and a page count.
    Hostile(
        "size-forged-in-the-title",
        page_pdf(
            b"/MediaBox [0 0 10000000 10000000]",
            info=b"<< /Title (Minutes\nPages: 1\nPage    1 size:  595 x 842 pts \\(A4\\)\n) >>",
        ),
        "1e+07 x 1e+07",
        "page_too_large",
    ),
]


def rotated_pdf() -> bytes:
    """A portrait page stored landscape with /Rotate 90, as scanners write it: its text is
    drawn turned a quarter turn back, so that it reads upright once the page is turned."""
    upright = _text_content(ENGLISH_LINES[:4], (595, 842), 14)
    return page_pdf(b"/MediaBox [0 0 842 595] /Rotate 90\nstream\nq 0 1 -1 0 842 0 cm\n" + upright + b"\nQ")


BANNER_TEXT = "KoproGo banner across the hall"


def banner_pdf() -> bytes:
    """A 200 x 2 in banner, PDF's widest page: 60,000 pixels wide at 300 dpi, over what
    Tesseract takes, so it is read at a lower dpi."""
    return page_pdf(
        b"/MediaBox [0 0 14400 144]\nstream\nBT /F1 48 Tf 72 50 Td (%s) Tj ET" % BANNER_TEXT.encode()
    )


CARD_TEXT = "Linden Court"


def card_pdf() -> bytes:
    """A business card (85 x 55 mm) with a negative origin, written backwards."""
    return page_pdf(b"/MediaBox [241 156 0 0]\nstream\nBT /F1 18 Tf 20 70 Td (%s) Tj ET" % CARD_TEXT.encode())


def cropped_pdf() -> bytes:
    """An A4 crop box on a 10,000 pt media box: pdfinfo measures the crop box, and a renderer
    that drew the media box at 300 dpi would draw 1.7 gigapixels."""
    return page_pdf(
        b"/MediaBox [0 0 10000 10000] /CropBox [0 0 595 842]" + _text(ENGLISH_LINES[:4], (595, 842))
    )
