"""An evaluation set of invoices and receipts with known text and known fields, for ``bench.ocr_eval``.

Deterministic (one seed): ``generate(folder, count)`` writes ``count`` invoices and ``count`` receipts,
in French, Dutch and English in turn, each as four kinds of page:

- ``born_digital``: a PDF with a real text layer (``tests.documents``' PDF writer, Helvetica);
- ``clean_scan``: the page drawn at 300 dpi in grayscale with Pillow (DejaVu Sans; a receipt in DejaVu
  Sans Mono on 80 mm thermal paper), as a PNG;
- ``degraded_photo``: that page with low contrast, a fading gradient (thermal paper) or uneven light,
  a slight blur, noise, a skew of 1 to 4 degrees, at 150 to 200 dpi, as a JPEG; one in four is also
  turned 90, 180 or 270 degrees;
- ``low_resolution``: the clean page scanned at 72 to 100 dpi (small print: lines of 8 to 12 pixels),
  slightly blurred, as a PNG that does not say its resolution.

Every identifier is valid: a Belgian VAT number (``BE0`` + 7 digits + 97 - (first 8 digits mod 97)),
a Belgian IBAN (bank code of a real bank, account, mod-97 check; IBAN check digits by ISO 7064
mod 97-10) and a structured communication (first 10 digits mod 97, 0 read as 97). Each sample knows
its lines as written and its fields in the forms ``app.invoices.fields.extract`` returns (ISO dates,
``"4350.00"``, compact IBAN and VAT number, ``+++090/9337/55493+++``, ``vat`` lines with rate, base
and amount).

Write a set to look at: ``python -m bench.evalset FOLDER [--count N]`` (a ``manifest.json`` beside).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from stdnum import iban as stdnum_iban
from stdnum import numdb
from stdnum.be import ogm_vcs
from stdnum.be import vat as be_vat

from tests.documents import _build_pdf, _num, _pdf_string, text_image

KINDS = ("born_digital", "clean_scan", "degraded_photo", "low_resolution")
LANGUAGES = ("fr", "nl", "en")
DOC_TYPES = ("invoice", "receipt")
TESSERACT_LANGUAGE = {"fr": "fra", "nl": "nld", "en": "eng"}
#: Invoices, and as many receipts: 12 + 12 documents, 96 pages.
DEFAULT_COUNT = 12
SEED = 20250312

SCAN_DPI = 300
A4 = (595.0, 842.0)
#: Thermal paper, 80 mm wide.
RECEIPT_WIDTH = 80 / 25.4 * 72
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
#: Between the left and the right part of a line (an amount) in the text as written.
GAP = "    "


@dataclass(frozen=True)
class Line:
    """One printed line: text at the left margin and, optionally, text flush right (an amount)."""

    left: str = ""
    right: str = ""
    bold: bool = False

    @property
    def text(self) -> str:
        return f"{self.left}{GAP}{self.right}" if self.left and self.right else self.left or self.right


@dataclass(frozen=True)
class Document:
    name: str
    doc_type: str
    language: str
    lines: tuple[Line, ...]
    fields: dict


@dataclass(frozen=True)
class Sample:
    """One page to read: its file, how it was made, and what it says."""

    path: Path
    kind: str  # one of KINDS
    language: str  # fr, nl, en
    doc_type: str  # invoice, receipt
    name: str  # the document's name, shared by its kinds of page
    lines: tuple[str, ...]  # the lines as written
    fields: dict  # the fields as app.invoices.fields.extract returns their values
    dpi: int = SCAN_DPI
    skew: float = 0.0  # degrees
    rotation: int = 0  # degrees the page was turned (counter-clockwise)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def tesseract_language(self) -> str:
        return TESSERACT_LANGUAGE[self.language]


# --- identifiers and amounts ------------------------------------------------------------------------

BANK_CODES = ("001", "068", "096", "143", "310", "363", "523", "732", "734", "750", "979")


def vat_number(rng: random.Random) -> tuple[str, str]:
    """A valid Belgian VAT number: compact (``BE0123456749``) and as printed (``BE 0123.456.749``)."""
    head = f"0{rng.randrange(2 * 10**6, 10**7)}"
    digits = head + f"{97 - int(head) % 97:02d}"
    compact = "BE" + digits
    assert be_vat.is_valid(compact), compact
    style = rng.randrange(3)
    printed = (
        f"BE {digits[:4]}.{digits[4:7]}.{digits[7:]}",
        f"BE{digits}",
        f"BE {digits[:4]} {digits[4:7]} {digits[7:]}",
    )[style]
    return compact, printed


def iban(rng: random.Random) -> tuple[str, str, str]:
    """A valid Belgian IBAN: compact, in groups of four, and its bank's BIC."""
    bank = rng.choice(BANK_CODES)
    account = f"{rng.randrange(10**7):07d}"
    check = int(bank + account) % 97 or 97
    bban = f"{bank}{account}{check:02d}"
    compact = "BE" + stdnum_iban.calc_check_digits("BE00" + bban) + bban
    assert stdnum_iban.is_valid(compact), compact
    bic = numdb.get("be/banks").info(bank)[0][1]["bic"]
    return compact, " ".join(compact[i : i + 4] for i in range(0, len(compact), 4)), bic


