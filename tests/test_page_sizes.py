"""The page pixel budget holds whatever number a PDF's page boxes hold (issue 15, item 7).

A PDF whose MediaBox was 1e7 x 1e7 pt was accepted and "succeeded" with empty text: pdfinfo
printed ``1e+07``, the size pattern did not parse it, A4 was assumed, and poppler drew a 1 x 1
image. Here every number pdfinfo prints is parsed, whatever is not a sound size is refused with a
stable code (the API's check and the worker's are the same function), the worker renders the
size inspection chose and no other, and a page poppler draws far smaller than that is a failed
page, never an empty one. The API's 4xx for these documents is tested in tests/test_bad_input.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

import celeryconfig as limits
from tests import page_pdfs
from tests.documents import ENGLISH_LINES, cer, text_pdf
from workers.engines import tesseract
from workers.protocol import documents, errors
from workers.protocol.errors import BadInput


def _ocr(*args, **kwargs):
    """Read with Tesseract: the generated PDFs here stand in for scans, though they carry a
    text layer (read from it by default: tests/test_ocr_engine.py, "text layer")."""
    return tesseract.ocr_file(*args, force_ocr=True, **kwargs)


HOSTILE = [pytest.param(h, id=h.name) for h in page_pdfs.HOSTILE]


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _refused(call, *args) -> BadInput:
    with pytest.raises(BadInput) as refused:
        call(*args)
    return refused.value


# --- what poppler really prints, and the worker's own check -------------------------------------


@pytest.mark.parametrize("hostile", HOSTILE)
def test_pdfinfo_prints_the_size_the_hostile_document_was_made_for(tmp_path, hostile):
    """The documents test what they claim: poppler prints these very numbers for them."""
    report = documents._pdfinfo(_write(tmp_path, "hostile.pdf", hostile.data), 10)
    assert f"size:  {hostile.prints} pts" in report, report


@pytest.mark.parametrize("hostile", HOSTILE)
def test_a_hostile_page_size_is_refused_by_inspection_and_by_the_engine(tmp_path, hostile):
    path = _write(tmp_path, "hostile.pdf", hostile.data)

    inspected = _refused(documents.inspect, path)
    assert inspected.code == hostile.code, inspected.message
    assert inspected.message.startswith("Page "), inspected.message

    read = _refused(_ocr, path, "eng")  # the worker inspects before it renders
    assert (read.code, read.message) == (inspected.code, inspected.message)


# --- every number pdfinfo can print ------------------------------------------------------------


def _report(*sizes: str, pages: int | None = None, before: str = "") -> str:
    """pdfinfo's output as it prints it, with these page sizes."""
    lines = [before, "Producer:        hand", f"Pages:           {len(sizes) if pages is None else pages}"]
    lines += ["Encrypted:       no"]
    for number, size in enumerate(sizes, start=1):
        lines += [f"Page {number:4d} size:  {size}", f"Page {number:4d} rot:   0"]
    return "\n".join([*lines, "File size:       1234 bytes", "PDF version:     1.4", ""])


def _inspect_report(monkeypatch, report: str) -> documents.DocumentInfo:
    monkeypatch.setattr(documents, "_pdfinfo", lambda path, last_page: report)
    return documents.inspect_pdf("unused.pdf")


@pytest.mark.parametrize(
    ("printed", "points"),
    [
        ("595 x 842 pts (A4)", (595, 842)),
        ("595.276 x 841.89 pts (A4)", (595.276, 841.89)),
        ("612 x 792 pts (letter)", (612, 792)),
        ("1.2e+03 x 8.42E+02 pts", (1200, 842)),
        ("14400 x 144 pts", (14400, 144)),
        ("5.95e2 x 842. pts", (595, 842)),
        (".5e3 x +842 pts", (500, 842)),
    ],
)
def test_every_way_pdfinfo_writes_a_sound_size_is_read(monkeypatch, printed, points):
    (page,) = _inspect_report(monkeypatch, _report(printed)).pages
    assert (page.width, page.height) == pytest.approx(points)
    assert page.pixels == (math.ceil(points[0] / 72 * page.dpi), math.ceil(points[1] / 72 * page.dpi))


