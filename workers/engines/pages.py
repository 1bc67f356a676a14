"""A scanned or photographed page made ready for Tesseract, in milliseconds and without Tesseract.

Three measurements of the page's ink, each chosen on the evaluation set (``bench/ocr_eval.py``):

- **contrast**: a photo's paper is grey and unevenly lit, a thermal receipt fades down the slip.
  The paper's brightness is estimated at a sixteenth of the size (the brightest pixels around each
  point, smoothed) and every pixel divided by it, then the levels are stretched so that ink is black
  and paper white. A page whose paper is already even and white, and whose ink is dark (a clean
  scan, a rendered PDF page), is left as it is.
- **orientation**: lines of text leave empty rows between them (about half of the rows of a page),
  while the columns under a line are almost never all empty; so the axis whose projection has more
  empty bins is the one across the lines, which tells a page on its side. Which way up: Latin
  letters and digits reach above the x-height (capitals, digits, b d f h k l t) far more often than
  below it (g j p q y), so each line's ink above its core outweighs its ink below when upright.
- **skew**: the angle at which the ink's projection across the lines is sharpest (lines aligned
  with the bins), searched coarse then fine.

A page on its side or upside down is turned (a lossless transpose) before the one reading; a page
whose way up is unclear keeps its orientation and Tesseract's OSD decides only if the reading is
poor (``workers.engines.tesseract``). Small skews (a few degrees, the usual phone photo) are left
to Tesseract, which reads them as well as straightened ones; larger ones are straightened.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

import celeryconfig as limits

#: The paper's brightness is estimated on the page reduced by this factor.
_BACKGROUND_REDUCTION = 16
#: Rows divided at a time.
_BAND_ROWS = 256
#: A page is left as it is when its paper is at least this bright everywhere (0–255)…
EVEN_PAPER_MIN = 235
#: …varies by no more than this across the page…
EVEN_PAPER_SPREAD = 30
#: …and its darkest ink (1st percentile) is at most this. Evaluation set: scans 250–255 paper,
#: ink 0–147 (small blurred print is grey: stretching it cost 7 points of words read); photos'
#: paper 167–207.
DARK_INK_MAX = 160
#: Ink: pixels darker than this once the contrast is normalised.
INK_BELOW = 128
#: Pages larger than this many pixels are measured at half size (enough for lines of print).
_MEASURE_FULL_SIZE_UNDER = 3_000_000
#: Ink points used to search the skew (a random sample of a page's ink: the angle is the same).
_SKEW_SAMPLE = 40_000
#: Skews searched (degrees), coarse step then fine step around the best coarse one.
MAX_SKEW = 15.0
_COARSE_STEP, _FINE_STEP = 1.0, 0.1
#: A page is on its side when its projection along one axis has this many times the empty bins of
#: the other (upright pages of the evaluation set: 1.7–5.8; pages on their side: 2.2–6.1).
SIDEWAYS_RATIO = 1.3
#: Ink above minus below the lines' cores, over both: beyond ±this the page's way up is taken
#: (evaluation set, upright pages: -0.15 to +0.85, the few below +0.2 all faded receipts; upside
#: down: -0.27 to -0.64); within it, the page is read as it is, and again half round if it reads
#: poorly.
UPRIGHT_MARGIN = 0.2
#: …and only when this share of the lines' ink lies outside their cores (ascenders, descenders):
#: pages of capitals and amounts have 0–2 % and lean the wrong way (balance −0.3 to −1 upright);
#: the evaluation set's pages 2–10 %, those turned upside down 3–6 %.
MIN_OUTSIDE_CORE = 0.025
#: Skews of at most this many degrees are left to Tesseract (measured: straightening 1–4° skews
#: gained nothing on the evaluation set and cost a rotation of the whole page).
DESKEW_ABOVE = 5.0
#: Lines of print shorter than this many pixels (capitals to descenders, measured once the contrast
#: is normalised: 8–11 pixels for the evaluation set's pages scanned at 72–90 dpi, 9–13 at 100 dpi)
#: are enlarged ENLARGE_BY times when the job asks for the best reading (``ocr_quality=best``:
#: up to 2.5× raw Tesseract's time). Measured page by page on that set: enlarged, lines of 8–9
#: pixels went from 27–78 % of their words read to 76–98 %, lines of 10–11 from 69–97 % to
#: 88–99 %; lines of 11.5 pixels or more gained one word in a hundred for up to twice the time.
SMALL_PRINT_BELOW = 11.5
ENLARGE_BY = 2
#: Fewer lines than this: the empty bins between lines say nothing, their number does.
_MIN_LINES = 3
#: Too little ink to measure anything.
_MIN_INK_POINTS = 500


@dataclass
class Prepared:
    image: Image.Image
    #: Degrees the page was turned clockwise to stand upright (0, 90, 180, 270).
    turn: int = 0
    #: Whether its way up was clear, and whether that measure turned it half round (its reading
    #: is then checked the other way unless confident).
    orientation_known: bool = False
    flipped: bool = False
    #: The skew measured (degrees, counter-clockwise positive) and whether it was straightened.
    skew: float = 0.0
    deskewed: bool = False
    contrast_normalised: bool = False
    #: Whether its print is small (lines under SMALL_PRINT_BELOW pixels), and the factor the page
    #: was enlarged by (1: as it came; only when asked, at ``ocr_quality=best``).
    small_print: bool = False
    enlarged: int = 1


def _percentile(image: Image.Image, share: float) -> int:
    """The grey level below which ``share`` of the page's pixels lie (from PIL's histogram)."""
    counts = np.cumsum(image.histogram()[:256])
    return int(np.searchsorted(counts, share * counts[-1]))


def normalise_contrast(image: Image.Image) -> Image.Image | None:
    """The page with its paper made white and even and its ink black, or None when it already is
    (8-bit grayscale in and out)."""
    small = image.reduce(_BACKGROUND_REDUCTION) if min(image.size) >= 128 else image.copy()
    paper = small.filter(ImageFilter.MaxFilter(5)).filter(ImageFilter.GaussianBlur(2))
    paper_levels = np.asarray(paper)
    if (
        paper_levels.min() >= EVEN_PAPER_MIN
        and int(paper_levels.max()) - int(paper_levels.min()) <= EVEN_PAPER_SPREAD
        and _percentile(image, 0.01) <= DARK_INK_MAX
    ):
        return None
    background = np.maximum(np.asarray(paper.resize(image.size, Image.Resampling.BILINEAR)), 1)
    pixels = np.asarray(image)
    ratio = np.empty_like(pixels)
    # band by band: a 40-megapixel page's 16-bit temporaries stay a few megabytes
    for top in range(0, pixels.shape[0], _BAND_ROWS):
        band = slice(top, top + _BAND_ROWS)
        ratio[band] = np.minimum(pixels[band].astype(np.uint16) * 255 // background[band], 255)
    flat = Image.fromarray(ratio, "L")
    # stretch: the ink's usual level becomes black and the paper white (a share of the darkest
    # pixels, or Otsu's split, would be paper on a sparse page, its grain stretched into specks)
    levels = _ink_and_paper(flat.histogram())
    if levels is None:
        return flat
    ink, paper = levels
    scale = 255 / (paper - ink)
    return flat.point([min(255, max(0, round((level - ink) * scale))) for level in range(256)])


#: Ink is darker than the paper by more than this many times the paper's grain (its spread).
INK_GRAIN_FACTOR = 4
#: Levels lighter than the paper's less this many grains become white.
PAPER_GRAIN_CLIP = 2
#: …and covers at least this share of the page, else there is nothing to stretch.
MIN_INK_SHARE = 0.001


def _ink_and_paper(histogram: list[int]) -> tuple[int, int] | None:
    """The paper's level (the page's median: most of a page is paper), and the ink's (the mean of
    the pixels darker than the paper by more than its grain allows), or None without ink."""
    counts = np.asarray(histogram[:256], dtype=np.float64)
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    paper = int(np.searchsorted(cumulative, total / 2))
    # the paper's grain from its darker half: the median absolute deviation below the median
    quartile = int(np.searchsorted(cumulative, total / 4))
    grain = max(1.0, 1.4826 * (paper - quartile) / 0.6745)
    below = int(paper - INK_GRAIN_FACTOR * grain)
    if below <= 0 or cumulative[below - 1] < max(1.0, MIN_INK_SHARE * total):
        return None
    ink = int(round((counts[:below] * np.arange(below)).sum() / cumulative[below - 1]))
    white = round(paper - PAPER_GRAIN_CLIP * grain)  # the paper's grain goes white with it
    if white - ink < 16:
        return None
    return ink, white


def _ink_points(image: Image.Image) -> tuple[np.ndarray, np.ndarray, int]:
    """The ink's coordinates, measured at full or half size, and that reduction."""
    reduction = 2 if image.width * image.height > _MEASURE_FULL_SIZE_UNDER else 1
    measured = image.reduce(reduction) if reduction > 1 else image
    ys, xs = np.nonzero(np.asarray(measured) < INK_BELOW)
    return xs.astype(np.float32), ys.astype(np.float32), reduction