def communication(rng: random.Random) -> str:
    """A valid structured communication, ``+++ddd/dddd/ddddd+++``."""
    head = f"{rng.randrange(1, 10**10):010d}"
    digits = head + f"{int(head) % 97 or 97:02d}"
    assert ogm_vcs.is_valid(digits), digits
    return f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"


CENT = Decimal("0.01")


def money(value: Decimal, language: str) -> str:
    """``3 595,04`` (fr), ``3.595,04`` (nl), ``3,595.04`` (en)."""
    whole, cents = f"{value:.2f}".split(".")
    sign = "-" if whole.startswith("-") else ""
    whole = whole.lstrip("-")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    thousands, decimal = {"fr": (" ", ","), "nl": (".", ","), "en": (",", ".")}[language]
    return f"{sign}{thousands.join(groups)}{decimal}{cents}"


MONTHS = {
    "fr": "janvier février mars avril mai juin juillet août septembre octobre novembre décembre".split(),
    "nl": "januari februari maart april mei juni juli augustus september oktober november december".split(),
    "en": "January February March April May June July August September October November December".split(),
}


def written_date(day: date, language: str, style: int) -> str:
    """0: ``12/03/2025``; 1: ``12 mars 2025`` / ``12 maart 2025`` / ``March 12, 2025``;
    2: ``12-03-2025`` (fr, nl) or ``12 March 2025`` (en)."""
    month = MONTHS[language][day.month - 1]
    if style == 0:
        return f"{day.day:02d}/{day.month:02d}/{day.year}"
    if style == 1:
        return f"{month} {day.day}, {day.year}" if language == "en" else f"{day.day} {month} {day.year}"
    return (
        f"{day.day} {month} {day.year}" if language == "en" else f"{day.day:02d}-{day.month:02d}-{day.year}"
    )


def _day(rng: random.Random) -> date:
    return date(2024, 1, 1) + timedelta(days=rng.randrange(730))


# --- what the documents say ---------------------------------------------------------------------------