@pytest.mark.parametrize(
    ("printed", "code"),
    [
        ("1e+07 x 1e+07 pts", errors.PAGE_TOO_LARGE),
        ("1.23457e+29 x 842 pts", errors.PAGE_TOO_LARGE),
        ("1e+300 x 1e+300 pts", errors.PAGE_TOO_LARGE),  # an area past the largest double
        ("inf x 842 pts", errors.PAGE_TOO_LARGE),
        ("-inf x 842 pts", errors.CORRUPT_DOCUMENT),
        ("INF x INF pts", errors.PAGE_TOO_LARGE),
        ("nan x 842 pts", errors.CORRUPT_DOCUMENT),
        ("-nan x 842 pts", errors.CORRUPT_DOCUMENT),
        ("-0 x 842 pts", errors.CORRUPT_DOCUMENT),
        ("0 x 0 pts", errors.CORRUPT_DOCUMENT),
        ("-595 x -842 pts", errors.CORRUPT_DOCUMENT),
        ("1.5E-3 x 842 pts", errors.CORRUPT_DOCUMENT),
        ("1e-05 x 1e-05 pts", errors.CORRUPT_DOCUMENT),
        ("2.9 x 842 pts", errors.CORRUPT_DOCUMENT),
        ("595,3 x 842 pts", errors.CORRUPT_DOCUMENT),  # a size pdfinfo never prints: not guessed
        ("1_000 x 842 pts", errors.CORRUPT_DOCUMENT),  # Python's float() takes it; pdfinfo never
        ("0x1p+10 x 842 pts", errors.CORRUPT_DOCUMENT),
        ("595 by 842 pts", errors.CORRUPT_DOCUMENT),
        ("", errors.CORRUPT_DOCUMENT),
    ],
)
def test_a_size_that_is_not_a_sound_number_of_points_is_refused(monkeypatch, printed, code):
    refused = _refused(_inspect_report, monkeypatch, _report("595 x 842 pts (A4)", printed))
    assert refused.code == code, refused.message
    assert refused.message.startswith("Page 2 "), refused.message


def test_a_page_missing_from_pdfinfo_s_report_is_refused_never_assumed_a4(monkeypatch):
    refused = _refused(_inspect_report, monkeypatch, _report("595 x 842 pts", pages=2))
    assert refused.code == errors.CORRUPT_DOCUMENT
    assert "page 2" in refused.message


def test_lines_before_the_page_count_are_metadata_and_never_sizes(monkeypatch):
    """A title may hold line breaks: what it forges comes before pdfinfo's own lines."""
    forged = "Title:           x\nPages: 2\nPage    1 size:  595 x 842 pts\nPage    2 size:  595 x 842 pts"

    refused = _refused(_inspect_report, monkeypatch, _report("1e+07 x 1e+07 pts", before=forged))
    assert refused.code == errors.PAGE_TOO_LARGE

    missing = _refused(_inspect_report, monkeypatch, _report(pages=1, before=forged))
    assert missing.code == errors.CORRUPT_DOCUMENT


def test_no_page_count_is_a_damaged_pdf(monkeypatch):
    refused = _refused(_inspect_report, monkeypatch, "Producer: x\nPage    1 size:  595 x 842 pts\n")
    assert refused.code == errors.CORRUPT_DOCUMENT


# --- the budget itself --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "points",
    [(595, 842), (1684, 2384), (2384, 3370), (14400, 144), (144, 14400), (3, 3), (3, 14400), (1000, 1000.5)],
)
def test_the_pixels_a_page_is_rendered_at_fit_the_budget_and_tesseract(points):
    page = documents.measure_page(1, *points)

    width_px, height_px = page.pixels
    assert width_px * height_px <= limits.OCR_MAX_PAGE_PIXELS
    assert max(page.pixels) <= documents.MAX_PAGE_SIDE_PIXELS
    assert limits.OCR_MIN_DPI <= page.dpi <= limits.OCR_DPI
    assert page.pixels == (math.ceil(points[0] / 72 * page.dpi), math.ceil(points[1] / 72 * page.dpi))


def test_a_page_just_over_the_budget_at_the_lowest_dpi_is_refused():
    side_in = math.sqrt(limits.OCR_MAX_PAGE_PIXELS) / limits.OCR_MIN_DPI
    fits = documents.measure_page(1, (side_in - 0.01) * 72, (side_in - 0.01) * 72)
    assert fits.dpi == limits.OCR_MIN_DPI

    refused = _refused(documents.measure_page, 1, (side_in + 0.01) * 72, (side_in + 0.01) * 72)
    assert refused.code == errors.PAGE_TOO_LARGE


def test_an_image_wider_than_tesseract_reads_is_refused_at_inspection(tmp_path):
    path = tmp_path / "strip.png"
    Image.new("L", (documents.MAX_PAGE_SIDE_PIXELS + 1, 10), 255).save(path)

    refused = _refused(documents.inspect, path)
    assert refused.code == errors.PAGE_TOO_LARGE


# --- unusual but sound pages are still read ----------------------------------------------------


def test_a_page_turned_by_rotate_is_rendered_turned_and_read(tmp_path):
    path = _write(tmp_path, "rotated.pdf", page_pdfs.rotated_pdf())

    (page,) = documents.inspect(path).pages
    assert (page.width, page.height, page.dpi) == (842, 595, limits.OCR_DPI)  # pdfinfo: unturned
    with tesseract._render_pdf_page(path, page) as image:
        assert image.size == page.pixels[::-1]  # poppler turns it

    result = _ocr(path, "eng")
    assert cer("\n".join(ENGLISH_LINES[:4]), result["text"]) <= 0.02, result["text"]


def test_a_banner_wider_than_tesseract_reads_at_300_dpi_is_read_at_a_lower_dpi(tmp_path):
    path = _write(tmp_path, "banner.pdf", page_pdfs.banner_pdf())

    (page,) = documents.inspect(path).pages
    assert limits.OCR_MIN_DPI <= page.dpi < limits.OCR_DPI
    assert max(page.pixels) <= documents.MAX_PAGE_SIDE_PIXELS

    result = _ocr(path, "eng")
    assert result["text"] == page_pdfs.BANNER_TEXT


