"""How well the grid's OCR engine reads invoices and receipts, against raw Tesseract, and how well
``app.invoices.fields.extract`` then reads their fields.

The set is ``bench.evalset`` (seeded; by default 12 invoices and 12 receipts in French, Dutch and
English, each as a born-digital PDF, a clean 300-dpi scan, a degraded photo and a 72–100-dpi scan
that does not say its resolution: 96 pages). Every page
is read twice, in this process, one after the other (which goes first alternates):

- grid: ``workers.engines.tesseract.ocr_file(path, languages)``, as a volunteer runs it (a PDF
  page's text layer when usable, else pdf2image at 300 dpi in grayscale, the page made ready by
  ``workers.engines.pages`` (contrast, orientation, skew, small print) and one Tesseract run; a
  poorly read page read again turned); low-resolution pages are read a third time at
  ``ocr_quality=best`` (small print enlarged), shown on a row of their own;
- raw: the Tesseract CLI with its defaults, ``tesseract IMAGE - -l LANG`` (a PDF page first
  rendered by ``pdftoppm -r 300 -gray``);

both with ``OMP_THREAD_LIMIT=1``, with the document's own language (``--languages all``:
``fra+eng+nld``). Per kind of page (and per document type):

- word recall: the share of the expected words found in the output, words being runs of ``\\w``
  (letters, digits, underscore; Unicode, accents kept) of the lower-cased text, counted with their
  multiplicity (a word written twice must be read twice); pooled over the pages;
- CER: Levenshtein distance (rapidfuzz) between the expected and the read text, each with its runs of
  whitespace folded to one space, over the expected text's length; pooled (sum of distances over
  sum of lengths), so reading order counts (a label and its amount read apart cost characters);
- seconds per page: mean wall time of one page, rendering included, and the worst page's ratio;

then ``ratio = grid / raw``. Fields: ``extract`` on each page's text (grid, raw, and the text as
written, which must score every field); a value is right when equal to the expected one (``vat``:
the same lines, any order); a field not found is wrong. ``valid=true`` on an IBAN, VAT number or
structured communication that is not the expected one is counted apart, as a misread that passes
its check (must be 0) or another number printed on the page (the customer's VAT number).

Run alone: ``python -m bench.ocr_eval [--count N] [--languages doc|all] [--jobs J] [--keep DIR]
[--pages]``
(no servers needed); with ``python -m bench ocr`` or the ``grid`` part of ``python -m bench``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from bench import evalset
from bench.evalset import KINDS, Sample

ALL_LANGUAGES = "fra+eng+nld"
IDENTIFIERS = ("iban", "supplier_vat", "structured_communication")
FIELDS = (
    "supplier_name", "supplier_vat", "invoice_number", "issue_date", "due_date", "total", "currency",
    "vat", "iban", "structured_communication", "kind", "language",
)  # fmt: skip
SIDES = ("grid", "raw")
#: The kind of page also read at ``ocr_quality=best`` (small print enlarged).
BEST_QUALITY_KIND = "low_resolution"
RENDER_DPI = 300
PAGE_TIMEOUT = 300


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- measures -------------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Runs of word characters (Unicode letters, digits, underscore) of the lower-cased text."""
    return re.findall(r"\w+", text.lower())


def recall_counts(expected: str, got: str) -> tuple[int, int]:
    """(expected words found in ``got``, with multiplicity; expected words)."""
    want = Counter(words(expected))
    return sum((want & Counter(words(got))).values()), sum(want.values())