SUPPLIERS = {
    "fr": (
        "Toitures Dubois SRL", "Immo Gestion Syndic SRL", "Chauffage Lambert SA", "Ascenseurs Mertens SA",
        "Nettoyage Clair SRL", "Jardins de la Cambre SRL", "Électricité Renard SRL", "Vitrerie Lejeune SRL",
    ),
    "nl": (
        "Energie Vlaanderen nv", "Dakwerken Peeters bv", "Liftservice Janssens nv", "Schoonmaak De Smet bv",
        "Loodgieterij Claes bv", "Tuinaanleg Wouters bv", "Elektro Maes bv", "Glaswerken Jacobs nv",
    ),
    "en": (
        "Northwind IT Services BV", "Harbour Lift Maintenance Ltd", "Greenleaf Gardening Ltd",
        "Brightline Cleaning BV", "Summit Roofing Ltd", "Clearview Glazing Ltd", "Keystone Heating BV",
        "Riverside Plumbing Ltd",
    ),
}  # fmt: skip
SHOPS = {
    "fr": (
        "SUPERMARCHE DU PARC", "Boulangerie Lambert SRL", "PHARMACIE DES ECOLES", "Quincaillerie Dumont SRL",
        "EPICERIE DE LA PLACE", "Droguerie Collard SRL",
    ),
    "nl": (
        "Buurtwinkel De Linde bv", "BAKKERIJ PEETERS", "Doe-het-zelf Claes bv", "APOTHEEK CENTRUM",
        "SUPERMARKT DE MARKT", "Drogisterij Willems bv",
    ),
    "en": (
        "CORNER STORE", "Hardware Depot Ltd", "CITY PHARMACY", "Green Grocer Ltd", "DAILY MARKET",
        "Brussels Books Ltd",
    ),
}  # fmt: skip
STREETS = {
    "fr": ("Avenue Louise", "Rue des Écoles", "Chaussée de Wavre", "Boulevard du Midi", "Rue de la Station"),
    "nl": ("Koningsstraat", "Lindelaan", "Kerkstraat", "Stationsstraat", "Brusselsesteenweg"),
    "en": ("Rue de la Science", "Avenue de Tervueren", "Rue Neuve", "Place Flagey", "Rue Belliard"),
}
CITIES = {
    "fr": ("1050 Ixelles", "1180 Uccle", "1040 Etterbeek", "5000 Namur", "4000 Liège", "1300 Wavre"),
    "nl": ("9000 Gent", "2000 Antwerpen", "3000 Leuven", "8000 Brugge", "2800 Mechelen", "3500 Hasselt"),
    "en": ("1000 Brussels", "1040 Brussels", "1050 Brussels", "1200 Brussels", "1150 Brussels"),
}
CUSTOMERS = {
    "fr": ("ACP Résidence Les Tilleuls", "ACP Résidence du Parc", "Coopérative Les Glycines"),
    "nl": ("VME Residentie De Linde", "VME Residentie Zonneweide", "Wooncoöperatie De Eik"),
    "en": ("Maple Court Housing Co-operative", "Linden Court Residents", "Oak House Co-operative"),
}
SERVICES = {
    "fr": (
        "Honoraires de gestion", "Frais administratifs", "Entretien de la chaudière",
        "Remplacement de gouttières", "Nettoyage des communs", "Contrôle des extincteurs",
        "Réparation de la porte de garage", "Entretien des espaces verts", "Déplacement",
        "Fournitures et petit matériel",
    ),
    "nl": (
        "Beheerskosten", "Administratiekosten", "Onderhoud verwarmingsketel", "Vervanging dakgoten",
        "Schoonmaak gemeenschappelijke delen", "Controle brandblussers", "Herstelling garagepoort",
        "Onderhoud groenzones", "Verplaatsingskosten", "Klein materiaal",
    ),
    "en": (
        "Management fees", "Administrative costs", "Boiler maintenance", "Gutter replacement",
        "Cleaning of common areas", "Fire extinguisher inspection", "Garage door repair",
        "Garden maintenance", "Travel costs", "Small supplies",
    ),
}  # fmt: skip
#: Receipt items and their VAT rate (6 % food and medicine, 21 % the rest).
ITEMS = {
    "fr": (
        ("PAIN GRIS", 6), ("LAIT DEMI-ECREME 1L", 6), ("POMMES JONAGOLD 1KG", 6), ("CAFE MOULU 500G", 6),
        ("BEURRE DOUX 250G", 6), ("YAOURT NATURE X4", 6), ("CHOCOLAT NOIR", 6), ("LESSIVE 2L", 21),
        ("PAPIER TOILETTE X8", 21), ("EPONGES X3", 21), ("AMPOULE LED", 21), ("PILES AA X4", 21),
    ),
    "nl": (
        ("Volkorenbrood", 6), ("Melk halfvol 1L", 6), ("Appels Jonagold 1kg", 6), ("Koffie 250g", 6),
        ("Boter 250g", 6), ("Yoghurt natuur", 6), ("Croissant 4 st", 6), ("Wasmiddel 2L", 21),
        ("Toiletpapier 8 rol", 21), ("Sponzen 3 st", 21), ("Ledlamp", 21), ("Batterijen AA", 21),
    ),
    "en": (
        ("Bread", 6), ("Milk 2L", 6), ("Apples 1kg", 6), ("Coffee beans", 6), ("Butter 250g", 6),
        ("Orange juice", 6), ("Cheddar cheese", 6), ("Washing liquid", 21), ("Toilet paper", 21),
        ("Sponges", 21), ("LED bulb", 21), ("Batteries AA", 21),
    ),
}  # fmt: skip

