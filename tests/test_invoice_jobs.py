"""Invoice jobs end to end: a document is read (its text layer, or Tesseract for a scan) on a
volunteer, and the coordinator reads its fields from the text the grid accepted
(app.invoices.fields, tested on its own in tests/test_invoice_fields.py)."""

from __future__ import annotations

import pytest

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
