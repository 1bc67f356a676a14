"""Invoice and receipt fields read by rules (``app.invoices.fields``): six realistic documents in
French, Dutch and English, what must not be reported, OCR noise, and hypothesis properties of the
identifiers, dates and amounts. No services are used: the module is plain Python."""

from __future__ import annotations

import json
import unicodedata
from datetime import date
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from stdnum import iban as stdnum_iban
from stdnum.be import ogm_vcs
from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat

from app.invoices.fields import extract

# --- six documents ------------------------------------------------------------------------------

SYNDIC_FR = """\
Immo Gestion Syndic SRL
Avenue Louise 250, boîte 12
1050 Bruxelles
TVA BE 0123.456.749 - RPM Bruxelles
Agréation IPI 501.234

                                           Client :
                                           ACP Résidence Les Tilleuls
                                           Rue des Tilleuls 12
                                           1180 Uccle
                                           BCE 0850.123.440

FACTURE

Facture n° : 2025/0142
Date de facture : 12 mars 2025
Date d'échéance : 11/04/2025

Description                                         Montant HTVA
Honoraires de gestion - 1er trimestre 2025              3 000,00
Frais administratifs (envois, copies)                     595,04

Total HTVA                                              3 595,04
TVA 21 % sur 3 595,04                                     754,96
Total TVAC                                              4 350,00 €

Montant à payer : 4 350,00 EUR
À verser sur le compte IBAN BE71 0961 2345 6769 - BIC GKCCBEBB
avec la communication structurée +++090/9337/55493+++
"""

#: A text-layer PDF: the number and dates sit under their labels, in columns.
ENERGY_NL = """\
Energie Vlaanderen nv
Koningsstraat 100
1000 Brussel
BTW BE 0765.432.146

Klant: VME Residentie De Linde                  Klantnummer: 4005 1234
Leveringsadres: Lindelaan 5, 2000 Antwerpen     EAN 541448800000123456

FACTUUR

Factuurnummer        Factuurdatum        Vervaldatum
F25-0031288          3 maart 2025        17 mrt 2025

Verbruiksperiode: 01/02/2025 - 28/02/2025

Omschrijving                                 Bedrag excl. btw
Elektriciteit  320 kWh x 0,2850 EUR/kWh               91,20
Vaste vergoeding                                       8,50
Distributienettarieven                                45,30
Heffingen                                              5,00
Totaal excl. btw                                     150,00
BTW 6% over 150,00                                     9,00
Totaal incl. btw                                     159,00

Te betalen: € 159,00
Gelieve dit bedrag vóór 17/03/2025 over te schrijven op rekening
BE62 5100 0754 7061 met gestructureerde mededeling +++123/4567/89002+++.
"""

SERVICE_EN = """\
Northwind IT Services BV
Rue de la Science 14, 1040 Brussels, Belgium
VAT: BE0456.789.034

INVOICE

Invoice No: INV-2025-0457
Invoice Date: March 12, 2025
Due Date: 11 April 2025

Bill To:
Maple Court Housing Co-operative
Chaussée de Wavre 100
1050 Ixelles
VAT: BE0850.123.440

Description                          Qty      Unit Price          Amount
Network maintenance (Q1)               1       € 1,200.00      € 1,200.00
On-site support, 14 Feb                4         € 75.00         € 300.00

Subtotal                                                       € 1,500.00
VAT 21% on € 1,500.00                                            € 315.00
Total                                                          € 1,815.00

Amount due: € 1,815.00
Please pay by bank transfer to IBAN BE21 0012 3456 7803 by the due date.
"""

SUPERMARKET_FR = """\
SUPERMARCHE DU PARC
Chaussée de Waterloo 123
1180 Uccle
TVA BE 0850.123.440
Tél. 02 345 67 89

Ticket n° 0042-003-1234
12/03/2025  14:32  Caisse 03

PAIN GRIS                  2,35
LAIT DEMI-ECREME 1L        1,09
POMMES JONAGOLD 1KG        2,49
CAFE MOULU 500G            6,99
LESSIVE 2L                12,49
SOUS-TOTAL                25,41
REMISE FIDELITE           -1,20
TOTAL                     24,21 EUR
CB BANCONTACT             24,21
RENDU                      0,00

Taux   HTVA    TVA    TVAC
A 6%   11,25   0,68   11,93
B 21%  10,15   2,13   12,28

Merci de votre visite
"""

