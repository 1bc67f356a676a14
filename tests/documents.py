"""Test documents with known text, generated from pure Python.

No font files and no network: PDFs are written by hand (PDF 1.4 objects, an
xref table and a trailer) using the standard Type1 font Helvetica with
/WinAnsiEncoding, so that French accents survive the round trip. Images are
rendered from those PDFs with poppler's ``pdftoppm`` and re-encoded with Pillow.

Regenerate the demo's bundled sample with::

    python -m tests.documents sample samples/proces-verbal-ag.pdf
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = [
    "ENGLISH_LINES",
    "FRENCH_LINES",
    "SAMPLE_PAGES",
    "blank_pdf",
    "cer",
    "corrupt_pdf",
    "encrypted_pdf",
    "huge_page_pdf",
    "text_image",
    "text_pdf",
    "write_sample",
]

# PDF's largest allowed user-space extent (PDF 1.4, Appendix C: 14 400 units = 200 in).
MAX_PDF_EXTENT = 14400.0

# ---------------------------------------------------------------------------
# Known texts. Plain spaces only (no non-breaking or narrow spaces, which
# cp1252 either lacks or which OCR reads back as ordinary spaces anyway).
# ---------------------------------------------------------------------------

FRENCH_LINES: list[str] = [
    "Coopérative d'habitation KoproGo - Résidence Les Tilleuls",
    "Procès-verbal de l'assemblée générale du 12 mars 2025",
    "Présents : 18 coopérateurs sur 24, le quorum est atteint.",
    "La séance s'ouvre à 19 h 30 ; lecture de l'ordre du jour.",
    "La trésorière reçoit les procurations de trois membres.",
    "Point 1 : approbation des comptes de l'exercice écoulé.",
    "Point 2 : réfection de la toiture côté jardin, bâtiment B.",
    "Devis « Toitures Dubois » : isolation, zinc et gouttières.",
    "Facture n° 2025-041 : montant hors TVA 1 234,56 €",
    "TVA à 6 % : 74,07 €, soit un total de 1 308,63 €",
    "Décision : budget approuvé, deux abstentions (Noël, Maïté).",
    "Les travaux débuteront en août, après les congés d'été.",
    "Prochaine réunion : jeudi 15 mai, salle commune.",
]

ENGLISH_LINES: list[str] = [
    "KoproGo Housing Cooperative - Linden Court",
    "Minutes of the annual general meeting, 12 March 2025",
    "Present: 18 members out of 24; the quorum is reached.",
    "The chair opens the meeting at 7:30 pm and reads the agenda.",
    "Item 1: approval of the accounts for the past year.",
    "Item 2: repair of the roof of the garden-side building.",
    "Invoice no. 2025-041 from Dubois Roofing Ltd.",
    "Amount before VAT: 1,234.56 EUR",
    "VAT at 6%: 74.07 EUR, total due: 1,308.63 EUR",
    "Decision: the budget is approved with two abstentions.",
    "Work will start in August, after the summer holidays.",
    "Next meeting: Thursday 15 May, in the common room.",
]

# The demo's bundled sample (samples/proces-verbal-ag.pdf), two pages.
SAMPLE_PAGES: list[list[str]] = [
    [
        "Coopérative d'habitation KoproGo",
        "Résidence Les Tilleuls, rue des Écoles 14, 1050 Ixelles",
        "",
        "Procès-verbal de l'assemblée générale ordinaire",
        "Séance du mercredi 12 mars 2025, salle commune",
        "",
        "Présents ou représentés : 18 coopérateurs sur 24",
        "(15 présents, 3 procurations). Le quorum est atteint.",
        "Présidence : Mme Hélène Lefèvre.",
        "Secrétaire : M. François Noël.",
        "La séance est ouverte à 19 h 30.",
        "",
        "Ordre du jour",
        "1. Approbation du procès-verbal de la séance précédente",
        "2. Approbation des comptes 2024 et décharge au conseil",
        "3. Réfection de la toiture du bâtiment B (côté jardin)",
        "4. Budget prévisionnel 2025 et appels de fonds",
        "5. Divers",
        "",
        "Point 1 : le procès-verbal du 20 septembre 2024 est",
        "approuvé sans remarque (18 voix pour).",
        "",
        "Point 2 : la trésorière présente les comptes 2024.",
        "Recettes : 86 420,00 € ; dépenses : 81 977,35 €.",
        "Les comptes sont approuvés et décharge est donnée au",
        "conseil d'administration (17 voix pour, 1 abstention).",
    ],
    [
        "Point 3 : réfection de la toiture du bâtiment B",
        "Des infiltrations ont été constatées au 3e étage après",
        "les pluies de janvier. Trois devis ont été demandés.",
        "Le conseil recommande l'offre de Toitures Dubois SRL.",
        "Budget voté : 14 500,00 € TVA comprise, financé par",
        "le fonds de réserve (9 000 €) et un appel de fonds.",
        "Vote : 16 pour, 1 contre, 1 abstention. Approuvé.",
        "",
        "Facture d'acompte de l'entrepreneur",
        "Toitures Dubois SRL, chaussée de Wavre 212, 1040 Etterbeek",
        "Facture n° 2025-041 du 3 mars 2025",
        "Acompte de 30 % sur travaux de toiture : 4 103,77 €",
        "TVA à 6 % : 246,23 €",
        "Total à payer : 4 350,00 € avant le 31 mars 2025",
        "",
        "Point 4 : le budget prévisionnel 2025 de 91 200,00 € est",
        "approuvé à l'unanimité. Appels de fonds trimestriels.",
        "",
        "Point 5 : divers. Le local vélos sera réaménagé en",
        "avril ; une corvée collective est prévue le samedi 26.",
        "",
        "L'ordre du jour étant épuisé, la séance est levée à 21 h 45.",
        "",
        "La présidente : Hélène Lefèvre",
        "Le secrétaire : François Noël",
    ],
]

# ---------------------------------------------------------------------------
# Minimal PDF writer
# ---------------------------------------------------------------------------

_MARGIN = 72.0  # one inch on every side


def _pdf_string(text: str) -> bytes:
    """Encode text as a PDF string literal in WinAnsi (cp1252), octal-escaping non-ASCII."""
    try:
        raw = text.encode("cp1252")
    except UnicodeEncodeError as exc:
        raise ValueError(f"text not representable in WinAnsiEncoding (cp1252): {text!r}") from exc
    out = bytearray(b"(")
    for byte in raw:
        if byte in (0x5C, 0x28, 0x29):  # \ ( )
            out += b"\\" + bytes([byte])
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\%03o" % byte
    out += b")"
    return bytes(out)


def _num(value: float) -> bytes:
    """Format a number compactly for PDF content (no exponent notation)."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return (text or "0").encode("ascii")


