"""A PDF page's own text, when it has a usable one (born-digital invoices carry theirs).

Poppler's ``pdftotext`` reads one page at a time, its layout kept (labels stay beside their
values). A layer is used only when it looks like text: enough letters, few characters that
no text holds (replacement marks, control and private-use characters), little mojibake (UTF-8
read as Latin-1: ``Ã©``), and words rather than runs of symbols. Anything else (no layer, an
empty one, a scanner's poor invisible OCR layer, a font without a usable encoding) is read by
Tesseract instead, as OCRmyPDF's ``--skip-text`` and paperless-ngx's ``auto`` mode do.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
from pathlib import Path

#: Seconds pdftotext may take on one page.
TIMEOUT = 60
#: A layer with fewer letters than this says too little to be trusted over OCR.
MIN_LETTERS = 20
#: Shares of the page's visible characters, and of its words, a usable layer stays within.
MIN_TEXT_SHARE = 0.7
MAX_ODD_SHARE = 0.02
MAX_MOJIBAKE_SHARE = 0.02
MIN_WORD_SHARE = 0.5

_MOJIBAKE = re.compile(r"[ÃÂâ][\u0080-\u00bf€™œ]")
_WORD = re.compile(r"^[^\W\d_]{2,}[.,;:!?)]*$|^\d[\d.,/:-]*$")


def start(path: str | Path) -> subprocess.Popen | None:
    """pdftotext started on every page of the document, layout kept, while the caller does
    something else (the document's inspection: two short-lived processes side by side take the
    time of one); ``pages_text`` collects it. None if it cannot be started."""
    try:
        return subprocess.Popen(
            ["pdftotext", "-layout", "-enc", "UTF-8", str(path), "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


def stop(started: subprocess.Popen | None) -> None:
    """End a started pdftotext whose text is not wanted (a document that failed inspection)."""
    if started is not None and started.returncode is None:
        started.kill()
        started.communicate()


def pages_text(started: subprocess.Popen | None, pages: int) -> list[str | None]:
    """The text layer of pages 1 to ``pages`` from a started pdftotext (it ends each page with a
    form feed); a page poppler cannot read is None."""
    if started is None:
        return [None] * pages
    try:
        output, _ = started.communicate(timeout=TIMEOUT * max(1, pages // 10))
    except subprocess.TimeoutExpired:
        stop(started)
        return [None] * pages
    found = output.decode("utf-8", errors="replace").split("\f") if started.returncode == 0 else []
    if len(found) < pages:  # not one form feed per page: trust none of it
        return [None] * pages
    return found[:pages]


def usable(text: str | None) -> bool:
    """Whether a page's text layer reads as text (see the module's rules)."""
    if not text:
        return False
    visible = [char for char in text if not char.isspace()]
    letters = sum(char.isalpha() for char in visible)
    if letters < MIN_LETTERS:
        return False
    odd = sum(char == "\ufffd" or unicodedata.category(char) in ("Cc", "Co", "Cn", "Cs") for char in visible)
    texty = sum(char.isalnum() or unicodedata.category(char)[0] in "PS" for char in visible)
    words = text.split()
    wordlike = sum(bool(_WORD.match(word)) for word in words)
    return (
        odd / len(visible) <= MAX_ODD_SHARE
        and texty / len(visible) >= MIN_TEXT_SHARE
        and len(_MOJIBAKE.findall(text)) / max(1, letters) <= MAX_MOJIBAKE_SHARE
        and wordlike / max(1, len(words)) >= MIN_WORD_SHARE
    )