KASSABON_NL = """\
Buurtwinkel De Linde bv
Markt 12, 9000 Gent
BTW BE 0123.456.749

KASSABON
Bon nr. 58213        Kassa 2
12-03-2025 10:15

Volkorenbrood          3,20
Croissant 4 st         4,80
Koffie 250g            5,99
Totaal                13,99
Bancontact            13,99

BTW 6%  Basis 13,20  BTW 0,79
Bedankt voor uw bezoek!
"""

#: Two totals: a voucher taken off after the first. On a receipt the last one is paid.
TILL_EN = """\
CORNER STORE
12 High Street
Canterbury CT1 2AB
VAT Reg No: GB 980 7806 84

Receipt #: 000123
Till 2   Op: Sam
12/03/2025 09:41

Milk 2L                1.45
Bread                  1.20
Coffee beans           6.99
Newspaper              1.80
TOTAL                £11.44
Voucher              -1.00
TOTAL                £10.44
CARD                 £10.44
CHANGE DUE            0.00

VAT 20%  on 7.50       1.50
Thank you for shopping with us
"""

EXPECTED = {
    "syndic_fr": (
        SYNDIC_FR,
        {
            "supplier_name": "Immo Gestion Syndic SRL",
            "supplier_vat": "BE0123456749",
            "invoice_number": "2025/0142",
            "issue_date": "2025-03-12",
            "due_date": "2025-04-11",
            "total": "4350.00",
            "currency": "EUR",
            "vat": [{"rate": "21", "base": "3595.04", "amount": "754.96"}],
            "iban": "BE71096123456769",
            "structured_communication": "+++090/9337/55493+++",
            "kind": "invoice",
            "language": "fr",
        },
    ),
    "energy_nl": (
        ENERGY_NL,
        {
            "supplier_name": "Energie Vlaanderen nv",
            "supplier_vat": "BE0765432146",
            "invoice_number": "F25-0031288",
            "issue_date": "2025-03-03",
            "due_date": "2025-03-17",
            "total": "159.00",
            "currency": "EUR",
            "vat": [{"rate": "6", "base": "150.00", "amount": "9.00"}],
            "iban": "BE62510007547061",
            "structured_communication": "+++123/4567/89002+++",
            "kind": "invoice",
            "language": "nl",
        },
    ),
    "service_en": (
        SERVICE_EN,
        {
            "supplier_name": "Northwind IT Services BV",
            "supplier_vat": "BE0456789034",
            "invoice_number": "INV-2025-0457",
            "issue_date": "2025-03-12",
            "due_date": "2025-04-11",
            "total": "1815.00",
            "currency": "EUR",
            "vat": [{"rate": "21", "base": "1500.00", "amount": "315.00"}],
            "iban": "BE21001234567803",
            "kind": "invoice",
            "language": "en",
        },
    ),
    "supermarket_fr": (
        SUPERMARKET_FR,
        {
            "supplier_name": "SUPERMARCHE DU PARC",
            "supplier_vat": "BE0850123440",
            "invoice_number": "0042-003-1234",
            "issue_date": "2025-03-12",
            "total": "24.21",
            "currency": "EUR",
            "vat": [
                {"rate": "6", "base": "11.25", "amount": "0.68"},
                {"rate": "21", "base": "10.15", "amount": "2.13"},
            ],
            "kind": "receipt",
            "language": "fr",
        },
    ),
    "kassabon_nl": (
        KASSABON_NL,
        {
            "supplier_name": "Buurtwinkel De Linde bv",
            "supplier_vat": "BE0123456749",
            "invoice_number": "58213",
            "issue_date": "2025-03-12",
            "total": "13.99",
            "vat": [{"rate": "6", "base": "13.20", "amount": "0.79"}],
            "kind": "receipt",
            "language": "nl",
        },
    ),
    "till_en": (
        TILL_EN,
        {
            "supplier_name": "CORNER STORE",
            "supplier_vat": "GB980780684",
            "invoice_number": "000123",
            "issue_date": "2025-03-12",
            "total": "10.44",
            "currency": "GBP",
            "vat": [{"rate": "20", "base": "7.50", "amount": "1.50"}],
            "kind": "receipt",
            "language": "en",
        },
    ),
}