#: Per language: invoice labels (title, number, issue date, due date, description, subtotal, VAT line,
#: total incl. VAT, amount to pay, bank line, communication line, customer).
INVOICE_WORDS = {
    "fr": {
        "title": "FACTURE", "number": ("Facture n° :", "N° de facture :"),
        "issue": ("Date de facture :", "Date :"), "due": ("Date d'échéance :", "Échéance :"),
        "description": ("Description", "Montant HTVA"), "subtotal": "Total HTVA",
        "vat": "TVA {rate} % sur {base}", "with_vat": "Total TVAC", "to_pay": "Montant à payer : {total} EUR",
        "bank": "À verser sur le compte IBAN {iban} - BIC {bic}",
        "communication": "avec la communication structurée {ogm}", "customer": "Client :",
        "vat_label": "TVA", "customer_vat": "BCE",
    },
    "nl": {
        "title": "FACTUUR", "number": ("Factuurnummer:", "Factuur nr.:"),
        "issue": ("Factuurdatum:", "Datum:"), "due": ("Vervaldatum:", "Vervaldag:"),
        "description": ("Omschrijving", "Bedrag excl. btw"), "subtotal": "Totaal excl. btw",
        "vat": "BTW {rate}% over {base}", "with_vat": "Totaal incl. btw", "to_pay": "Te betalen: € {total}",
        "bank": "Gelieve over te schrijven op rekening IBAN {iban} - BIC {bic}",
        "communication": "met gestructureerde mededeling {ogm}", "customer": "Klant:",
        "vat_label": "BTW", "customer_vat": "KBO",
    },
    "en": {
        "title": "INVOICE", "number": ("Invoice No:", "Invoice number:"),
        "issue": ("Invoice Date:", "Date of issue:"), "due": ("Due Date:", "Payment due:"),
        "description": ("Description", "Amount"), "subtotal": "Subtotal",
        "vat": "VAT {rate}% on € {base}", "with_vat": "Total", "to_pay": "Amount due: € {total}",
        "bank": "Please pay to IBAN {iban} - BIC {bic}",
        "communication": "with structured communication {ogm}", "customer": "Bill To:",
        "vat_label": "VAT:", "customer_vat": "VAT:",
    },
}  # fmt: skip


def _address(rng: random.Random, language: str) -> tuple[str, str]:
    return f"{rng.choice(STREETS[language])} {rng.randint(1, 250)}", rng.choice(CITIES[language])


