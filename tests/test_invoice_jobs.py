"""Invoice jobs end to end: a document is read (its text layer, or Tesseract for a scan) on a
volunteer, and the coordinator reads its fields from the text the grid accepted
(app.invoices.fields, tested on its own in tests/test_invoice_fields.py)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.documents import text_image, text_pdf

INVOICE = [
    "Syndic Lemaire SRL",
    "Rue de la Loi 12, 1000 Bruxelles",
    "TVA BE 0403.170.701",
    "",
    "FACTURE N° 2025-0117",
    "Date de facture : 12/03/2025",
    "Échéance : 11/04/2025",
    "",
    "Frais de gestion      3 595,04 EUR",
    "TVA 21 %                754,96 EUR",
    "Total à payer :       4 350,00 EUR",
    "IBAN : BE71 0961 2345 6769",
    "Communication : +++123/4567/89002+++",
]
EXPECTED = {
    "invoice_number": "2025-0117",
    "issue_date": "2025-03-12",
    "due_date": "2025-04-11",
    "total": "4350.00",
    "currency": "EUR",
    "iban": "BE71096123456769",
    "structured_communication": "+++123/4567/89002+++",
    "supplier_vat": "BE0403170701",
}


def _values(fields: dict) -> dict:
    return {name: fields[name]["value"] for name in EXPECTED if name in fields}


@pytest.mark.parametrize("scanned", [False, True], ids=["born-digital", "scanned"])
def test_an_invoice_job_gives_its_fields_with_their_page_and_source(client, scanned):
    if scanned:
        job = client.submit_document("invoice", text_image(INVOICE), "facture.png", languages="fra")
    else:
        job = client.submit_document("invoice", text_pdf([INVOICE]), "facture.pdf", force_ocr="false")
    job = client.wait(job["id"])

    assert job["state"] == "succeeded", job
    fields = job["result"]["fields"]
    assert _values(fields) == EXPECTED
    assert fields["iban"]["valid"] is True and fields["structured_communication"]["valid"] is True
    assert all(fields[name]["page"] == 1 and fields[name]["source"] for name in EXPECTED)
    method = job["result"]["page_readings"][0]["method"]
    assert method == ("ocr" if scanned else "text_layer")


def test_a_wrong_check_digit_is_never_given_as_valid(client):
    tampered = [line.replace("6769", "6768").replace("89002", "89003") for line in INVOICE]
    job = client.wait(
        client.submit_document("invoice", text_pdf([tampered]), "f.pdf", force_ocr="false")["id"]
    )

    fields = job["result"]["fields"]
    for name in ("iban", "structured_communication"):
        assert name not in fields or fields[name]["valid"] is False, fields.get(name)
    assert fields["total"]["value"] == "4350.00"  # the rest is read as ever


def test_a_pipeline_can_read_the_fields_too(client):
    job = client.submit_document(
        "pipeline", text_pdf([INVOICE]), "f.pdf", force_ocr="false", invoice_fields="true", max_words="20"
    )
    job = client.wait(job["id"])

    assert job["state"] == "succeeded", job
    assert _values(job["result"]["fields"]) == EXPECTED and job["result"]["summary"]


RECEIPTS = {
    "fra": [
        "CARREFOUR MARKET IXELLES",
        "Chaussée de Wavre 120",
        "Ticket n° 4471",
        "Date : 14/03/2025 18:42",
        "Pain complet      2,35",
        "Lait demi-écrémé  1,19",
        "Pommes 1 kg       3,49",
        "TOTAL             7,03 EUR",
        "Carte bancaire    7,03",
    ],
    "nld": [
        "DELHAIZE GENT",
        "Kortrijksesteenweg 50",
        "Kassabon 9921",
        "Datum: 03-02-2025 10:15",
        "Brood             2,80",
        "Kaas              4,15",
        "TOTAAL            6,95 EUR",
        "Bancontact        6,95",
    ],
    "eng": [
        "CORNER SHOP LTD",
        "12 High Street, London",
        "Receipt no 5521",
        "Date: 21/01/2025 09:30",
        "Coffee            2.50",
        "Sandwich          4.20",
        "TOTAL             6.70 EUR",
        "Card              6.70",
    ],
}
RECEIPT_FIELDS = {
    "fra": {"total": "7.03", "issue_date": "2025-03-14"},
    "nld": {"total": "6.95", "issue_date": "2025-02-03"},
    "eng": {"total": "6.70", "issue_date": "2025-01-21"},
}


@pytest.mark.parametrize("language", list(RECEIPTS))
def test_a_scanned_receipt_in_each_language_gives_its_total_and_date(client, language):
    job = client.submit_document("invoice", text_image(RECEIPTS[language]), "ticket.png", languages=language)
    job = client.wait(job["id"])

    assert job["state"] == "succeeded", job
    fields = job["result"]["fields"]
    assert {name: fields[name]["value"] for name in ("total", "issue_date") if name in fields} == (
        RECEIPT_FIELDS[language]
    )
    assert fields["kind"]["value"] == "receipt"


def test_a_model_may_fill_fields_only_with_values_printed_in_the_text(client):
    job = client.submit_document(
        "invoice", text_pdf([INVOICE]), "f.pdf", force_ocr="false", llm_fields="true"
    )
    job = client.wait(job["id"])

    assert job["state"] == "succeeded", job
    assert [(step["name"], step["queue"]) for step in job["steps"]] == [("ocr", "ocr"), ("fields", "llm")]
    assert job["steps"][1]["node"].startswith("llm-node@") and job["result"]["fields_tokens"] > 0
    fields = job["result"]["fields"]
    assert _values(fields) == EXPECTED  # the rules' fields stand, whatever the model said
    text = job["result"]["text"]
    assert all(f["method"] in ("rules", "llm") for f in fields.values())
    for field in (f for f in fields.values() if f["method"] == "llm"):  # the tiny model is noise
        assert field["source"] in text and field["confidence"] == 0.5


@pytest.mark.parametrize("kind", ["ocr", "pipeline"])
def test_llm_fields_belongs_to_invoice_jobs(client, kind):
    response = client.post(
        f"/api/v1/jobs/{kind}", files={"file": ("f.pdf", text_pdf([INVOICE]))}, data={"llm_fields": "true"}
    )

    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_parameter"


def test_the_best_ocr_quality_reaches_the_node_and_an_unknown_one_is_refused(client):
    with Image.open(io.BytesIO(text_image(INVOICE))) as scan:
        size = (scan.width * 54 // 300, scan.height * 54 // 300)
        small = scan.convert("L").resize(size, Image.Resampling.BOX)
    out = io.BytesIO()
    small.save(out, format="PNG")  # small print, no resolution said

    job = client.wait(client.submit_document("ocr", out.getvalue(), "small.png", ocr_quality="best")["id"])
    assert job["state"] == "succeeded" and job["params"]["ocr_quality"] == "best"
    (reading,) = job["result"]["page_readings"]
    assert reading["small_print"] is True and reading["enlarged"] == 2

    response = client.post(
        "/api/v1/jobs/ocr", files={"file": ("small.png", out.getvalue())}, data={"ocr_quality": "extreme"}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_parameter"