IDENTIFIERS = ("iban", "supplier_vat", "structured_communication")


def values(result: dict) -> dict:
    return {name: found["value"] for name, found in result.items()}


def check_shape(result: dict, pages: list[str]) -> None:
    """What every result holds to: JSON-ready, each field's source an exact slice of its page, a
    confidence in [0, 1], and an identifier marked valid only when stdnum says so."""
    assert json.loads(json.dumps(result)) == result
    for name, found in result.items():
        assert set(found) - {"valid"} == {"value", "page", "source", "confidence", "method"}, name
        assert found["value"] not in (None, "", []), name
        assert found["method"] == "rules"
        assert 1 <= found["page"] <= len(pages)
        assert found["source"] and found["source"] in pages[found["page"] - 1], name
        assert 0 <= found["confidence"] <= 1
        assert ("valid" in found) == (name in IDENTIFIERS), name
    if result.get("iban", {}).get("valid"):
        assert stdnum_iban.is_valid(result["iban"]["value"])
    if result.get("structured_communication", {}).get("valid"):
        assert ogm_vcs.is_valid(result["structured_communication"]["value"])
    if result.get("supplier_vat", {}).get("valid"):
        vat = result["supplier_vat"]["value"]
        assert gb_vat.is_valid(vat) if vat.startswith("GB") else eu_vat.is_valid(vat)


# --- the documents, field by field ----------------------------------------------------------------


@pytest.mark.parametrize("name", EXPECTED)
def test_each_document_gives_exactly_its_fields(name):
    text, expected = EXPECTED[name]
    result = extract([text])

    assert values(result) == expected
    check_shape(result, [text])
    for identifier in IDENTIFIERS:
        if identifier in result:
            assert result[identifier]["valid"] is True
            assert result[identifier]["confidence"] >= 0.8


def test_sources_and_confidences_say_where_and_how_sure():
    result = extract([SYNDIC_FR])

    assert result["total"]["source"] == "Montant à payer : 4 350,00"
    assert result["invoice_number"]["source"] == "Facture n° : 2025/0142"
    assert result["due_date"]["source"] == "Date d'échéance : 11/04/2025"
    assert result["iban"]["source"] == "BE71 0961 2345 6769"
    assert result["vat"]["source"] == "TVA 21 % sur 3 595,04                                     754,96"
    # labelled values are surer than the guessed ones
    assert result["total"]["confidence"] >= 0.85
    receipt = extract([SUPERMARKET_FR])
    assert receipt["issue_date"]["confidence"] < result["issue_date"]["confidence"]
    assert receipt["supplier_name"]["confidence"] < result["supplier_name"]["confidence"]


def test_the_customer_s_vat_number_is_not_the_supplier_s():
    # the syndic's client block and the service invoice's Bill To carry BE0850123440, a valid number
    assert extract([SYNDIC_FR])["supplier_vat"]["value"] == "BE0123456749"
    assert extract([SERVICE_EN])["supplier_vat"]["value"] == "BE0456789034"
    only_customer = "Facturé à :\nDupont SRL\nTVA BE 0123.456.749\n"
    assert "supplier_vat" not in extract([only_customer])


def test_a_field_is_found_on_a_later_page_and_says_so():
    pages = [
        "Facture n° 77\nDate : 01.02.2025\n",
        "Report\nTotal TTC 1.210,00 €\nÀ payer avant le 15/02/2025\n",
    ]
    result = extract(pages)

    assert (
        values(result).items()
        >= {
            "invoice_number": "77",
            "issue_date": "2025-02-01",
            "due_date": "2025-02-15",
            "total": "1210.00",
        }.items()
    )
    assert result["total"]["page"] == 2 and result["invoice_number"]["page"] == 1
    check_shape(result, pages)


# --- totals ---------------------------------------------------------------------------------------