def invoice(rng: random.Random, number: int, language: str) -> Document:
    words = INVOICE_WORDS[language]
    supplier = rng.choice(SUPPLIERS[language])
    vat, vat_printed = vat_number(rng)
    account, account_printed, bic = iban(rng)
    ogm = communication(rng)
    issued = _day(rng)
    due = issued + timedelta(days=rng.choice((14, 15, 30, 45)))
    rate = rng.choice((6, 21, 21))
    items = [
        (service, Decimal(rng.randrange(2000, 250000)) / 100)
        for service in rng.sample(SERVICES[language], rng.randint(1, 4))
    ]
    base = sum((amount for _, amount in items), Decimal(0))
    tax = (base * rate / 100).quantize(CENT, ROUND_HALF_UP)
    total = base + tax
    year = issued.year
    reference = {
        "fr": f"{year}/{rng.randrange(1, 2000):04d}",
        "nl": f"F{year % 100}-{rng.randrange(10**6, 10**7)}",
        "en": f"INV-{year}-{rng.randrange(1, 10000):04d}",
    }[language]

    def amount(value: Decimal) -> str:
        return ("€ " if language == "en" else "") + money(value, language)

    lines = [
        Line(supplier, bold=True),
        *(Line(part) for part in _address(rng, language)),
        Line(f"{words['vat_label']} {vat_printed}"),
        Line(),
        Line(words["customer"]),
        Line(rng.choice(CUSTOMERS[language])),
        *(Line(part) for part in _address(rng, language)),
    ]
    if rng.random() < 0.5:  # the customer's own VAT number: never the supplier's
        lines.append(Line(f"{words['customer_vat']} {vat_number(rng)[1]}"))
    issue_style, due_style = rng.randrange(3), rng.randrange(3)
    lines += [
        Line(),
        Line(words["title"], bold=True),
        Line(),
        Line(f"{rng.choice(words['number'])} {reference}"),
        Line(f"{rng.choice(words['issue'])} {written_date(issued, language, issue_style)}"),
        Line(f"{rng.choice(words['due'])} {written_date(due, language, due_style)}"),
        Line(),
        Line(*words["description"]),
        *(Line(service, amount(value)) for service, value in items),
        Line(),
        Line(words["subtotal"], amount(base)),
        Line(words["vat"].format(rate=rate, base=money(base, language)), amount(tax)),
        Line(words["with_vat"], amount(total) + (" €" if language == "fr" else "")),
        Line(),
        Line(words["to_pay"].format(total=money(total, language))),
        Line(words["bank"].format(iban=account_printed, bic=bic)),
        Line(words["communication"].format(ogm=ogm)),
    ]
    fields = {
        "supplier_name": supplier,
        "supplier_vat": vat,
        "invoice_number": reference,
        "issue_date": issued.isoformat(),
        "due_date": due.isoformat(),
        "total": f"{total:.2f}",
        "currency": "EUR",
        "vat": [{"rate": str(rate), "base": f"{base:.2f}", "amount": f"{tax:.2f}"}],
        "iban": account,
        "structured_communication": ogm,
        "kind": "invoice",
        "language": language,
    }
    return Document(f"invoice-{number:03d}-{language}", "invoice", language, tuple(lines), fields)