def _projection(across: np.ndarray, along: np.ndarray, degrees: float) -> np.ndarray:
    """Ink per bin of the axis ``across`` the lines once the points are turned by ``degrees``."""
    angle = np.deg2rad(degrees)
    projected = across * np.cos(angle) - along * np.sin(angle)
    return np.bincount((projected - projected.min()).astype(np.int64))


def _sharpness(histogram: np.ndarray) -> float:
    steps = np.diff(histogram.astype(np.float64))
    return float(steps @ steps)


def _straightest(across: np.ndarray, along: np.ndarray) -> tuple[float, float]:
    """(angle, sharpness) at which the projection across the lines is sharpest."""
    if len(across) > _SKEW_SAMPLE:
        pick = np.random.default_rng(0).choice(len(across), _SKEW_SAMPLE, replace=False)
        across, along = across[pick], along[pick]

    def best(angles: np.ndarray) -> tuple[float, float]:
        scores = [_sharpness(_projection(across, along, a)) for a in angles]
        index = int(np.argmax(scores))
        return float(angles[index]), scores[index]

    coarse, _ = best(np.arange(-MAX_SKEW, MAX_SKEW + 1e-9, _COARSE_STEP))
    half = _COARSE_STEP / 2
    return best(np.arange(coarse - half, coarse + half + 1e-9, _FINE_STEP))