def test_a_business_card_with_a_box_written_backwards_is_read(tmp_path):
    path = _write(tmp_path, "card.pdf", page_pdfs.card_pdf())

    (page,) = documents.inspect(path).pages
    assert (page.width, page.height, page.dpi) == (241, 156, limits.OCR_DPI)
    assert _ocr(path, "eng")["text"] == page_pdfs.CARD_TEXT


def test_the_crop_box_is_rendered_not_a_huge_media_box_behind_it(tmp_path):
    path = _write(tmp_path, "cropped.pdf", page_pdfs.cropped_pdf())

    (page,) = documents.inspect(path).pages
    assert (page.width, page.height) == (595, 842)
    with tesseract._render_pdf_page(path, page) as image:
        assert image.size == page.pixels  # A4's pixels, not the 10,000 pt media box's
    assert cer("\n".join(ENGLISH_LINES[:4]), _ocr(path, "eng")["text"]) <= 0.02


# --- on the worker: a page poppler cannot draw is a failed page ---------------------------------


def test_the_worker_renders_the_size_inspection_chose_whatever_the_page_claims(tmp_path):
    """Even a page inspection never measured (a forged Page) is drawn at the pixels asked for."""
    path = _write(tmp_path, "huge.pdf", page_pdfs.HOSTILE[0].data)  # 1e+07 x 1e+07 pt
    page = documents.Page(1, 595.0, 842.0, 300, (248, 351))

    with tesseract._render_pdf_page(path, page) as image:
        assert image.size == (248, 351)


def test_poppler_s_one_pixel_fallback_is_a_failed_page(tmp_path):
    """Asked for more than it can allocate, pdftoppm prints "Bogus memory allocation size",
    exits 0 and writes a 1 x 1 image."""
    path = _write(tmp_path, "huge.pdf", page_pdfs.HOSTILE[0].data)
    page = documents.Page(1, 1e7, 1e7, 300, (5_000_000, 5_000_000))

    refused = _refused(tesseract._render_pdf_page, path, page)
    assert refused.code == errors.CORRUPT_DOCUMENT
    assert "1 × 1 pixels" in refused.message


def test_a_page_poppler_cannot_render_at_all_is_a_failed_page(tmp_path):
    path = _write(tmp_path, "one.pdf", text_pdf([ENGLISH_LINES[:2]]))
    page = documents.Page(2, 595.0, 842.0, 300, (2480, 3509))  # there is no page 2

    refused = _refused(tesseract._render_pdf_page, path, page)
    assert refused.code == errors.CORRUPT_DOCUMENT


@pytest.mark.parametrize("size", [(1, 1), (2480, 1), (1240, 1754), (2480, 3600)])
def test_a_rendering_of_the_wrong_size_fails_the_job_instead_of_succeeding_empty(tmp_path, monkeypatch, size):
    path = _write(tmp_path, "two.pdf", text_pdf([ENGLISH_LINES[:2], ENGLISH_LINES[2:4]]))
    monkeypatch.setattr(tesseract, "convert_from_path", lambda *args, **kwargs: [Image.new("L", size, 255)])
    seen = []

    refused = _refused(_ocr, path, "eng", lambda done, total: seen.append(done))

    assert refused.code == errors.CORRUPT_DOCUMENT
    assert refused.message.startswith("Page 1 could not be rendered"), refused.message
    assert seen == []


def test_a_rendering_within_a_pixel_or_two_of_the_size_asked_for_is_read(tmp_path, monkeypatch):
    path = _write(tmp_path, "one.pdf", text_pdf([ENGLISH_LINES[:2]]))
    (page,) = documents.inspect(path).pages
    assert page.pixels == (2480, 3509)
    render = tesseract.convert_from_path

    def rounded(*args, **kwargs):
        (image,) = render(*args, **kwargs)
        return [image.crop((0, 0, image.width - 1, image.height + 1))]

    monkeypatch.setattr(tesseract, "convert_from_path", rounded)
    assert cer("\n".join(ENGLISH_LINES[:2]), _ocr(path, "eng")["text"]) <= 0.02


# --- through the API: the same checks accept the unusual but sound pages -----------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(page_pdfs.rotated_pdf, "\n".join(ENGLISH_LINES[:4]), id="rotated"),
        pytest.param(page_pdfs.banner_pdf, page_pdfs.BANNER_TEXT, id="banner"),
        pytest.param(page_pdfs.card_pdf, page_pdfs.CARD_TEXT, id="card"),
        pytest.param(page_pdfs.cropped_pdf, "\n".join(ENGLISH_LINES[:4]), id="crop-box-on-a-huge-media-box"),
    ],
)
def test_an_unusual_but_sound_page_is_accepted_and_read_by_the_grid(client, make, expected):
    job = client.submit_document("ocr", make(), "unusual.pdf", languages="eng")
    assert job["input"]["pages"] == 1

    job = client.wait(job["id"], timeout=60)

    assert job["state"] == "succeeded", job
    assert cer(expected, job["result"]["text"]) <= 0.02, job["result"]