def receipt(rng: random.Random, number: int, language: str) -> Document:
    shop = rng.choice(SHOPS[language])
    vat, vat_printed = vat_number(rng)
    day = _day(rng)
    clock = f"{rng.randint(8, 19):02d}:{rng.randrange(60):02d}"
    chosen = rng.sample(ITEMS[language], rng.randint(4, 9))
    prices = [(name, rate, Decimal(rng.randrange(79, 2499)) / 100) for name, rate in chosen]
    total = sum((price for _, _, price in prices), Decimal(0))
    by_rate = {}
    for _, rate, price in prices:
        by_rate[rate] = by_rate.get(rate, Decimal(0)) + price
    vat_lines = []
    for rate in sorted(by_rate):
        gross = by_rate[rate]
        base = (gross * 100 / (100 + rate)).quantize(CENT, ROUND_HALF_UP)
        vat_lines.append((rate, base, gross - base, gross))

    def m(value: Decimal) -> str:
        return money(value, language)

    street, city = _address(rng, language)
    lines = [Line(shop, bold=True), Line(street), Line(city)]
    if language == "fr":
        reference = f"{rng.randrange(1, 100):04d}-{rng.randrange(1, 20):03d}-{rng.randrange(10000):04d}"
        lines += [
            Line(f"TVA {vat_printed}"),
            Line(f"Tél. 0{rng.randint(2, 9)} {rng.randrange(100, 1000)} {rng.randrange(10, 100)} "
                 f"{rng.randrange(10, 100)}"),
            Line(),
            Line(f"Ticket n° {reference}"),
            Line(f"{written_date(day, language, 0)}  {clock}  Caisse {rng.randint(1, 12):02d}"),
            Line(),
            *(Line(name, m(price)) for name, _, price in prices),
            Line(),
            Line("TOTAL", f"{m(total)} EUR"),
            Line("BANCONTACT", m(total)),
            Line(),
            Line("Taux   HTVA    TVA    TVAC"),
            *(Line(f"{'AB'[i]} {rate}%   {m(base)}   {m(tax)}   {m(gross)}")
              for i, (rate, base, tax, gross) in enumerate(vat_lines)),
            Line(),
            Line("Merci de votre visite"),
        ]  # fmt: skip
    elif language == "nl":
        reference = str(rng.randrange(10000, 100000))
        lines += [
            Line(f"BTW {vat_printed}"),
            Line(),
            Line("KASSABON"),
            Line(f"Bon nr. {reference}    Kassa {rng.randint(1, 9)}"),
            Line(f"{written_date(day, language, 2)} {clock}"),
            Line(),
            *(Line(name, m(price)) for name, _, price in prices),
            Line(),
            Line("Totaal", f"{m(total)} EUR"),
            Line("Bancontact", m(total)),
            Line(),
            *(Line(f"BTW {rate}%  Basis {m(base)}  BTW {m(tax)}") for rate, base, tax, _ in vat_lines),
            Line("Bedankt voor uw bezoek!"),
        ]
    else:
        reference = f"{rng.randrange(1, 10**6):06d}"
        lines += [
            Line(f"VAT {vat_printed}"),
            Line(),
            Line(f"Receipt #: {reference}"),
            Line(f"Till {rng.randint(1, 9)}   Op: {rng.choice(('Sam', 'Alex', 'Kim', 'Jo'))}"),
            Line(f"{written_date(day, language, 0)} {clock}"),
            Line(),
            *(Line(name, m(price)) for name, _, price in prices),
            Line(),
            Line("TOTAL", f"EUR {m(total)}"),
            Line("CARD", m(total)),
            Line(),
            *(Line(f"VAT {rate}% on {m(base)}", m(tax)) for rate, base, tax, _ in vat_lines),
            Line("Thank you for shopping with us"),
        ]
    fields = {
        "supplier_name": shop,
        "supplier_vat": vat,
        "invoice_number": reference,
        "issue_date": day.isoformat(),
        "total": f"{total:.2f}",
        "currency": "EUR",
        "vat": [
            {"rate": str(rate), "base": f"{base:.2f}", "amount": f"{tax:.2f}"}
            for rate, base, tax, _ in vat_lines
        ],
        "kind": "receipt",
        "language": language,
    }
    return Document(f"receipt-{number:03d}-{language}", "receipt", language, tuple(lines), fields)


def documents(count: int = DEFAULT_COUNT, seed: int = SEED) -> list[Document]:
    """``count`` invoices and ``count`` receipts, the languages in turn."""
    rng = random.Random(seed)
    out = []
    for number in range(count):
        language = LANGUAGES[number % len(LANGUAGES)]
        out.append(invoice(rng, number, language))
        out.append(receipt(rng, number, language))
    return out


# --- drawing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where lines go, in points."""

    width: float
    height: float
    margin: float
    font_size: float
    leading: float

    def baseline(self, index: int) -> float:
        """Distance of line ``index``'s baseline from the top of the page."""
        return self.margin + self.font_size + index * self.leading


def layout(doc: Document) -> Layout:
    if doc.doc_type == "receipt":
        font_size, margin = 8.5, 12.0
        leading = 1.35 * font_size
        height = 2 * margin + font_size + leading * len(doc.lines)
        return Layout(RECEIPT_WIDTH, height, margin, font_size, leading)
    return Layout(*A4, 60.0, 10.0, 15.0)


#: Helvetica's advance widths (AFM, thousandths of an em): flush-right text in the PDF.
_HELVETICA = {
    **dict.fromkeys("0123456789€$£_", 556), **dict.fromkeys(" ,./:;!Iijl'|", 278),
    **dict.fromkeys("-()r", 333), **dict.fromkeys("ft", 278), **dict.fromkeys("ABEKPSVXY", 667),
    **dict.fromkeys("CDHNRUw", 722), **dict.fromkeys("GOQ", 778), **dict.fromkeys("FTZ", 611),
    "J": 500, "L": 556, "M": 833, "W": 944, "m": 833, "%": 889, "+": 584,
    **dict.fromkeys("ckszvxyJ", 500),
}  # fmt: skip


