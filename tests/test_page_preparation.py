"""Pages made ready before Tesseract reads them (workers/engines/pages.py), and what the reading
says about it: real scans drawn by poppler, turned, skewed, faded and shrunk here, read by real
Tesseract."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps, TiffImagePlugin

from tests.documents import FRENCH_LINES, cer, text_image
from workers.engines import pages, tesseract

LINES = FRENCH_LINES[:8]
TEXT = "\n".join(LINES)
MAX_CER = 0.02


@pytest.fixture(scope="module")
def scan() -> Image.Image:
    with Image.open(io.BytesIO(text_image(LINES))) as page:
        return page.convert("L")


def _read(tmp_path, image: Image.Image, name: str = "page.png", **save) -> tuple[str, dict]:
    path = tmp_path / name
    image.save(path, **save)
    result = tesseract.ocr_file(path, "fra")
    (reading,) = result["page_readings"]
    return result["text"], reading


def _photo(
    page: Image.Image, paper: int = 190, ink: int = 120, light: int = 40, noise: float = 6
) -> Image.Image:
    """The page photographed: grey paper lit unevenly from one side, faint ink, grain."""
    darkness = 1 - np.asarray(page, dtype=np.float32) / 255
    ramp = np.linspace(-light / 2, light / 2, page.width, dtype=np.float32)[None, :]
    values = paper - (paper - ink) * darkness + ramp
    values += np.random.default_rng(7).normal(0, noise, values.shape)
    return Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L").filter(
        ImageFilter.GaussianBlur(0.8)
    )


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_a_page_turned_any_way_is_stood_upright_before_its_one_reading(tmp_path, scan, turn):
    turned = scan.rotate(turn, expand=True)  # counter-clockwise: standing it up is `turn` clockwise

    assert pages.measure(turned).turn == turn
    text, reading = _read(tmp_path, turned)

    assert reading["rotated"] == turn and reading["tesseract_runs"] == 1
    assert reading["confidence"] >= tesseract.ROTATE_BELOW_CONFIDENCE
    assert cer(TEXT, text) <= MAX_CER


def test_a_clean_scan_is_read_as_it_came(tmp_path, scan):
    assert pages.normalise_contrast(scan) is None

    text, reading = _read(tmp_path, scan)

    assert reading["contrast_normalised"] is False and reading["enlarged"] == 1
    assert reading["deskewed"] is False and reading["rotated"] == 0
    assert cer(TEXT, text) <= MAX_CER


def test_a_faint_unevenly_lit_photo_is_normalised_and_read_well(tmp_path, scan):
    photo = _photo(scan)
    with Image.open(io.BytesIO(_png(photo))) as raw_input:
        assert raw_input.getextrema()[0] > 60  # no black anywhere: the ink is faint

    text, reading = _read(tmp_path, photo, "photo.jpg", quality=80)

    assert reading["contrast_normalised"] is True
    assert cer(TEXT, text) <= MAX_CER


def test_normalised_paper_is_white_and_ink_dark(scan):
    photo = _photo(scan, light=60)

    flat = np.asarray(pages.normalise_contrast(photo))
    ink = np.asarray(scan) < 128

    assert np.median(flat[~ink]) >= 240  # the paper, left to right, whatever the light
    assert np.median(flat[:, : flat.shape[1] // 4][~ink[:, : flat.shape[1] // 4]]) >= 240
    assert np.median(flat[ink]) <= 110


@pytest.mark.parametrize("skew", [-8.0, 2.5, 12.0])
def test_the_skew_is_measured_and_a_large_one_straightened(tmp_path, scan, skew):
    skewed = scan.rotate(skew, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)

    measured = pages.measure(skewed).skew
    text, reading = _read(tmp_path, skewed)

    assert measured == pytest.approx(-skew, abs=0.3)
    assert reading["deskewed"] is (abs(skew) > pages.DESKEW_ABOVE) and reading["rotated"] == 0
    assert cer(TEXT, text) <= MAX_CER


def _small_print(scan: Image.Image) -> Image.Image:
    """The page scanned at 54 dpi: lines of about 11 pixels once the contrast is normalised."""
    small = scan.resize((scan.width * 54 // 300, scan.height * 54 // 300), Image.Resampling.BOX)
    return small.filter(ImageFilter.GaussianBlur(0.6))


def test_small_print_is_enlarged_when_the_best_reading_is_asked_for(tmp_path, scan):
    small = _small_print(scan)
    path = tmp_path / "small.png"
    small.save(path)  # without its resolution

    standard = tesseract.ocr_file(path, "fra")
    best = tesseract.ocr_file(path, "fra", quality="best")

    (as_it_came,) = standard["page_readings"]
    (enlarged,) = best["page_readings"]
    assert as_it_came["small_print"] is True and as_it_came["enlarged"] == 1
    assert enlarged["small_print"] is True and enlarged["enlarged"] == pages.ENLARGE_BY
    assert cer(TEXT, best["text"]) <= 0.05 and cer(TEXT, best["text"]) < cer(TEXT, standard["text"])


def test_print_of_a_readable_size_is_not_enlarged(scan):
    assert pages.measure(scan).line_height >= pages.SMALL_PRINT_BELOW


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (1, 1), 255),
        Image.new("L", (40, 3000), 0),
        Image.new("L", (2480, 3508), 255),
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (600, 800), dtype=np.uint8), "L"),
    ],
    ids=["one-pixel", "black-strip", "blank-a4", "noise"],
)
def test_pages_without_text_are_measured_without_error(tmp_path, image):
    prepared = pages.prepare(image)
    assert prepared.image.mode == "L" and prepared.turn in (0, 90, 180, 270)

    text, reading = _read(tmp_path, image)
    assert reading["method"] == "ocr" and reading["tesseract_runs"] <= 3


def test_a_blank_page_is_read_once(tmp_path):
    text, reading = _read(tmp_path, Image.new("L", (2480, 3508), 255))

    assert text.strip() == "" and reading["confidence"] is None and reading["tesseract_runs"] == 1


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("turn", [0, 90, 270])
def test_a_single_line_banner_is_told_from_a_page_on_its_side(turn):
    with Image.open(io.BytesIO(text_image([LINES[1]]))) as page:
        gray = page.convert("L")
    left, top, right, bottom = ImageOps.invert(gray).getbbox()
    banner = gray.crop((left - 30, top - 30, right + 30, bottom + 30)).rotate(turn, expand=True)

    assert pages.measure(banner).turn == turn


CAPITALS = ["FACTURE N 2024 017 TOTAL TTC 124,50 EUR", "12,50   3,00   45,90   1.234,56   TVA 21%   EUR"] * 4


@pytest.mark.parametrize("turn", [0, 180])
def test_lines_of_capitals_and_amounts_are_read_the_right_way_up(tmp_path, turn):
    with Image.open(io.BytesIO(text_image(CAPITALS))) as page:
        turned = page.convert("L").rotate(turn, expand=True)

    text, reading = _read(tmp_path, turned)

    assert reading["rotated"] == turn
    assert cer("\n".join(CAPITALS), text) <= MAX_CER


def test_a_near_blank_page_with_a_few_faint_pixels_is_read_without_error(tmp_path):
    page = np.full((3508, 2480), 255, dtype=np.uint8)
    page[np.random.default_rng(3).random(page.shape) < 0.01] = 251  # a duplex scan's blank back

    text, reading = _read(tmp_path, Image.fromarray(page, "L"))

    assert text.strip() == "" and reading["method"] == "ocr"


def test_a_transparent_png_is_read_on_white(tmp_path, scan):
    ink = Image.new("RGBA", scan.size, (0, 0, 0, 0))  # hidden pixels black, as editors save them
    ink.putalpha(scan.point(lambda level: 255 - level))

    text, reading = _read(tmp_path, ink, "transparent.png")

    assert cer(TEXT, text) <= MAX_CER and reading["tesseract_runs"] == 1


@pytest.mark.parametrize("resolution", [(0, 0), (1, 0), (10**12, 1)], ids=["0/0", "1/0", "huge"])
def test_a_resolution_that_is_no_number_is_ignored(tmp_path, scan, resolution):
    path = tmp_path / "odd.tiff"
    ratio = TiffImagePlugin.IFDRational(*resolution)
    scan.save(path, tiffinfo={282: ratio, 283: ratio, 296: 2})  # x and y resolution, in inches

    result = tesseract.ocr_file(path, "fra")

    assert cer(TEXT, result["text"]) <= MAX_CER
