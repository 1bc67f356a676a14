"""How far apart do two *honest* volunteers' results fall? Measured, to set verification thresholds.

``python -m bench.agreement [ocr] [llm]`` (both by default, about two minutes on 2 cores). Not a
test and not part of ``make bench``: it prints tables of distances, no timings.

Distance between two texts: both normalised (Unicode NFKC, every run of whitespace one space,
stripped), then Levenshtein distance / the longer length (``rapidfuzz``'s
``Levenshtein.normalized_distance``): 0 identical, 1 nothing in common.

OCR
    Pages: the demo sample's two pages (``samples/proces-verbal-ag.pdf``, 12 pt), generated pages
    (``tests.documents``: French 14 pt, English 9 pt) and three scan-like image-only PDFs built
    here, each with a text of its own (rendered page → rotation, blur, uneven lighting, noise,
    JPEG, embedded in a PDF). Each page is read as the volunteer does
    (``workers/engines/tesseract.py``: pdf2image/pdftoppm grayscale at the page's dpi and pixel
    size, ``pytesseract.image_to_string``, ``OMP_THREAD_LIMIT=1``): that
    is the baseline. Each variant changes what another honest machine may differ in: Tesseract's
    SIMD path (the ``DOTPRODUCT`` environment variable, read when Tesseract starts, as another
    CPU's auto-detection would choose), ``OMP_THREAD_LIMIT=2``, pdftocairo instead of pdftoppm
    (another renderer), 301 dpi (``GRID_OCR_DPI`` is a node setting); the last one changes three
    at once. ``engine`` is ``ocr_file`` itself (must be 0). ``max pairwise`` is the largest
    distance between any two honest reads of a page, baseline included: two honest nodes need not
    agree with the baseline's machine. ``(misuse)`` is shown apart (see ``VARIANTS``).
    Cheats are compared with the baseline text: what a node returning garbage or tampered text
    would score. ``pdftotext`` (a node skipping OCR, returning the text layer) is shown apart: it
    is lazy rather than wrong.
LLM
    ``workers.engines.llama.summarise`` and ``translate`` on three short texts, on the tiny
    random-weight model (``workers.tinymodel``, context 512), each variant in a fresh process
    (the engine loads its model once per process and reads ``GRID_LLM_THREADS`` then). Each call
    is made twice in a row in its process (``again``). ``n_batch`` is not exposed by the engine:
    its variant patches ``llama_cpp.Llama`` in the child, to emulate a llama-cpp-python whose
    default differs. ``logits Δ``: the largest difference of one logit after the same prompt
    (0: the arithmetic itself is bit-identical, not merely the tiny model's greedy choices).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz.distance import Levenshtein

from tests.documents import ENGLISH_LINES, FRENCH_LINES, SAMPLE_PAGES, text_image, text_pdf

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "proces-verbal-ag.pdf"
LLM_CONTEXT = 512
LLM_MAX_WORDS = 40


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def distance(a: str, b: str) -> float:
    """Levenshtein distance of the normalised texts / the longer one's length."""
    return Levenshtein.normalized_distance(normalise(a), normalise(b))


def _log(message: str) -> None:
    sys.stdout.flush()  # the tables first, when both go to one terminal
    print(message, file=sys.stderr, flush=True)


# --- OCR: pages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    name: str
    pdf: str
    number: int
    lang: str
    scan: bool = False  # an image-only page (a scan or a photo), not a born-digital one


def _scan_pdf(
    lines: list[str], path: Path, *, dpi: int, angle: float, blur: float, noise: float, seed: int
) -> None:
    """An image-only PDF that looks like a phone photo or a poor scan of the lines."""
    import io

    import numpy as np
    from PIL import Image, ImageFilter

    with Image.open(io.BytesIO(text_image(lines, dpi=dpi))) as rendered:
        image = rendered.convert("L").rotate(angle, resample=Image.BICUBIC, fillcolor=255)
    image = image.filter(ImageFilter.GaussianBlur(blur))
    pixels = np.asarray(image, dtype=np.float64)
    height, width = pixels.shape
    ys, xs = np.mgrid[0:height, 0:width]
    lighting = 0.95 - 0.35 * (xs / width) * (ys / height)  # a shadow towards one corner
    rng = np.random.default_rng(seed)
    pixels = pixels * lighting + rng.normal(0.0, noise, pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=35)  # the camera's compression
    with Image.open(buffer) as jpeg:
        jpeg.save(path, format="PDF", resolution=float(dpi))  # re-encoded as DCT in the PDF