def _helvetica_width(text: str, size: float) -> float:
    return sum(_HELVETICA.get(char, 556) for char in text) * size / 1000


def pdf(doc: Document) -> bytes:
    """The document as a one-page PDF with a text layer (Helvetica, WinAnsiEncoding)."""
    page = layout(doc)
    parts = [b"BT\n/F1 ", _num(page.font_size), b" Tf\n"]
    for index, line in enumerate(doc.lines):
        y = page.height - page.baseline(index)
        if line.left:
            parts += [
                b"1 0 0 1 ",
                _num(page.margin),
                b" ",
                _num(y),
                b" Tm ",
                _pdf_string(line.left),
                b" Tj\n",
            ]
        if line.right:
            x = page.width - page.margin - _helvetica_width(line.right, page.font_size)
            parts += [b"1 0 0 1 ", _num(x), b" ", _num(y), b" Tm ", _pdf_string(line.right), b" Tj\n"]
    parts.append(b"ET")
    return _build_pdf([b"".join(parts)], (page.width, page.height))


def _font(name: str, size: float) -> ImageFont.FreeTypeFont | None:
    path = FONT_DIR / name
    return ImageFont.truetype(str(path), size=round(size)) if path.exists() else None


def scan(doc: Document, dpi: int = SCAN_DPI) -> Image.Image:
    """The document drawn in grayscale at ``dpi`` (DejaVu Sans; Mono on a receipt); without DejaVu,
    its PDF rendered by poppler (``tests.documents.text_image``'s way)."""
    page = layout(doc)
    scale = dpi / 72
    mono = doc.doc_type == "receipt"
    regular = _font("DejaVuSansMono.ttf" if mono else "DejaVuSans.ttf", page.font_size * scale)
    bold = _font("DejaVuSansMono-Bold.ttf" if mono else "DejaVuSans-Bold.ttf", page.font_size * scale)
    if regular is None or bold is None:
        return _poppler_scan(doc, dpi)
    image = Image.new("L", (round(page.width * scale), round(page.height * scale)), 255)
    draw = ImageDraw.Draw(image)
    for index, line in enumerate(doc.lines):
        y = page.baseline(index) * scale
        font = bold if line.bold else regular
        if line.left:
            draw.text((page.margin * scale, y), line.left, fill=0, font=font, anchor="ls")
        if line.right:
            draw.text((image.width - page.margin * scale, y), line.right, fill=0, font=font, anchor="rs")
    return image


def _poppler_scan(doc: Document, dpi: int) -> Image.Image:
    import io
    import subprocess
    import tempfile

    if doc.doc_type == "invoice":
        with Image.open(io.BytesIO(text_image([line.text for line in doc.lines], dpi=dpi))) as image:
            return image.convert("L")
    with tempfile.TemporaryDirectory(prefix="evalset-") as tmp:
        source = Path(tmp, "page.pdf")
        source.write_bytes(pdf(doc))
        subprocess.run(
            ["pdftoppm", "-r", str(dpi), "-gray", "-png", "-singlefile", str(source), str(Path(tmp, "page"))],
            check=True,
            capture_output=True,
        )
        with Image.open(Path(tmp, "page.png")) as image:
            return image.convert("L")