def _stream(content: bytes) -> bytes:
    """Wrap bytes as an (uncompressed) PDF stream object body."""
    return b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream"


def _assemble(objects: list[bytes]) -> bytes:
    """Serialise objects numbered 1..n (object 1 is the catalog) with xref and trailer."""
    buf = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(buf))
        buf += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(buf)
    buf += b"xref\n0 %d\n" % (len(objects) + 1)
    buf += b"0000000000 65535 f \n"
    for offset in offsets:
        buf += b"%010d 00000 n \n" % offset
    buf += b"trailer\n<< /Size %d /Root 1 0 R >>\n" % (len(objects) + 1)
    buf += b"startxref\n%d\n%%%%EOF\n" % xref_at
    return bytes(buf)


def _text_content(lines: list[str], page_size: tuple[float, float], font_size: float) -> bytes:
    """Content stream drawing lines top-down from the top-left margin."""
    width, height = page_size
    leading = 1.5 * font_size
    first_baseline = height - _MARGIN - font_size
    last_baseline = first_baseline - leading * (len(lines) - 1)
    if lines and last_baseline < _MARGIN * 0.5:
        raise ValueError(f"{len(lines)} lines at {font_size} pt do not fit on a {width}x{height} pt page")
    parts = [
        b"BT\n/F1 ",
        _num(font_size),
        b" Tf\n",
        _num(leading),
        b" TL\n",
        _num(_MARGIN),
        b" ",
        _num(first_baseline),
        b" Td\n",
    ]
    for index, line in enumerate(lines):
        if index:
            parts.append(b"T*\n")
        if line:
            parts += [_pdf_string(line), b" Tj\n"]
    parts.append(b"ET")
    return b"".join(parts)


def _build_pdf(page_contents: list[bytes | None], page_size: tuple[float, float]) -> bytes:
    """Build a PDF whose pages share one Helvetica font and one page size."""
    width, height = page_size
    if not (0 < width <= MAX_PDF_EXTENT and 0 < height <= MAX_PDF_EXTENT):
        raise ValueError(f"page size {page_size} outside 0..{MAX_PDF_EXTENT} pt")
    if not page_contents:
        raise ValueError("a PDF needs at least one page")
    # 1 catalog, 2 pages tree, 3 font, then per page: page object (+ content stream).
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    objects: list[bytes] = [b"", b"", font]  # catalog and page tree are filled in below
    kids = []
    for content in page_contents:
        page_number = len(objects) + 1
        kids.append(b"%d 0 R" % page_number)
        page = b"<< /Type /Page /Parent 2 0 R"
        if content is not None:
            page += b" /Contents %d 0 R" % (page_number + 1)
        page += b" >>"
        objects.append(page)
        if content is not None:
            objects.append(_stream(content))
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    # MediaBox and Resources are inheritable: put them once on the page tree.
    objects[1] = (
        b"<< /Type /Pages /Count %d /MediaBox [0 0 %s %s] "
        b"/Resources << /Font << /F1 3 0 R >> /ProcSet [/PDF /Text] >>\n/Kids ["
        % (len(kids), _num(width), _num(height))
        + b" ".join(kids)
        + b"] >>"
    )
    return _assemble(objects)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def text_pdf(
    pages: list[list[str]],
    *,
    page_size: tuple[float, float] = (595.0, 842.0),
    font_size: float = 14,
) -> bytes:
    """Return a PDF with one page per list of lines, in Helvetica (WinAnsiEncoding)."""
    contents: list[bytes | None] = [_text_content(lines, page_size, font_size) for lines in pages]
    return _build_pdf(contents, page_size)