#: Texts of the scan-like pages, each unlike every other page (a cheat returning "another page"
#: must not find the same text there).
NOTICE_LINES = [
    "Residence Les Tilleuls - notice to all residents",
    "Water will be cut on Tuesday 8 April from 9 am to 1 pm.",
    "The plumber replaces the main valve in the cellar of block A.",
    "Please do not use the lift during the works.",
    "Bicycles left in the hall will be moved to the bike shed.",
    "Questions: write to the board, board@koprogo.example",
    "Thank you for your patience. The board.",
]
DUTCH_LINES = [
    "Wooncoöperatie KoproGo - Residentie De Linden",
    "Notulen van de algemene vergadering van 12 maart 2025",
    "Aanwezig: 18 leden op 24, het quorum is bereikt.",
    "Punt 1: goedkeuring van de rekeningen van vorig jaar.",
    "Punt 2: herstelling van het dak aan de tuinkant.",
    "Factuur nr. 2025-041: bedrag zonder btw 1 234,56 €",
    "Besluit: de begroting wordt goedgekeurd met twee onthoudingen.",
    "Volgende vergadering: donderdag 15 mei in de gemeenschappelijke zaal.",
]
REMINDER_LINES = [
    "Rappel de paiement - appel de fonds du 2e trimestre",
    "Madame, Monsieur, sauf erreur de notre part, le montant de",
    "612,40 € relatif au lot 7 n'a pas encore été versé.",
    "Nous vous prions de régulariser avant le 30 juin 2025",
    "sur le compte BE71 0961 2345 6769 de la coopérative.",
    "Sans réponse, des frais de rappel de 15 € seront appliqués.",
    "Veuillez agréer nos salutations distinguées. Le syndic.",
]


def make_pages(workdir: Path) -> list[Page]:
    french, english = workdir / "french-14pt.pdf", workdir / "english-9pt.pdf"
    french.write_bytes(text_pdf([FRENCH_LINES]))
    english.write_bytes(text_pdf([ENGLISH_LINES], font_size=9))
    light, scan, photo = workdir / "light.pdf", workdir / "scan.pdf", workdir / "photo.pdf"
    _scan_pdf(DUTCH_LINES, light, dpi=300, angle=0.4, blur=0.6, noise=12.0, seed=1)
    _scan_pdf(NOTICE_LINES, scan, dpi=200, angle=0.8, blur=0.8, noise=18.0, seed=2)
    _scan_pdf(REMINDER_LINES, photo, dpi=150, angle=-1.0, blur=0.8, noise=20.0, seed=3)
    return [
        Page("sample p1 (12pt)", str(SAMPLE), 1, "fra"),
        Page("sample p2 (12pt)", str(SAMPLE), 2, "fra"),
        Page("french 14pt", str(french), 1, "fra"),
        Page("english 9pt", str(english), 1, "eng"),
        Page("scan 300dpi light noise", str(light), 1, "nld", scan=True),
        Page("scan 200dpi noisy", str(scan), 1, "eng", scan=True),
        Page("photo 150dpi noisier", str(photo), 1, "fra", scan=True),
    ]


# --- OCR: variants ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    name: str
    dotproduct: str = ""  # DOTPRODUCT: the SIMD path, chosen before the model loads
    omp: str = "1"
    cairo: bool = False
    dpi: int = 0  # 0: the dpi and pixel size the volunteer computes (documents.inspect)
    engine: bool = False  # workers.engines.tesseract.ocr_file itself
    config: str = ""  # extra tesseract arguments
    honest: bool = True  # False: shown, but not counted as honest noise