def test_an_invoice_pays_its_largest_total_and_a_receipt_its_last():
    invoice = (
        "FACTURE\nTotal      1.000,00\nTVA 21%      210,00\nTotal      1.210,00\nÉchéance : 01/04/2025\n"
    )
    assert extract([invoice])["total"]["value"] == "1210.00"
    # the till receipt's first TOTAL is the larger; the voucher came off after it
    assert extract([TILL_EN])["total"]["value"] == "10.44"


def test_a_subtotal_or_an_amount_excluding_vat_is_not_the_total():
    text = "Sous-total   100,00\nTotal HTVA   100,00\nTotal TVA     21,00\n"
    assert "total" not in extract([text])


def test_no_total_label_no_total():
    text = "Entretien ascenseur          350,00\nDivers                        20,00\nTVA: voir annexe\n"
    result = extract([text])
    assert "total" not in result
    assert "currency" not in result


def test_label_and_value_on_the_same_line_far_apart_or_on_the_next_line():
    same_line = "Totaal te betalen" + " " * 40 + "1.234,56 EUR\n"
    next_line = "Totaal te betalen\n1.234,56 EUR\n"
    broken_label = "Total\nà payer :   1.234,56 EUR\n"
    for text in (same_line, next_line, broken_label):
        assert extract([text])["total"]["value"] == "1234.56", text


@pytest.mark.parametrize(
    ("written", "value"),
    [
        ("4 350,00 €", "4350.00"),
        ("4.350,00 EUR", "4350.00"),
        ("€ 4,350.00", "4350.00"),
        ("4350,00", "4350.00"),
        ("4350.00 EUR", "4350.00"),
        ("4\u202f350,00\u00a0€", "4350.00"),
        ("1.234.567,89 €", "1234567.89"),
        ("0,99 €", "0.99"),
    ],
)
def test_amounts_in_any_of_their_formats(written, value):
    assert extract([f"Total TTC : {written}\n"])["total"]["value"] == value


def test_ocr_letters_in_an_amount_are_read_only_between_digits():
    fixed = extract(["Total TTC 4 35O,00 €\n"])["total"]
    assert fixed["value"] == "4350.00"
    assert fixed["confidence"] < extract(["Total TTC 4 350,00 €\n"])["total"]["confidence"]
    # a letter at the end of the cents could be anything: no total rather than a guess
    assert "total" not in extract(["Total TTC 1O,5O €\n"])


def test_a_rate_a_quantity_or_a_date_is_not_an_amount():
    text = "Total 12.03.2025\nTotal 21,00 %\nTotal 320,00 kWh\n"
    assert "total" not in extract([text])


# --- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "iso"),
    [
        ("12/03/2025", "2025-03-12"),
        ("12-03-2025", "2025-03-12"),
        ("12.03.2025", "2025-03-12"),
        ("2025-03-12", "2025-03-12"),
        ("12 mars 2025", "2025-03-12"),
        ("12 maart 2025", "2025-03-12"),
        ("March 12, 2025", "2025-03-12"),
        ("12 March 2025", "2025-03-12"),
        ("12 janv. 2025", "2025-01-12"),
        ("12 mrt 2025", "2025-03-12"),
        ("1er août 2025", "2025-08-01"),
        ("3 DECEMBRE 2025", "2025-12-03"),
        ("12-Feb-2025", "2025-02-12"),
        ("05/06/25", "2025-06-05"),
    ],
)
def test_dates_in_french_dutch_and_english_day_first(written, iso):
    assert extract([f"Date de facture : {written}\n"])["issue_date"]["value"] == iso


def test_a_date_that_does_not_exist_is_not_reported():
    result = extract(["Date de facture : 31/02/2025\nÉchéance : 30.02.2025\n"])
    assert "issue_date" not in result and "due_date" not in result
    assert all("2025-02-3" not in str(found["value"]) for found in result.values())
    assert "31/02/2025" not in [found["value"] for found in result.values()]


def test_month_first_only_when_day_first_cannot_be():
    assert extract(["Invoice date: 03/25/2025\n"])["issue_date"]["value"] == "2025-03-25"
    assert extract(["Invoice date: 03/04/2025\n"])["issue_date"]["value"] == "2025-04-03"