def _empty_share(histogram: np.ndarray) -> float:
    inked = np.nonzero(histogram)[0]
    if len(inked) < 2:
        return 0.0
    span = histogram[inked[0] : inked[-1] + 1]
    return float(np.count_nonzero(span == 0)) / len(span)


def _lines(histogram: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of inked bins of a projection across the lines."""
    inked = histogram > 0
    edges = np.flatnonzero(np.diff(np.concatenate(([0], inked.view(np.int8), [0]))))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _a_line_or_two(across: np.ndarray, along: np.ndarray) -> bool:
    """Whether the ink is fewer than ``_MIN_LINES`` thin runs across this axis: lines at least
    four times as long as they are tall (blurred small print whose lines run together is one
    thick run, not a line)."""
    runs = _lines(across)
    if not runs or len(runs) >= _MIN_LINES:
        return False
    inked = np.flatnonzero(along)
    length = inked[-1] - inked[0] + 1 if len(inked) else 0
    return max(end - start for start, end in runs) * 4 <= length


def _upright_balance(histogram: np.ndarray) -> tuple[float, float]:
    """(ink above the lines' cores − ink below) / both, and both over all the lines' ink, over
    the lines of a projection across them (bins in reading order top to bottom). Lines of
    capitals and digits have little ink outside their cores, and what there is (commas, a Q)
    hangs below: the balance says nothing of their way up, and the share says so."""
    above = below = total = 0.0
    for start, end in _lines(histogram):
        line = histogram[start:end].astype(np.float64)
        if len(line) < 5:
            continue
        core = np.flatnonzero(line >= 0.4 * line.max())
        above += line[: core[0]].sum()
        below += line[core[-1] + 1 :].sum()
        total += line.sum()
    return (above - below) / max(1.0, above + below), (above + below) / max(1.0, total)


_TRANSPOSE = {
    90: Image.Transpose.ROTATE_270,  # PIL turns counter-clockwise
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_90,
}


@dataclass
class Measures:
    #: Degrees to turn the page clockwise to stand it upright, and whether its way up is clear.
    turn: int = 0
    known: bool = False
    #: Whether the way up measured turned it half round (upside down, or on its other side).
    flipped: bool = False
    #: Degrees counter-clockwise that level its lines.
    skew: float = 0.0
    #: The median height of its lines of text, in pixels (0: no text found).
    line_height: float = 0.0


def measure(image: Image.Image) -> Measures:
    """The page's orientation, skew and size of print, from its ink."""
    xs, ys, reduction = _ink_points(image)
    if len(xs) < _MIN_INK_POINTS:
        return Measures()
    across_rows, _ = _straightest(ys, xs)
    across_columns, _ = _straightest(xs, -ys)
    rows = _projection(ys, xs, across_rows)
    columns = _projection(xs, -ys, across_columns)
    if _a_line_or_two(rows, columns):  # a banner, a card: no gaps between lines to count
        sideways = False
    elif _a_line_or_two(columns, rows):
        sideways = True
    else:
        sideways = _empty_share(columns) > SIDEWAYS_RATIO * _empty_share(rows)
    # turned 90° clockwise, a page on its side has these columns for rows, in this order
    across = columns if sideways else rows
    balance, outside = _upright_balance(across)
    known = abs(balance) > UPRIGHT_MARGIN and outside >= MIN_OUTSIDE_CORE
    flipped = known and balance < 0
    turn = (90 if sideways else 0) + (180 if flipped else 0)
    heights = [end - start for start, end in _lines(across) if end - start >= 2]
    return Measures(
        turn=turn,
        known=known,
        flipped=flipped,
        skew=round(across_columns if sideways else across_rows, 1),
        line_height=float(np.median(heights)) * reduction if heights else 0.0,
    )


def prepare(image: Image.Image, enlarge_small_print: bool = False) -> Prepared:
    """The page ready to be read: contrast normalised, straightened, turned upright, and small
    print enlarged if asked (8-bit grayscale in and out; the caller closes both)."""
    normalised = normalise_contrast(image)
    page = normalised if normalised is not None else image
    found = measure(page)
    result = Prepared(page, found.turn, found.known, found.skew, contrast_normalised=normalised is not None)
    if abs(found.skew) > DESKEW_ABOVE:
        # a page skewed this much is straightened first (turned as measured), and its way up
        # measured again once its lines are level
        turned = page.transpose(_TRANSPOSE[found.turn]) if found.turn else page
        result.image = turned.rotate(
            found.skew, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=255
        )
        if turned is not page:
            turned.close()
        result.deskewed = True
        again = measure(result.image)
        result.orientation_known, result.flipped = again.known, found.flipped != again.flipped
        if again.turn:
            with result.image as straight:
                result.image = straight.transpose(_TRANSPOSE[again.turn])
            result.turn = (found.turn + again.turn) % 360
    elif found.turn:
        result.image = page.transpose(_TRANSPOSE[found.turn])
    result.small_print = 0 < found.line_height < SMALL_PRINT_BELOW
    enlarged_pixels = result.image.width * result.image.height * ENLARGE_BY**2
    if result.small_print and enlarge_small_print and enlarged_pixels <= limits.OCR_MAX_PAGE_PIXELS:
        with result.image if result.image is not image else nullcontext(image) as small:
            result.image = small.resize(
                (small.width * ENLARGE_BY, small.height * ENLARGE_BY), Image.Resampling.BICUBIC
            )
        result.enlarged = ENLARGE_BY
    if result.image is not page and page is not image:
        page.close()
    return result