BASELINE = Variant("baseline (auto: avx2 here)")
#: Tesseract picks its SIMD path from the CPU when it starts (SIMDDetect), before the model
#: loads and its integer weights are laid out for that path; the DOTPRODUCT environment variable
#: (read at the same moment) is how another CPU is emulated. ``-c dotproduct=…`` is applied only
#: after the model has loaded (tesseract's own main calls SIMDDetect::Update() after Init), so
#: with ``sse``/``avx`` the AVX2-shaped weights are read with the SSE kernel: garbage, from a
#: misconfigured node, not from another CPU. Shown once, apart.
VARIANTS = [
    Variant("engine ocr_file", engine=True),
    *(Variant(f"DOTPRODUCT={d}", dotproduct=d) for d in ("generic", "native", "avx2", "avx", "fma", "sse")),
    Variant("OMP_THREAD_LIMIT=2", omp="2"),
    Variant("pdftocairo", cairo=True),
    Variant("301 dpi", dpi=301),
    Variant("cairo + sse + 301 dpi", dotproduct="sse", cairo=True, dpi=301),
    Variant("(misuse) -c dotproduct=sse", config="-c dotproduct=sse", honest=False),
]


def ocr(page: Page, variant: Variant) -> str:
    """One page read as the volunteer does, but for what the variant changes. Runs in a pool
    process: it sets that process's OMP_THREAD_LIMIT, which pytesseract's tesseract inherits."""
    os.environ["OMP_THREAD_LIMIT"] = variant.omp
    os.environ["GRID_OCR_THREADS"] = variant.omp
    os.environ.pop("DOTPRODUCT", None)
    if variant.dotproduct:
        os.environ["DOTPRODUCT"] = variant.dotproduct
    if variant.engine:
        from workers.engines.tesseract import PAGE_BREAK, ocr_file

        return ocr_file(page.pdf, page.lang, force_ocr=True)["text"].split(PAGE_BREAK)[page.number - 1]
    import pytesseract
    from pdf2image import convert_from_path

    from workers.protocol import documents

    info = documents.inspect(page.pdf).pages[page.number - 1]
    dpi, size = info.dpi, info.pixels
    if variant.dpi:
        dpi = variant.dpi
        size = (math.ceil(info.width / 72 * dpi), math.ceil(info.height / 72 * dpi))
    (image,) = convert_from_path(
        page.pdf,
        dpi=dpi,
        first_page=page.number,
        last_page=page.number,
        grayscale=True,
        use_cropbox=True,
        size=size,
        use_pdftocairo=variant.cairo,
        timeout=120,
    )
    with image:
        return pytesseract.image_to_string(image, lang=page.lang, config=variant.config, timeout=120)


def _pdftotext(page: Page) -> str:
    done = subprocess.run(
        ["pdftotext", "-f", str(page.number), "-l", str(page.number), "-layout", page.pdf, "-"],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode("utf-8", "replace")


# --- OCR: cheats ------------------------------------------------------------------------------

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco "
    "laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in "
    "voluptate velit esse cillum dolore eu fugiat nulla pariatur. "
)


def replace_words(text: str, share: float, seed: int) -> str:
    """``share`` of the words replaced by other words of the same text (a plausible tampering)."""
    rng = random.Random(seed)
    words = normalise(text).split(" ")
    for index in rng.sample(range(len(words)), max(1, round(share * len(words)))):
        choices = [w for w in words if w != words[index]] or ["x"]
        words[index] = rng.choice(choices)
    return " ".join(words)


def shuffle_words(text: str, share: float, seed: int) -> str:
    """``share`` of the words moved among themselves (each lands on another's place)."""
    rng = random.Random(seed)
    words = normalise(text).split(" ")
    chosen = rng.sample(range(len(words)), max(2, round(share * len(words))))
    moved = chosen[1:] + chosen[:1]  # a rotation: no chosen word stays where it was
    picked = [words[i] for i in moved]
    for index, word in zip(chosen, picked, strict=True):
        words[index] = word
    return " ".join(words)