def test_a_period_or_a_delivery_date_is_not_the_issue_date():
    text = "Période du 01/01/2025 au 31/03/2025\nDate de livraison : 15/01/2025\nFacture n° 12\n"
    assert "issue_date" not in extract([text])


# --- identifiers ----------------------------------------------------------------------------------


def test_an_invalid_iban_is_flagged_never_valid():
    found = extract(["IBAN: BE71 0961 2345 6768\n"])["iban"]
    assert found["valid"] is False
    assert found["confidence"] <= 0.1
    # not labelled nor in groups of four: not even shaped like an IBAN to a reader
    assert "iban" not in extract(["Référence BE71096123456768\n"])


def test_a_wrong_communication_is_flagged_never_valid():
    found = extract(["Communication : +++090/9337/55494+++\n"])["structured_communication"]
    assert found == {
        "value": "+++090/9337/55494+++",
        "page": 1,
        "source": "+++090/9337/55494+++",
        "valid": False,
        "confidence": 0.1,
        "method": "rules",
    }


def test_an_invalid_vat_number_is_flagged_never_valid():
    found = extract(["Immo SRL\nTVA BE 0123.456.789\n"])["supplier_vat"]
    assert found["value"] == "BE0123456789" and found["valid"] is False and found["confidence"] <= 0.1


def test_a_valid_identifier_wins_over_an_invalid_one():
    text = "IBAN BE71 0961 2345 6768\nIBAN BE71 0961 2345 6769\n"
    found = extract([text])["iban"]
    assert found["value"] == "BE71096123456769" and found["valid"] is True


def test_communications_between_stars_or_without_marks_after_their_label():
    for text in (
        "Mededeling: ***090/9337/55493***\n",
        "Communication structurée : 090/9337/55493\n",
        "+ + + 090 / 9337 / 55493 + + +\n",
    ):
        found = extract([text])["structured_communication"]
        assert (found["value"], found["valid"]) == ("+++090/9337/55493+++", True), text
    assert "structured_communication" not in extract(["Référence 090/9337/55493\n"])


def test_ocr_letters_in_an_iban_or_communication_count_only_when_the_check_passes():
    iban = extract(["IBAN BE71 O961 2345 6769\n"])["iban"]
    assert (iban["value"], iban["valid"]) == ("BE71096123456769", True)
    assert iban["confidence"] < extract(["IBAN BE71 0961 2345 6769\n"])["iban"]["confidence"]
    communication = extract(["+++O9O/9337/55493+++\n"])["structured_communication"]
    assert (communication["value"], communication["valid"]) == ("+++090/9337/55493+++", True)
    assert extract(["IBAN BE71 O961 2345 6768\n"])["iban"]["valid"] is False


def test_an_account_debited_by_direct_debit_is_the_customer_s_not_the_one_to_pay():
    text = "Ce montant sera prélevé par domiciliation de votre compte BE71 0961 2345 6769.\n"
    assert "iban" not in extract([text])


def test_foreign_iban_and_vat_numbers():
    text = "Acme B.V.\nBTW-nummer NL004495445B01\nIBAN NL91 ABNA 0417 1643 00\nFactuur 2025-17\n"
    result = extract([text])
    assert (
        values(result).items()
        >= {
            "supplier_vat": "NL004495445B01",
            "iban": "NL91ABNA0417164300",
            "invoice_number": "2025-17",
            "supplier_name": "Acme B.V.",
        }.items()
    )


# --- nothing invented -----------------------------------------------------------------------------


def test_empty_pages_give_no_fields():
    assert extract([]) == {}
    assert extract(["", "   \n\n"]) == {}


def test_an_invoice_number_label_without_a_number_gives_none():
    for text in (
        "FACTURE\n\nMerci pour votre confiance.\n",
        "Bon de commande n° 4521\n",
        "Invoice date: 12/03/2025\n",
    ):
        assert "invoice_number" not in extract([text]), text


def test_a_kind_and_a_language_need_cue_words():
    result = extract(["12345 67890\n"])
    assert "kind" not in result and "language" not in result