def degrade(
    image: Image.Image, rng: random.Random, doc_type: str, rotation: int
) -> tuple[Image.Image, int, float]:
    """A phone photo of a 300-dpi page: returns the image, its dpi and its skew in degrees."""
    import numpy as np

    noise_rng = np.random.default_rng(rng.randrange(2**32))
    pixels = np.asarray(image, dtype=np.float32) / 255  # 1 paper, 0 ink
    height, width = pixels.shape
    paper, ink = rng.uniform(175, 215), rng.uniform(60, 110)
    darkness = 1 - pixels
    if doc_type == "receipt":  # thermal paper fades: the ink weakens down (or up) the slip
        fade = np.linspace(1.0, rng.uniform(0.45, 0.7), height, dtype=np.float32)
        darkness *= (fade if rng.random() < 0.5 else fade[::-1])[:, None]
    # uneven light across the sheet, from none to a shadow a global threshold cannot cut
    ramp = np.linspace(0, rng.uniform(0, 35), width, dtype=np.float32)
    ramp = (ramp if rng.random() < 0.5 else ramp[::-1]) - ramp.mean()
    values = paper - (paper - ink) * darkness + ramp[None, :]
    photo = Image.fromarray(np.clip(values, 0, 255).astype(np.uint8), "L")
    photo = photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.8, 1.5)))
    dpi = rng.choice((150, 175, 200))
    photo = photo.resize(
        (round(width * dpi / SCAN_DPI), round(height * dpi / SCAN_DPI)), Image.Resampling.BILINEAR
    )
    noisy = np.asarray(photo, dtype=np.float32) + noise_rng.normal(
        0, rng.uniform(4, 9), (photo.height, photo.width)
    )
    photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "L")
    skew = rng.uniform(1, 4) * rng.choice((-1, 1))
    photo = photo.rotate(skew, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=round(paper))
    if rotation:
        photo = photo.rotate(rotation, expand=True)
    return photo, dpi, round(skew, 2)


def low_resolution(image: Image.Image, dpi: int) -> Image.Image:
    """A 300-dpi page scanned again at ``dpi``, slightly blurred."""
    size = (round(image.width * dpi / SCAN_DPI), round(image.height * dpi / SCAN_DPI))
    with image.resize(size, Image.Resampling.BOX) as small:
        return small.filter(ImageFilter.GaussianBlur(0.6))


# --- the set --------------------------------------------------------------------------------------------


def generate(
    folder: str | Path, count: int = DEFAULT_COUNT, seed: int = SEED, kinds: tuple[str, ...] = KINDS
) -> list[Sample]:
    """Write ``count`` invoices and ``count`` receipts in each kind of page under ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    samples = []
    for index, doc in enumerate(documents(count, seed)):
        lines = tuple(line.text for line in doc.lines)

        def sample(path: Path, kind: str, **how) -> Sample:
            return Sample(path, kind, doc.language, doc.doc_type, doc.name, lines, doc.fields, **how)  # noqa: B023

        degrade_rng = random.Random(rng.randrange(2**32))
        if "born_digital" in kinds:
            path = folder / f"{doc.name}-born_digital.pdf"
            path.write_bytes(pdf(doc))
            samples.append(sample(path, "born_digital"))
        if {"clean_scan", "degraded_photo", "low_resolution"} & set(kinds):
            with scan(doc) as image:
                if "clean_scan" in kinds:
                    path = folder / f"{doc.name}-clean_scan.png"
                    image.save(path, dpi=(SCAN_DPI, SCAN_DPI), optimize=False)
                    samples.append(sample(path, "clean_scan"))
                if "degraded_photo" in kinds:
                    # one document in four (invoices and receipts alike) is photographed on its
                    # side or upside down
                    turned = index % 8 in (3, 6)
                    rotation = (90, 180, 270)[(index // 4) % 3] if turned else 0
                    photo, dpi, skew = degrade(image, degrade_rng, doc.doc_type, rotation)
                    path = folder / f"{doc.name}-degraded_photo.jpg"
                    photo.save(path, quality=degrade_rng.randint(70, 85), dpi=(dpi, dpi))
                    photo.close()
                    samples.append(sample(path, "degraded_photo", dpi=dpi, skew=skew, rotation=rotation))
                if "low_resolution" in kinds:
                    dpi = degrade_rng.choice((72, 80, 90, 100))
                    with low_resolution(image, dpi) as small:
                        path = folder / f"{doc.name}-low_resolution.png"
                        small.save(path)  # no dpi written: the reader must do without
                    samples.append(sample(path, "low_resolution", dpi=dpi))
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.evalset", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="invoices, and as many receipts")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    samples = generate(args.folder, args.count, args.seed)
    manifest = [{**asdict(s), "path": s.path.name} for s in samples]
    (args.folder / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    print(f"{len(samples)} pages in {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