def _fold(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def cer_counts(expected: str, got: str) -> tuple[int, int]:
    """(Levenshtein distance, expected length), both texts whitespace-folded."""
    want = _fold(expected)
    return Levenshtein.distance(want, _fold(got)), len(want)


def same_value(name: str, got, want) -> bool:
    if name == "vat" and isinstance(got, list) and isinstance(want, list):
        key = lambda line: sorted(line.items())  # noqa: E731
        return sorted(map(key, got)) == sorted(map(key, want))
    return got == want


# --- reading --------------------------------------------------------------------------------------------


@dataclass
class Reading:
    text: str = ""
    seconds: float = 0.0
    error: str | None = None
    note: str = ""  # the grid's way of reading: text_layer / ocr, turned


@dataclass
class Result:
    sample: Sample
    readings: dict[str, Reading] = field(default_factory=dict)
    fields: dict[str, dict] = field(default_factory=dict)  # side (and "text") -> extract's result


def read_grid(sample: Sample, languages: str, quality: str = "standard") -> Reading:
    from workers.engines.tesseract import ocr_file
    from workers.protocol.errors import GridError

    started = time.perf_counter()
    try:
        result = ocr_file(sample.path, languages, quality=quality)
    except GridError as exc:
        return Reading("", time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    seconds = time.perf_counter() - started
    reading = result["page_readings"][0]
    note = reading["method"] + (f", turned {reading['rotated']}" if reading["rotated"] else "")
    note += f", enlarged ×{reading['enlarged']}" if reading.get("enlarged", 1) > 1 else ""
    return Reading(result["text"], seconds, note=note)


def read_raw(sample: Sample, languages: str, workdir: Path) -> Reading:
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    started = time.perf_counter()
    image = sample.path
    try:
        if sample.path.suffix == ".pdf":
            stem = workdir / f"raw-{sample.path.stem}"
            subprocess.run(
                ["pdftoppm", "-r", str(RENDER_DPI), "-gray", "-singlefile", str(sample.path), str(stem)],
                check=True,
                capture_output=True,
                timeout=PAGE_TIMEOUT,
            )
            image = stem.with_suffix(".pgm")
        done = subprocess.run(
            ["tesseract", str(image), "-", "-l", languages],
            check=True,
            capture_output=True,
            env=env,
            timeout=PAGE_TIMEOUT,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return Reading("", time.perf_counter() - started, str(exc))
    finally:
        if image != sample.path:
            image.unlink(missing_ok=True)
    return Reading(done.stdout.decode("utf-8", errors="replace"), time.perf_counter() - started)


def measure(samples: list[Sample], languages: str, workdir: Path, jobs: int = 1) -> list[Result]:
    """Read every page on both sides (grid first on even pages, raw first on odd ones)."""
    from app.invoices.fields import extract

    def one(index: int) -> Result:
        sample = samples[index]
        langs = ALL_LANGUAGES if languages == "all" else sample.tesseract_language
        result = Result(sample)
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            result.readings[side] = (
                read_grid(sample, langs) if side == "grid" else read_raw(sample, langs, workdir)
            )
        if sample.kind == BEST_QUALITY_KIND:  # the slower, better mode where it does something
            result.readings["best"] = read_grid(sample, langs, quality="best")
        for side, reading in result.readings.items():
            result.fields[side] = extract(reading.text.split("\f"))
        result.fields["text"] = extract([sample.text])
        return result

    results: list[Result] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for result in pool.map(one, range(len(samples))):
            results.append(result)
            if len(results) % 12 == 0 or len(results) == len(samples):
                _log(f"  {len(results)}/{len(samples)} pages read")
    return results


# --- the tables ----------------------------------------------------------------------------------------


def _best_as_grid(result: Result) -> Result:
    """The result with its ``best`` reading in the grid's place."""
    readings = {**result.readings, "grid": result.readings["best"]}
    return Result(result.sample, readings, {**result.fields, "grid": result.fields["best"]})


def _ratio(grid: float, raw: float) -> str:
    return f"{grid / raw:5.2f}" if raw else "  inf" if grid else "    -"


def _ocr_row(label: str, results: list[Result]) -> str:
    cells = []
    for measure_of in (recall_counts, cer_counts):
        pooled = {}
        for side in SIDES:
            pairs = [measure_of(r.sample.text, r.readings[side].text) for r in results]
            pooled[side] = sum(p[0] for p in pairs) / max(1, sum(p[1] for p in pairs))
        cells.append(f"{pooled['grid']:6.1%} {pooled['raw']:6.1%} {_ratio(pooled['grid'], pooled['raw'])}")
    seconds = {side: sum(r.readings[side].seconds for r in results) / len(results) for side in SIDES}
    pairs = [(r.readings["grid"].seconds, r.readings["raw"].seconds) for r in results]
    worst = max((grid / raw for grid, raw in pairs if raw), default=0.0)
    cells.append(
        f"{seconds['grid']:5.2f} {seconds['raw']:5.2f} {_ratio(seconds['grid'], seconds['raw'])} {worst:5.2f}"
    )
    return f"{label:<26} {len(results):>3} | " + " | ".join(cells)


def ocr_table(results: list[Result]) -> list[str]:
    lines = [
        f"{'page kind':<26} {'n':>3} | {'word recall':^19} | {'CER':^19} | {'seconds/page':^23}",
        f"{'':<26} {'':>3} | {'grid':>6} {'raw':>6} {'g/r':>5} | {'grid':>6} {'raw':>6} {'g/r':>5} | "
        f"{'grid':>5} {'raw':>5} {'g/r':>5} {'worst':>5}",
    ]
    for kind in KINDS:
        of_kind = [r for r in results if r.sample.kind == kind]
        if not of_kind:
            continue
        lines.append(_ocr_row(kind, of_kind))
        for doc_type in evalset.DOC_TYPES:
            subset = [r for r in of_kind if r.sample.doc_type == doc_type]
            if subset:
                lines.append(_ocr_row(f"  {doc_type}s", subset))
        if kind == "degraded_photo":
            turned = [r for r in of_kind if r.sample.rotation]
            if turned:
                lines.append(_ocr_row("  turned 90/180/270", turned))
        if kind == BEST_QUALITY_KIND and all("best" in r.readings for r in of_kind):
            lines.append(_ocr_row("  at ocr_quality=best", [_best_as_grid(r) for r in of_kind]))
    lines.append(_ocr_row("all", results))
    return lines


def _right(result: Result, side: str, name: str) -> bool:
    found = result.fields[side].get(name)
    return found is not None and same_value(name, found["value"], result.sample.fields.get(name))


def _best_fields(results: list[Result]) -> list[str]:
    """Field accuracy of the pages also read at ``ocr_quality=best``, beside the standard reading's."""
    best = [r for r in results if "best" in r.readings]
    cases = [(r, n) for r in best for n in FIELDS if n in r.sample.fields]
    if not cases:
        return []
    right = {side: sum(_right(r, side, n) for r, n in cases) / len(cases) for side in ("best", "grid", "raw")}
    return [
        f"{BEST_QUALITY_KIND} at ocr_quality=best: all fields {right['best']:.1%} "
        f"(standard {right['grid']:.1%}, raw {right['raw']:.1%})"
    ]


def _alphanumeric(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def wrongly_valid(result: Result, side: str) -> tuple[int, int]:
    """Identifiers reported ``valid=true`` with a value that is not the expected one: (misread ones
    that pass their check, other numbers printed on the page, such as the customer's VAT number)."""
    misread = elsewhere = 0
    printed = _alphanumeric(result.sample.text)
    for name in IDENTIFIERS:
        found = result.fields[side].get(name)
        if found and found.get("valid") is True and found["value"] != result.sample.fields.get(name):
            if _alphanumeric(found["value"]) in printed:
                elsewhere += 1
            else:
                misread += 1
    return misread, elsewhere


def fields_table(results: list[Result]) -> list[str]:
    kinds = [k for k in KINDS if any(r.sample.kind == k for r in results)]
    first = next(iter(kinds))
    head = f"{'field':<24} {'n':>3} {'text':>4} |" + "|".join(f"{k:^15}" for k in kinds)
    lines = [head, f"{'':<24} {'':>3} {'':>4} |" + "|".join(f"{'grid':>7} {'raw':>6} " for _ in kinds)]

    def row(label: str, names: tuple[str, ...], doc_type: str | None = None) -> str:
        per_kind = {}
        for kind in kinds:
            subset = [
                r
                for r in results
                if r.sample.kind == kind and (doc_type is None or r.sample.doc_type == doc_type)
            ]
            cases = [(r, n) for r in subset for n in names if n in r.sample.fields]
            per_kind[kind] = (cases, {s: sum(_right(r, s, n) for r, n in cases) for s in (*SIDES, "text")})
        total = len(per_kind[first][0])
        if not total:
            return ""
        text = per_kind[first][1]["text"]
        if len(names) == 1:
            cells = [f"{c[1]['grid']:>7} {c[1]['raw']:>6} " for c in per_kind.values()]
            return f"{label:<24} {total:>3} {text:>4} |" + "|".join(cells)
        cells = [
            f"{c[1]['grid'] / max(1, len(c[0])):>7.1%} {c[1]['raw'] / max(1, len(c[0])):>6.1%} "
            for c in per_kind.values()
        ]
        return f"{label:<24} {total:>3} {text / total:>4.0%} |" + "|".join(cells)

    lines += [row(name, (name,)) for name in FIELDS]
    lines += [
        row("all fields", FIELDS),
        row("  invoices", FIELDS, "invoice"),
        row("  receipts", FIELDS, "receipt"),
    ]
    for which, label in enumerate(("valid=true: misread", "valid=true: other number")):
        wrong = {
            kind: {
                side: sum(wrongly_valid(r, side)[which] for r in results if r.sample.kind == kind)
                for side in (*SIDES, "text")
            }
            for kind in kinds
        }
        lines.append(
            f"{label:<24} {'':>3} {sum(w['text'] for w in wrong.values()):>4} |"
            + "|".join(f"{w['grid']:>7} {w['raw']:>6} " for w in wrong.values())
        )
    return [line for line in lines if line]


def details(results: list[Result]) -> list[str]:
    """Per page: the grid's word recall and the fields it got wrong (raw's beside when different)."""
    out = []
    for r in results:
        wrong = {s: [n for n in r.sample.fields if not _right(r, s, n)] for s in SIDES}
        found, total = recall_counts(r.sample.text, r.readings["grid"].text)
        line = f"  {r.sample.path.name:<36} {found / max(1, total):5.0%} {r.readings['grid'].note:<16} "
        line += ", ".join(wrong["grid"]) or "-"
        if wrong["raw"] != wrong["grid"]:
            line += f"  (raw: {', '.join(wrong['raw']) or '-'})"
        out.append(line)
    return out


def _notes(results: list[Result]) -> list[str]:
    out = []
    errors = [
        (r.sample.path.name, side, r.readings[side].error)
        for r in results
        for side in SIDES
        if r.readings[side].error
    ]
    for name, side, error in errors[:5]:
        out.append(f"  read failed ({side}) {name}: {error}")
    ways = Counter(r.readings["grid"].note for r in results)
    out.append("  grid read pages by: " + ", ".join(f"{way} ×{n}" for way, n in sorted(ways.items())))
    turned = [r for r in results if r.sample.rotation]
    if turned:
        upright = sum(f"turned {r.sample.rotation}" in r.readings["grid"].note for r in turned)
        out.append(f"  pages photographed turned: {len(turned)}, stood upright by the grid: {upright}")
    return out


def run(
    workdir: Path | None = None,
    count: int = evalset.DEFAULT_COUNT,
    languages: str = "doc",
    jobs: int = 1,
    show_pages: bool = False,
) -> list[str]:
    """Generate the set, read it on both sides, return the tables' lines."""
    own = workdir is None
    folder = Path(tempfile.mkdtemp(prefix="ocr-eval-")) if own else Path(workdir) / "ocr-eval"
    os.environ["OMP_THREAD_LIMIT"] = "1"  # what the grid's engine restores after each run, too
    began = time.monotonic()
    try:
        _log(
            f"OCR evaluation: generating {count} invoices and {count} receipts × {len(KINDS)} kinds of page…"
        )
        samples = evalset.generate(folder, count)
        _log(f"  reading {len(samples)} pages with the grid's engine and with raw Tesseract…")
        results = measure(samples, languages, folder, jobs)
    finally:
        if own and not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(folder, ignore_errors=True)
    langs = ALL_LANGUAGES if languages == "all" else "the document's language"
    return [
        "",
        f"OCR evaluation ({len(samples)} pages: {count} invoices + {count} receipts, fr/nl/en, "
        f"Tesseract with {langs}, OMP_THREAD_LIMIT=1, {jobs} at a time, {time.monotonic() - began:.0f} s). "
        "Ratios grid/raw; word recall and CER pooled over pages.",
        *ocr_table(results),
        "",
        "Fields by app.invoices.fields.extract (pages right; 'text' = on the text as written)",
        *fields_table(results),
        *_best_fields(results),
        *_notes(results),
        *(details(results) if show_pages else []),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ocr_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count", type=int, default=evalset.DEFAULT_COUNT, help="invoices, and as many receipts"
    )
    parser.add_argument(
        "--languages", choices=("doc", "all"), default="doc", help=f"doc's own, or {ALL_LANGUAGES}"
    )
    parser.add_argument("--jobs", type=int, default=1, help="pages read at a time (default 1)")
    parser.add_argument("--keep", type=Path, help="write the set under DIR/ocr-eval and keep it")
    parser.add_argument("--pages", action="store_true", help="one line per page: what the grid got wrong")
    args = parser.parse_args(argv)
    for line in run(args.keep, args.count, args.languages, args.jobs, args.pages):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