# --- properties -----------------------------------------------------------------------------------

IBAN_SHAPES = {  # the BBAN of each country: n digit, a letter, c either
    "BE": "n" * 12,
    "NL": "aaaa" + "n" * 10,
    "DE": "n" * 18,
    "FR": "n" * 10 + "c" * 11 + "nn",
    "GB": "aaaa" + "n" * 14,
    "LU": "nnn" + "c" * 13,
}
DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@st.composite
def valid_ibans(draw) -> str:
    country = draw(st.sampled_from(sorted(IBAN_SHAPES)))
    alphabet = {"n": DIGITS, "a": LETTERS, "c": DIGITS + LETTERS}
    bban = "".join(draw(st.sampled_from(alphabet[k])) for k in IBAN_SHAPES[country])
    if country == "BE":  # the Belgian account number's own check
        bban = bban[:10] + f"{int(bban[:10]) % 97 or 97:02d}"
    number = country + stdnum_iban.calc_check_digits(country + "00" + bban) + bban
    assume(stdnum_iban.is_valid(number))
    return number


def written_iban(number: str, grouped: bool) -> str:
    return stdnum_iban.format(number) if grouped else number


@st.composite
def valid_communications(draw) -> str:
    base = draw(st.integers(min_value=1, max_value=9_999_999_999))
    digits = f"{base:010d}"
    digits += ogm_vcs.calc_check_digits(digits)
    return digits


def written_communication(digits: str, mark: str, spaced: bool) -> str:
    gap = " " if spaced else ""
    return f"{mark}{gap}{digits[:3]}/{digits[3:7]}/{digits[7:]}{gap}{mark}"


SURROUNDINGS = st.sampled_from(
    ["", "Merci de payer avant l'échéance.\n", "Gelieve te betalen binnen 30 dagen.\n", "Total TTC 12,00 €\n"]
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.filter_too_much])
@given(
    valid_ibans(),
    st.booleans(),
    st.sampled_from(["IBAN", "IBAN :", "Compte", "Rekening", "Account:"]),
    SURROUNDINGS,
)
def test_any_valid_iban_is_found_exactly(number, grouped, label, around):
    text = f"{around}{label} {written_iban(number, grouped)}\n{around}"
    found = extract([text])["iban"]
    assert (found["value"], found["valid"]) == (number, True)
    assert found["source"] == written_iban(number, grouped)


@settings(max_examples=150, suppress_health_check=[HealthCheck.filter_too_much])
@given(valid_ibans(), st.booleans(), st.data())
def test_an_iban_with_a_digit_changed_is_never_valid(number, grouped, data):
    positions = [i for i, c in enumerate(number) if c.isdigit()]
    at = data.draw(st.sampled_from(positions))
    digit = data.draw(st.sampled_from([d for d in DIGITS if d != number[at]]))
    corrupted = number[:at] + digit + number[at + 1 :]
    result = extract([f"IBAN {written_iban(corrupted, grouped)}\n"])
    assert result.get("iban", {}).get("valid") is not True


@settings(max_examples=150)
@given(valid_communications(), st.sampled_from(["+++", "***"]), st.booleans(), SURROUNDINGS)
def test_any_valid_communication_is_found_exactly(digits, mark, spaced, around):
    text = f"{around}Communication : {written_communication(digits, mark, spaced)}\n{around}"
    found = extract([text])["structured_communication"]
    assert found["value"] == f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"
    assert found["valid"] is True


@settings(max_examples=150)
@given(valid_communications(), st.sampled_from(["+++", "***"]), st.data())
def test_a_communication_with_a_digit_changed_is_never_valid(digits, mark, data):
    at = data.draw(st.integers(min_value=0, max_value=11))
    digit = data.draw(st.sampled_from([d for d in DIGITS if d != digits[at]]))
    corrupted = digits[:at] + digit + digits[at + 1 :]
    result = extract([f"Mededeling: {written_communication(corrupted, mark, False)}\n"])
    assert result.get("structured_communication", {}).get("valid") is not True