def lorem(length: int) -> str:
    return (LOREM * (length // len(LOREM) + 1))[:length]


#: What a cheating node might return; distances are taken to the baseline (honest) text.
CHEATS = ["empty", "other page (closest)", "lorem, same length", "10% words replaced", "10% words shuffled"]
#: Shown to see where tampering drowns in honest noise; not in the margin.
SUBTLE = ["5% words replaced", "2% words replaced", "1 word replaced"]


def cheat_distances(honest: dict[str, str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for seed, (name, text) in enumerate(honest.items()):
        n_words = len(normalise(text).split(" "))
        others = [t for other, t in honest.items() if other != name]
        out[name] = {
            "empty": distance(text, ""),
            "other page (closest)": min(distance(text, t) for t in others),
            "lorem, same length": distance(text, lorem(len(normalise(text)))),
            "10% words replaced": distance(text, replace_words(text, 0.10, seed)),
            "10% words shuffled": distance(text, shuffle_words(text, 0.10, seed)),
            "5% words replaced": distance(text, replace_words(text, 0.05, seed)),
            "2% words replaced": distance(text, replace_words(text, 0.02, seed)),
            "1 word replaced": distance(text, replace_words(text, 1 / n_words, seed)),
        }
    return out


# --- OCR: the run -----------------------------------------------------------------------------


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def run_ocr(workdir: Path) -> dict:
    pages = make_pages(workdir)
    jobs = [(page, variant) for variant in [BASELINE, *VARIANTS] for page in pages]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        texts = list(pool.map(ocr, *zip(*jobs, strict=True)))
    _log(f"ocr: {len(jobs)} page reads in {time.perf_counter() - started:.0f} s")
    read = {(page.name, variant.name): text for (page, variant), text in zip(jobs, texts, strict=True)}
    honest = {page.name: read[page.name, BASELINE.name] for page in pages}

    col = 11
    heads = [_short(p.name, col) for p in pages]

    def line(name: str, row: list[float], extra: str = "") -> str:
        return (
            f"{name:<31}{statistics.fmean(row):>8.4f}{min(row):>8.4f}{max(row):>8.4f}{extra:>7}  "
            + " ".join(f"{d:>{col}.4f}" for d in row)
        )

    print("\n## OCR: honest variants vs baseline (normalised Levenshtein distance)\n")
    print("baseline characters: " + ", ".join(f"{p.name} {len(normalise(honest[p.name]))}" for p in pages))
    print("bytes=: pages whose raw text (stripped) is byte-identical to the baseline's\n")
    print(
        f"{'variant':<31}{'mean':>8}{'min':>8}{'max':>8}{'bytes=':>7}  "
        + " ".join(f"{h:>{col}}" for h in heads)
    )
    honest_rows: dict[str, list[float]] = {}
    for variant in VARIANTS:
        row = [distance(honest[p.name], read[p.name, variant.name]) for p in pages]
        same = sum(honest[p.name].strip() == read[p.name, variant.name].strip() for p in pages)
        if variant.honest:
            honest_rows[variant.name] = row
        print(line(variant.name, row, f"{same}/{len(pages)}"))
    honest_max = [max(row[i] for row in honest_rows.values()) for i in range(len(pages))]
    print(line("max vs baseline", honest_max))
    names = [BASELINE.name, *honest_rows]
    pairwise = [
        max(distance(read[p.name, a], read[p.name, b]) for a in names for b in names if a < b) for p in pages
    ]
    print(line("max pairwise (any two honest)", pairwise))

    cheats = cheat_distances(honest)
    print("\n## OCR: cheats vs the honest baseline text\n")
    print(
        f"{'returned text':<31}{'mean':>8}{'min':>8}{'max':>8}{'':>7}  "
        + " ".join(f"{h:>{col}}" for h in heads)
    )
    for cheat in [*CHEATS, *SUBTLE]:
        print(line(cheat, [cheats[p.name][cheat] for p in pages]))
    print(line("(lazy) pdftotext, no OCR", [distance(honest[p.name], _pdftotext(p)) for p in pages]))
    cheat_min = [min(cheats[p.name][c] for c in CHEATS) for p in pages]
    print(line("min over cheats", cheat_min))
    print(line("margin = min cheat - pairwise", [c - h for c, h in zip(cheat_min, pairwise, strict=True)]))

    print()
    for label, chosen in (
        ("born-digital pages", [not p.scan for p in pages]),
        ("scan-like pages", [p.scan for p in pages]),
        ("all pages", [True] * len(pages)),
    ):
        worst = max((d, p.name) for d, p, keep in zip(pairwise, pages, chosen, strict=True) if keep)
        best = min(
            (cheats[p.name][c], c, p.name)
            for c in CHEATS
            for p, keep in zip(pages, chosen, strict=True)
            if keep
        )
        print(
            f"{label}: max honest (pairwise) {worst[0]:.4f} ({worst[1]}); "
            f"min cheat {best[0]:.4f} ({best[1]}, {best[2]}); margin {best[0] - worst[0]:+.4f}"
        )
    return {"honest_max": pairwise, "cheat_min": cheat_min}


# --- LLM --------------------------------------------------------------------------------------

#: (name, engine call, text, language): three short texts, each summarised and translated.
LLM_JOBS = [
    ("fr summarise", "summarise", "\n".join(FRENCH_LINES[:5]), "fr"),
    ("fr→en translate", "translate", "\n".join(FRENCH_LINES[:5]), "en"),
    ("en summarise", "summarise", "\n".join(ENGLISH_LINES[:5]), "en"),
    ("en→nl translate", "translate", "\n".join(ENGLISH_LINES[:5]), "nl"),
    ("sample summarise", "summarise", "\n".join(SAMPLE_PAGES[1][:7]), "fr"),
    ("sample fr→nl translate", "translate", "\n".join(SAMPLE_PAGES[1][:7]), "nl"),
]


@dataclass(frozen=True)
class LlmVariant:
    name: str
    threads: int = 1
    n_batch: int = 0  # 0: llama-cpp-python's default, as the engine uses it
    reverse: bool = False  # the same jobs in the opposite order (another job history)


LLM_BASELINE = LlmVariant("1 thread")
LLM_VARIANTS = [
    LlmVariant("1 thread, fresh process"),
    LlmVariant("2 threads", threads=2),
    LlmVariant("1 thread, jobs reversed", reverse=True),
    LlmVariant("1 thread, n_batch 8 (patched)", n_batch=8),
    LlmVariant("2 threads, n_batch 8 (patched)", threads=2, n_batch=8),
]


def llm_child() -> int:
    """In a fresh process: every job twice in a row, as JSON on stdout."""
    import numpy as np

    n_batch = int(os.environ.get("BENCH_LLM_N_BATCH", "0"))
    if n_batch:
        import functools

        import llama_cpp

        llama_cpp.Llama = functools.partial(llama_cpp.Llama, n_batch=n_batch, n_ubatch=n_batch)
    from workers.engines import llama

    jobs = LLM_JOBS[::-1] if os.environ.get("BENCH_LLM_REVERSE") else LLM_JOBS
    out = {}
    for name, call, text, language in jobs:
        runs = []
        for _ in range(2):
            if call == "summarise":
                runs.append(llama.summarise(text, language, LLM_MAX_WORDS)["summary"])
            else:
                runs.append(llama.translate(text, language)["translation"])
        out[name] = runs
    model = llama.get_model()
    out["_threads"] = model.context_params.n_threads
    out["_n_batch"] = model.n_batch
    # The raw logits after a fixed prompt: equal bits mean the arithmetic itself did not change,
    # not merely that the tiny model's greedy choices were too far apart to flip.
    model.reset()
    tokens = model.tokenize(LLM_JOBS[0][2].encode("utf-8"))
    model.eval(tokens)
    last = np.ctypeslib.as_array(model._ctx.get_logits(), shape=(model.n_vocab(),))  # the last token's
    out["_logits"] = last.tolist()
    json.dump(out, sys.stdout)
    return 0


def _llm_process(model: Path, variant: LlmVariant) -> dict:
    env = {
        **os.environ,
        "GRID_LLM_MODEL": str(model),
        "GRID_LLM_CONTEXT": str(LLM_CONTEXT),
        "GRID_LLM_THREADS": str(variant.threads),
        "BENCH_LLM_N_BATCH": str(variant.n_batch),
        "BENCH_LLM_REVERSE": "1" if variant.reverse else "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench.agreement", "--llm-child"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"LLM child {variant.name} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout)
    if result.pop("_threads") != variant.threads:
        raise RuntimeError(f"{variant.name}: the model did not run with {variant.threads} threads")
    n_batch = result.pop("_n_batch")
    if variant.n_batch and n_batch != variant.n_batch:
        raise RuntimeError(f"{variant.name}: n_batch {n_batch}, not {variant.n_batch}")
    return result


def run_llm(workdir: Path) -> dict:
    from workers.tinymodel import build_tiny_model

    model = build_tiny_model(workdir / "tiny.gguf", context_length=LLM_CONTEXT)
    started = time.perf_counter()
    results = {v.name: _llm_process(model, v) for v in [LLM_BASELINE, *LLM_VARIANTS]}
    _log(f"llm: {1 + len(LLM_VARIANTS)} processes in {time.perf_counter() - started:.0f} s")
    base = results[LLM_BASELINE.name]
    names = [job[0] for job in LLM_JOBS]
    col = 11
    print("\n## LLM (tiny model, temperature 0): first call of each variant vs the 1-thread baseline\n")
    print("baseline output characters: " + ", ".join(f"{n} {len(base[n][0])}" for n in names))
    print(
        f"\n{'variant':<33}{'identical':>10}{'max dist':>9}{'logits Δ':>10}  "
        + " ".join(f"{_short(n, col):>{col}}" for n in names)
    )
    all_identical = True
    for variant in LLM_VARIANTS:
        got = results[variant.name]
        same = [got[n][0].encode() == base[n][0].encode() for n in names]
        all_identical &= all(same)
        dists = [distance(base[n][0], got[n][0]) for n in names]
        # Largest difference of one logit after the same prompt (0: bit-identical arithmetic).
        logits = max(abs(a - b) for a, b in zip(base["_logits"], got["_logits"], strict=True))
        all_identical &= logits == 0
        print(
            f"{variant.name:<33}{f'{sum(same)}/{len(names)}':>10}{max(dists):>9.4f}{logits:>10.2g}  "
            + " ".join(f"{'=' if s else f'{d:.4f}':>{col}}" for s, d in zip(same, dists, strict=True))
        )
    print(f"\n{'same call twice in one process':<33}{'identical':>10}{'max dist':>9}")
    for variant in [LLM_BASELINE, *LLM_VARIANTS]:
        got = results[variant.name]
        same = [got[n][0].encode() == got[n][1].encode() for n in names]
        all_identical &= all(same)
        dists = [distance(got[n][0], got[n][1]) for n in names]
        print(f"{variant.name:<33}{f'{sum(same)}/{len(names)}':>10}{max(dists):>9.4f}")
    print(f"\nLLM outputs byte-identical everywhere: {'yes' if all_identical else 'NO'}")
    return {"identical": all_identical}


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv == ["--llm-child"]:
        return llm_child()
    parts = set(argv) or {"ocr", "llm"}
    if parts - {"ocr", "llm"}:
        print("usage: python -m bench.agreement [ocr] [llm]", file=sys.stderr)
        return 2
    import importlib.metadata

    import pytesseract

    print(
        f"# Agreement between honest re-runs\n\ntesseract {pytesseract.get_tesseract_version()}, "
        f"llama-cpp-python {importlib.metadata.version('llama_cpp_python')}, "
        f"rapidfuzz {importlib.metadata.version('rapidfuzz')}, {os.cpu_count()} CPUs"
    )
    workdir = Path(tempfile.mkdtemp(prefix="grid-agreement-"))
    try:
        if "ocr" in parts:
            run_ocr(workdir)
        if "llm" in parts:
            run_llm(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