def blank_pdf(n_pages: int) -> bytes:
    """Return a PDF of n_pages empty A4 pages (no content streams, so it stays small)."""
    if n_pages < 1:
        raise ValueError("n_pages must be >= 1")
    return _build_pdf([None] * n_pages, (595.0, 842.0))


def huge_page_pdf(width_pt: float = MAX_PDF_EXTENT, height_pt: float = MAX_PDF_EXTENT) -> bytes:
    """Return a one-page PDF far larger than A0 (default 200 x 200 in) with a line of text."""
    font_size = max(14.0, min(width_pt, height_pt) / 100)
    return text_pdf(
        [["Page géante : bien plus grande que le format A0."]],
        page_size=(width_pt, height_pt),
        font_size=font_size,
    )


def encrypted_pdf(password: str = "secret") -> bytes:
    """Return a text PDF protected by a user password (encrypted with pypdf)."""
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(text_pdf([FRENCH_LINES]))))
    # RC4-128 needs no extra crypto package (pypdf's pure-Python fallback handles it).
    writer.encrypt(user_password=password, owner_password=password + "-owner", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def corrupt_pdf() -> bytes:
    """Return bytes that start like a PDF but are truncated garbage (no xref, no trailer)."""
    garbage = bytes((i * 73 + 41) % 256 for i in range(512)).replace(b"obj", b"ojb")
    return b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pag" + garbage


_IMAGE_FORMATS = {
    "PNG": "PNG",
    "JPEG": "JPEG",
    "JPG": "JPEG",
    "TIFF": "TIFF",
    "TIF": "TIFF",
}


def text_image(lines: list[str], fmt: str = "PNG", dpi: int = 300) -> bytes:
    """Return an A4 grayscale scan-like image (PNG, JPEG or TIFF) of the lines at dpi."""
    pil_format = _IMAGE_FORMATS.get(fmt.upper())
    if pil_format is None:
        raise ValueError(f"unsupported image format {fmt!r} (PNG, JPEG or TIFF)")
    pdftoppm = shutil.which("pdftoppm")
    if pdftoppm is None:
        raise RuntimeError("pdftoppm (poppler-utils) is required to render test images")
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="koprogo-doc-") as tmp:
        src = Path(tmp, "page.pdf")
        src.write_bytes(text_pdf([lines]))
        subprocess.run(
            [
                pdftoppm,
                "-r",
                str(dpi),
                "-gray",
                "-png",
                "-singlefile",
                str(src),
                str(Path(tmp, "page")),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        with Image.open(Path(tmp, "page.png")) as image:
            image.load()
            out = io.BytesIO()
            options: dict = {"dpi": (dpi, dpi)}
            if pil_format == "JPEG":
                options["quality"] = 90
            elif pil_format == "TIFF":
                options["compression"] = "tiff_deflate"
            image.convert("L").save(out, format=pil_format, **options)
    return out.getvalue()


def _normalise(text: str) -> str:
    """Collapse runs of whitespace to one space and strip."""
    return re.sub(r"\s+", " ", text).strip()


def _levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) with two rows of DP."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        for j, char_b in enumerate(b, start=1):
            current[j] = min(
                previous[j] + 1,  # deletion
                current[j - 1] + 1,  # insertion
                previous[j - 1] + (char_a != char_b),  # substitution
            )
        previous = current
    return previous[-1]


def cer(expected: str, got: str) -> float:
    """Character error rate: Levenshtein(expected, got) / len(expected), whitespace-normalised."""
    expected_n, got_n = _normalise(expected), _normalise(got)
    if not expected_n:
        return 0.0 if not got_n else 1.0
    return _levenshtein(expected_n, got_n) / len(expected_n)


def write_sample(path: str | Path) -> Path:
    """Write the demo's two-page French AG minutes PDF to path and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text_pdf(SAMPLE_PAGES, font_size=12))
    return target


def _main(argv: list[str]) -> int:
    """CLI: ``python -m tests.documents sample PATH``."""
    if len(argv) != 2 or argv[0] != "sample":
        print("usage: python -m tests.documents sample PATH", file=sys.stderr)
        return 2
    print(write_sample(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