MONTH_NAMES = {
    "fr": ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août", "septembre", "octobre",
           "novembre", "décembre"],
    "fr.": ["janv.", "févr.", "mars", "avr.", "mai", "juin", "juil.", "août", "sept.", "oct.", "nov.",
            "déc."],
    "nl": ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus", "september", "oktober",
           "november", "december"],
    "nl.": ["jan", "feb", "mrt", "apr", "mei", "jun", "jul", "aug", "sep", "okt", "nov", "dec"],
    "en": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"],
    "en.": ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"],
}  # fmt: skip
DATE_FORMATS = [
    lambda d: d.strftime("%d/%m/%Y"),
    lambda d: d.strftime("%d-%m-%Y"),
    lambda d: d.strftime("%d.%m.%Y"),
    lambda d: f"{d.day}/{d.month}/{d.year}",
    lambda d: d.isoformat(),
    *(lambda d, names=names: f"{d.day} {names[d.month - 1]} {d.year}" for names in MONTH_NAMES.values()),
    lambda d: f"{MONTH_NAMES['en'][d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{MONTH_NAMES['en.'][d.month - 1]} {d.day}, {d.year}",
]
DATE_LABELS = ["Date de facture :", "Date:", "Factuurdatum", "Datum:", "Invoice date:", "Date of issue"]


@settings(max_examples=200)
@given(
    st.dates(min_value=date(1990, 1, 1), max_value=date(2099, 12, 31)),
    st.sampled_from(DATE_FORMATS),
    st.sampled_from(DATE_LABELS),
    st.sampled_from([" ", "   ", "\t", "\n"]),
)
def test_dates_in_any_format_round_trip_to_iso(day, written, label, gap):
    text = f"{label}{gap}{written(day)}\n"
    assert extract([text])["issue_date"]["value"] == day.isoformat()


AMOUNT_FORMATS = [
    lambda v: f"{v:,.2f}".replace(",", " ").replace(".", ",") + " €",
    lambda v: f"{v:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".") + " EUR",
    lambda v: f"€ {v:,.2f}",
    lambda v: f"{v:.2f}".replace(".", ","),
    lambda v: f"{v:.2f}",
]


@settings(max_examples=200)
@given(
    st.decimals(min_value=0, max_value=9_999_999, places=2),
    st.sampled_from(AMOUNT_FORMATS),
    st.sampled_from(["Total TTC :", "Te betalen:", "Amount due:", "Totaal incl. btw", "Net à payer"]),
)
def test_amounts_in_any_format_round_trip(value, written, label):
    found = extract([f"{label}   {written(value)}\n"])["total"]
    assert Decimal(found["value"]) == value and found["value"] == f"{value:.2f}"


WORDS = st.sampled_from(
    [
        "Total", "TOTAAL", "Te betalen", "à payer", "Facture n°", "Date", "Échéance", "TVA", "BTW 21%", "VAT",
        "IBAN", "BE71 0961 2345 6769", "BE71 0961 2345 6768", "+++090/9337/55493+++", "***123/4567/89012***",
        "BE 0123.456.749", "12/03/2025", "31/02/2025", "12 mars 2025", "4 350,00", "€", "1,815.00", "-1,20",
        "Client :", "SRL", "Ticket", "Kassabon", "Bancontact", "O", "l", "21 %", "150,00", "9,00",
    ]
)  # fmt: skip
SEPARATORS = st.sampled_from([" ", "  ", "        ", "\n", "\n\n", ": ", "\t"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.tuples(WORDS, SEPARATORS), max_size=40), min_size=1, max_size=3))
def test_any_mix_of_labels_and_values_gives_well_formed_fields(pages):
    texts = ["".join(word + gap for word, gap in page) for page in pages]
    check_shape(extract(texts), texts)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=300), min_size=1, max_size=3))
def test_any_text_gives_well_formed_fields(texts):
    check_shape(extract(texts), [unicodedata.normalize("NFC", t) for t in texts])


# --- a model's answer, kept only where the text prints it ---------------------------------------

from app.invoices.fields import MODEL_CONFIDENCE, fill  # noqa: E402
from workers.protocol.texts import MODEL_FIELDS  # noqa: E402

PRINTED = """\
Brightline Cleaning BV
VAT: BE 0403.170.701
Bill to: Maple Court, VAT BE 0123.456.749
Invoice INV-2025-2433
19/08/2025
VAT 21 % € 816.54
Please pay € 4,704.83 by 18/09/2025
to BE71 0961 2345 6769, reference 123/4567/89002
"""
TRUE_ANSWER = {
    "supplier_name": "Brightline Cleaning BV",
    "supplier_vat": "BE0403170701",
    "invoice_number": "INV-2025-2433",
    "issue_date": "19 August 2025",
    "due_date": "2025-09-18",
    "total": "4704.83",
    "currency": "euro",
    "iban": "BE71096123456769",
    "structured_communication": "+++123/4567/89002+++",
}


def test_every_field_a_model_may_fill_has_a_check_against_the_text():
    assert set(TRUE_ANSWER) == set(MODEL_FIELDS)


def test_a_model_fills_missing_fields_with_the_texts_own_values_marked_llm():
    filled = fill({}, TRUE_ANSWER, [PRINTED])

    assert {name: f["value"] for name, f in filled.items()} == {
        "supplier_name": "Brightline Cleaning BV",
        "supplier_vat": "BE0403170701",
        "invoice_number": "INV-2025-2433",
        "issue_date": "2025-08-19",
        "due_date": "2025-09-18",
        "total": "4704.83",
        "currency": "EUR",
        "iban": "BE71096123456769",
        "structured_communication": "+++123/4567/89002+++",
    }
    for f in filled.values():
        assert f["method"] == "llm" and f["confidence"] == MODEL_CONFIDENCE and f["source"] in PRINTED
    assert filled["iban"]["valid"] is True and filled["iban"]["source"] == "BE71 0961 2345 6769"


def test_the_rules_fields_are_never_replaced_by_a_models():
    rules = {"total": {"value": "4704.83", "method": "rules"}}

    assert fill(rules, {**TRUE_ANSWER, "total": "18.09"}, [PRINTED])["total"] is rules["total"]


@pytest.mark.parametrize(
    ("name", "invented"),
    [
        ("supplier_name", "Acme Invented SA"),
        ("supplier_vat", "BE0123456749"),  # printed, valid, but the customer's
        ("supplier_vat", "BE0403170702"),  # fails its check
        ("invoice_number", "INV-2025-2434"),
        ("issue_date", "2025-08-20"),
        ("issue_date", "31/02/2025"),
        ("total", "4704.84"),
        ("total", "816.54"),  # printed, but the VAT amount: no total label, not the largest
        ("supplier_name", "Maple Court"),  # printed, in the customer's block
        ("currency", "USD"),
        ("iban", "BE71096123456768"),  # one digit off: fails mod 97
        ("iban", "BE68539007547034"),  # valid, not printed
        ("structured_communication", "+++123/4567/89003+++"),
        ("structured_communication", "+++090/9337/55493+++"),  # valid, not printed
    ],
)
def test_a_value_that_is_not_printed_or_not_valid_is_dropped(name, invented):
    assert name not in fill({}, {name: invented}, [PRINTED])


@pytest.mark.parametrize(
    "answer",
    [None, [], "total", {"total": 4704.83}, {"total": ["4704.83"]}, {"total": ""}, {"total": "4" * 500}],
)
def test_a_malformed_answer_fills_nothing(answer):
    assert fill({}, answer, [PRINTED]) == {}


def test_a_due_date_the_model_gives_must_follow_the_issue_date():
    issued = {"issue_date": {"value": "2025-08-19", "method": "rules"}}

    assert "due_date" not in fill(issued, {"due_date": "19/08/2025"}, [PRINTED])
    assert fill(issued, {"due_date": "18/09/2025"}, [PRINTED])["due_date"]["value"] == "2025-09-18"


@pytest.mark.parametrize(
    ("answer", "fields"),
    [('{"total": "12,00"}', {"total": "12,00"}), ("[1]", None), ("{", None), (None, None), (3, None)],
)
def test_the_coordinator_takes_a_fields_step_s_answer_as_compared_never_a_field_beside_it(answer, fields):
    from app.jobs import _answer_fields

    assert _answer_fields(answer) == fields
