"""The fields of an invoice or a receipt (French, Dutch, English; mostly Belgian), read by rules from
the text of its pages: ``extract(pages)``.

Pure and deterministic: no Flask, SQL or network. The label vocabularies are data at the top.

``extract(pages: list[str]) -> dict`` takes the OCR or text-layer text of each page and returns the
fields it found, JSON-ready. Each is ``{"value", "page" (1-based), "source", "confidence" (0..1),
"method": "rules"}``; ``source`` is the exact slice of the page it came from (label through value when
labelled), taken from the page's NFC form. A field that was not found is absent: never null, never
invented. The fields:

- ``supplier_name``: a legal-form line of page 1 (SRL, NV, Ltd…), else the first line of the supplier
  VAT number's block, else the first line of page 1 that looks like a name (0.3: a guess).
- ``supplier_vat``: ``BE0123456749``, ``NL004495445B01``, ``FR40303265045``… in compact form; a VAT
  number in a customer's block (Client, Klant, Bill to…) is not the supplier's.
- ``invoice_number``: after an invoice, receipt, ticket or bon label.
- ``issue_date``, ``due_date``: ISO 8601; numbers are read day first (FR/NL/BE); month first only when
  day first is impossible. A date that does not exist (31/02/2025) is no date.
- ``total``: the amount to pay, ``"4350.00"``: labels that say "to pay" over "total incl. VAT" over a
  bare "amount"; among equals the largest on an invoice, the last on a receipt. Never without a label.
- ``currency``: ISO 4217 (EUR for € or EUR).
- ``vat``: ``[{"rate": "21", "base": "3595.04", "amount": "754.96"}]``, ``base`` when it is known.
- ``iban`` (the account to pay to: one named for a direct debit is the customer's, left out) and
  ``structured_communication`` (``+++123/4567/89002+++``, also read from ``***…***``).
- ``kind`` (``invoice`` or ``receipt``) and ``language`` (``fr``, ``nl``, ``en``), from cue words.

Identifiers are validated with python-stdnum: ``iban`` by ``stdnum.iban`` (mod 97 and each country's
structure and own check), ``supplier_vat`` by ``stdnum.eu.vat`` (``stdnum.gb.vat`` for GB),
``structured_communication`` by ``stdnum.be.ogm_vcs`` (first 10 digits mod 97, 0 read as 97, equal to
the last two). These three fields carry ``valid``.

Policy for an identifier that fails its check: FLAG, never omit silently and never pass. When no valid
one of that field is found, a candidate of exactly the right shape (an IBAN of its country's length
with an IBAN label or in groups of four, a country-prefixed or labelled VAT number, a communication
between +++ or ***) is reported with ``"valid": false`` and confidence 0.1, so that a person sees a
mistyped or tampered number; anything else is left out. Read ``valid`` before using the value.

OCR noise: labels match across line breaks and without accents; values are found on the label's line
(after any run of spaces) or, for text-layer tables, on the next line in the label's column. O/o and
l/I are read as 0 and 1 only where that is safe: inside an amount between a digit and a digit or
separator, and in the digit positions of an IBAN or communication, whose check then decides (valid
with lower confidence, or flagged). Spaces inside IBAN groups are dropped. No digit is ever changed.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from functools import cache, cached_property

from stdnum import iban as stdnum_iban
from stdnum import numdb
from stdnum.be import ogm_vcs
from stdnum.be import vat as be_vat
from stdnum.eu import vat as eu_vat
from stdnum.gb import vat as gb_vat

from workers.protocol.texts import MODEL_FIELD_MAX_CHARS

# fmt: off
# --- vocabularies -------------------------------------------------------------------------------
# Phrases are written lower case with their accents; they match without accents too, any case,
# across a line break between words, with "." optional. "{no}" is any of n°, nº, no, nr, numéro,
# nummer, number, #. The longest label wins where two overlap.

#: Labels of the amount to pay, by strength: 3 says "to pay", 2 "total (incl. VAT)", 1 is a bare word.
TOTAL_LABELS = {
    3: (
        "total à payer", "net à payer", "montant à payer", "solde à payer", "reste à payer",
        "somme à payer", "montant total à payer", "à payer", "montant dû", "solde dû",
        "totaal te betalen", "te betalen bedrag", "te betalen", "saldo te betalen", "nog te betalen",
        "openstaand saldo", "te voldoen", "amount due", "total due", "balance due", "amount payable",
        "total payable", "total to pay", "amount to pay", "please pay",
    ),
    2: (
        "total ttc", "total tvac", "total tva comprise", "total tva incluse", "total tvai",
        "montant ttc", "montant tvac", "montant total", "total général", "total", "totaux",
        "totaal incl. btw", "totaal inclusief btw", "totaal incl btw", "totaal btw inbegrepen",
        "totaalbedrag", "totaal bedrag", "totaal", "eindtotaal", "algemeen totaal", "total incl. vat",
        "total including vat", "total inc. vat", "total amount", "grand total", "invoice total",
    ),
    1: ("montant", "bedrag", "amount", "somme"),
}
#: Look like a total but are not the amount to pay; they only keep shorter labels out.
NOT_TOTAL_LABELS = (
    "sous-total", "sous total", "total ht", "total htva", "total hors tva", "montant ht", "montant htva",
    "montant hors tva", "total tva", "montant tva", "montant de la tva", "total remise", "total remises",
    "total des remises", "total économies", "total articles", "nombre d'articles", "acompte",
    "déjà payé", "montant payé", "payé", "rendu", "à rendre", "monnaie", "subtotaal", "sub-totaal",
    "totaal excl. btw", "totaal exclusief btw", "totaal excl btw", "bedrag excl. btw",
    "bedrag exclusief btw", "totaal btw", "btw-bedrag", "bedrag btw", "totaal korting",
    "totaal voordeel", "maatstaf van heffing", "aantal artikelen", "voorschot", "voorschotten",
    "reeds betaald", "betaald", "wisselgeld", "terug", "subtotal", "sub total", "sub-total",
    "total excl. vat", "total excluding vat", "total ex vat", "net total", "total net", "net amount",
    "total vat", "vat amount", "amount excl. vat", "total discount", "total savings", "total items",
    "amount paid", "already paid", "paid", "change", "change due",
)
#: Labels of the issue date, by strength.
ISSUE_DATE_LABELS = {
    2: (
        "date de facture", "date de la facture", "date facture", "date d'émission", "date du ticket",
        "date de facturation", "factuurdatum", "datum factuur", "factuur datum", "datum van de factuur",
        "facturatiedatum", "datum kassabon", "invoice date", "date of invoice", "date of issue",
        "issue date", "date issued", "receipt date",
    ),
    1: ("date", "datum", "dated", ", le"),
}
#: Labels of the due date.
DUE_DATE_LABELS = (
    "date d'échéance", "échéance", "date limite de paiement", "à payer avant le", "à payer pour le",
    "payable avant le", "payable au plus tard le", "à régler avant le", "au plus tard le", "vervaldatum",
    "vervaldag", "uiterste betaaldatum", "uiterste betalingsdatum", "te betalen vóór", "te betalen voor",
    "te betalen tegen", "betalen vóór", "betaalbaar vóór", "betaaldatum", "due date", "payment due",
    "payment due date", "due by", "pay by", "payable by", "date due", "due on",
)
#: Other dates: they keep their date from being taken for the issue date.
OTHER_DATE_LABELS = (
    "date de livraison", "date de commande", "date d'expédition", "date de prestation",
    "date d'intervention", "date de valeur", "date de naissance", "période", "période de facturation",
    "leverdatum", "leveringsdatum", "besteldatum", "valutadatum", "geboortedatum", "periode",
    "verbruiksperiode", "facturatieperiode", "delivery date", "order date", "service date",
    "date of birth", "period", "billing period",
)
#: Labels of the invoice or receipt number: 2 name a number, 1 is the document's name alone.
NUMBER_LABELS = {
    2: (
        "facture {no}", "{no} de facture", "{no} facture", "numéro de facture", "note de crédit {no}",
        "{no} de la facture", "factuur {no}", "factuurnummer", "factuurnr", "creditnota {no}",
        "invoice {no}", "invoice number", "credit note {no}", "ticket {no}", "{no} de ticket",
        "{no} ticket", "ticketnummer", "reçu {no}", "bon {no}", "bonnummer", "kassabon {no}",
        "kasticket {no}", "receipt {no}", "transaction {no}", "transactie {no}",
    ),
    1: ("facture", "factuur", "invoice", "ticket", "reçu", "bon", "kassabon", "kasticket", "receipt"),
}
#: Other numbers beside an invoice label; they keep the shorter invoice labels out.
NOT_NUMBER_LABELS = (
    "bon de commande", "bon de livraison", "commande {no}", "{no} de commande", "{no} client",
    "{no} de client", "client {no}", "numéro client", "référence client", "votre référence",
    "adresse de facturation", "facture d'acompte", "klantnummer", "klantnr", "klant {no}", "bestelbon",
    "bestelnummer", "bestelling {no}", "leveringsbon", "uw referentie", "factuuradres", "contractnummer",
    "order {no}", "order number", "purchase order", "customer {no}", "customer number", "account {no}",
    "your reference", "invoice address", "billing address",
)
#: The customer's side of an invoice: a block under one of these is not the supplier's.
CUSTOMER_CUES = (
    "client", "cliente", "facturé à", "facturer à", "adresse de facturation", "destinataire",
    "à l'attention de", "acheteur", "votre {no} tva", "votre tva", "tva client", "klant", "factuuradres",
    "t.a.v.", "ter attentie van", "koper", "uw btw", "btw klant", "customer", "bill to", "billed to",
    "invoice to", "sold to", "buyer", "your vat", "customer vat",
)
#: Words that name a VAT rate line or a VAT number.
VAT_WORDS = ("tva", "t.v.a.", "btw", "b.t.w.", "vat", "mwst", "taxe")
#: Words that say a number beside them is a VAT or company number.
VAT_NUMBER_WORDS = VAT_WORDS + (
    "entreprise", "ondernemingsnummer", "ondernemingsnr", "onderneming", "kbo", "bce", "rpm", "rpr",
    "company", "reg",
)
#: Words that say a number beside them is a bank account.
IBAN_WORDS = ("iban", "compte", "rekening", "rekeningnummer", "bankrekening", "account", "bank", "banque")
#: Say the account beside them is the customer's (a direct debit), not the one to pay to.
IBAN_CUSTOMER_CUES = (
    "votre compte", "vos comptes", "uw rekening", "your account", "domiciliation", "domiciliëring",
    "gedomicilieerd", "domicilié", "prélevé", "prélèvement", "afgeschreven", "debited", "direct debit",
)
#: Say the account beside them is the one to pay to (they win over a customer cue).
IBAN_SUPPLIER_CUES = (
    "notre compte", "onze rekening", "our account", "à verser", "verser", "virer", "over te schrijven",
    "overschrijven", "gelieve", "veuillez", "pay to", "payable to", "bénéficiaire", "begunstigde",
    "beneficiary",
)
#: Labels of a structured communication written without its +++ or *** marks.
COMMUNICATION_LABELS = (
    "communication structurée", "communication", "gestructureerde mededeling", "mededeling",
    "structured communication", "payment reference",
)
#: Legal forms that make a line a company's name, written as here anywhere in the line...
LEGAL_FORMS = (
    "SA", "S.A.", "SPRL", "SRL", "SC", "SCRL", "SCS", "SNC", "ASBL", "SAS", "SARL", "EURL", "SCA",
    "NV", "N.V.", "BV", "B.V.", "BVBA", "CV", "CVBA", "CommV", "VOF", "VZW",
    "LTD", "Ltd", "Ltd.", "Limited", "PLC", "LLC", "Inc", "Inc.", "LLP", "GmbH", "AG",
)
#: ... or in any case at the end of the line (these are no everyday words).
LEGAL_FORMS_AT_END = (
    "srl", "sprl", "scrl", "asbl", "sarl", "nv", "bv", "bvba", "cvba", "vzw", "ltd", "limited", "plc",
    "llc", "inc", "gmbh",
)
#: Street words: with a number, a line of an address (a header's name stands above one).
STREET_WORDS = (
    "rue", "avenue", "av.", "boulevard", "bd", "chaussée", "place", "chemin", "quai", "straat", "laan",
    "steenweg", "plein", "markt", "lei", "dreef", "weg", "street", "road", "lane", "square", "way",
)
#: Cue words of a document's kind, by weight; each counts once.
KIND_CUES = {
    "receipt": {
        2: ("ticket de caisse", "ticket", "reçu", "kassabon", "kasticket", "receipt", "till receipt"),
        1: (
            "bon", "caisse", "kassa", "till", "carte bancaire", "bancontact", "maestro", "payconiq",
            "espèces", "contant", "cash", "pin", "card", "sans contact", "contactless", "rendu",
            "monnaie", "wisselgeld", "change", "merci de votre visite", "merci pour votre visite",
            "bedankt voor uw bezoek", "tot ziens", "thank you for shopping", "operator", "caissier",
            "kassier",
        ),
    },
    "invoice": {
        2: ("facture", "factuur", "invoice", "note de crédit", "creditnota", "credit note"),
        1: (
            "échéance", "vervaldag", "vervaldatum", "due date", "communication structurée",
            "gestructureerde mededeling", "conditions générales", "algemene voorwaarden",
            "terms and conditions", "iban", "bic",
        ),
    },
}
#: Words of each language: its label words (the first one seen is the source), then short words
#: that neither other language uses.
LANGUAGE_WORDS = {
    "fr": (
        ("facture", "échéance", "montant", "payer", "tva", "htva", "tvac", "ttc", "reçu", "merci",
         "espèces", "rendu", "caisse", "communication", "compte", "client", "prix", "quantité", "sous-total"),
        ("le", "la", "les", "du", "des", "et", "pour", "votre", "sur", "avec"),
    ),
    "nl": (
        ("factuur", "vervaldag", "vervaldatum", "bedrag", "betalen", "btw", "totaal", "kassabon",
         "kasticket", "bedankt", "contant", "wisselgeld", "kassa", "mededeling", "rekening", "klant",
         "prijs", "aantal"),
        ("het", "een", "van", "voor", "uw", "met", "op", "te"),
    ),
    "en": (
        ("invoice", "due", "amount", "payment", "vat", "receipt", "thank", "cash", "change", "account",
         "customer", "price", "quantity", "subtotal"),
        ("the", "and", "of", "your", "to", "for", "with"),
    ),
}
#: Month names and abbreviations in the three languages.
MONTHS = {
    1: ("janvier", "janv", "januari", "january", "jan"),
    2: ("février", "févr", "fév", "februari", "february", "feb"),
    3: ("mars", "maart", "mrt", "march", "mar"),
    4: ("avril", "avr", "april", "apr"),
    5: ("mai", "mei", "may"),
    6: ("juin", "juni", "june", "jun"),
    7: ("juillet", "juil", "juli", "july", "jul"),
    8: ("août", "augustus", "august", "aug"),
    9: ("septembre", "september", "sept", "sep"),
    10: ("octobre", "oktober", "october", "oct", "okt"),
    11: ("novembre", "november", "nov"),
    12: ("décembre", "déc", "december", "dec"),
}
#: A line with one of these is a period (du … au, van … tot): its dates are not the issue date.
PERIOD_CUES = (r"\bdu\b.*\bau\b", r"\bvan\b.*\btot\b", r"\bfrom\b.*\b(?:to|until)\b", r"p[ée]riod")
#: A rate line with one of these is a discount, not VAT.
NOT_VAT_CUES = ("remise", "réduction", "korting", "discount", "promo", "acompte", "voorschot", "rabais")
#: Currency marks and the ISO code each stands for.
CURRENCIES = {"€": "EUR", "EUR": "EUR", "EURO": "EUR", "EUROS": "EUR", "£": "GBP", "GBP": "GBP",
              "$": "USD", "USD": "USD", "CHF": "CHF"}

#: Confidence of an identifier that fails its check (see the policy above).
INVALID_CONFIDENCE = 0.1
#: Taken off a value read with O/l as 0/1.
OCR_FIXED_PENALTY = 0.15
# fmt: on


# --- the vocabularies compiled ---------------------------------------------------------------------

_ACCENTS = {
    "é": "eéèêë", "è": "eéèêë", "ê": "eéèêë", "ë": "eéèêë", "à": "aàâä", "â": "aàâä", "ä": "aàâä",
    "î": "iîï", "ï": "iîï", "ô": "oôö", "ö": "oôö", "û": "uùûü", "ù": "uùûü", "ü": "uùûü", "ç": "cç",
    "ó": "oóô",
}  # fmt: skip
_NO = r"(?:n[ \t]?[°º˚]|n[or]\.|n[or](?!\w)|num[ée]ro|nummer|number|#)"
#: Between two words of a label: a space or two, or a line break.
_GAP = r"(?:[ \t\u00a0]{1,2}|[ \t\u00a0]*\n[ \t\u00a0]*)"
_FLAGS = re.IGNORECASE


def _body(phrase: str) -> str:
    parts = []
    rest = phrase
    while rest:
        if rest.startswith("{no}"):
            parts.append(_NO)
            rest = rest[4:]
            continue
        char, rest = rest[0], rest[1:]
        if char == " ":
            parts.append(_GAP)
        elif char == "-":
            parts.append(r"[ \t\-]?")
        elif char in "'’":
            parts.append(r"['’`´]?[ \t]?")
        elif char == ".":
            parts.append(r"\.?")
        elif char in _ACCENTS:
            parts.append(f"[{_ACCENTS[char]}]")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _phrase(phrase: str) -> str:
    """A vocabulary phrase as a regular expression (see the note above the vocabularies)."""
    head = r"(?<!\w)" if phrase[0].isalnum() or phrase.startswith("{") else ""
    tail = r"(?!\w)" if phrase.rstrip(".")[-1].isalnum() else ""
    return head + _body(phrase) + tail


def _any_of(phrases) -> re.Pattern:
    return re.compile("|".join(_phrase(p) for p in sorted(phrases, key=len, reverse=True)), _FLAGS)


def _plain(text: str) -> str:
    """Lower case without accents."""
    return "".join(c for c in unicodedata.normalize("NFD", text.lower()) if not unicodedata.combining(c))


@dataclass(frozen=True)
class _Label:
    group: str  # labels of one group compete for the same words: amount, date, number, party
    field: str  # what the value after it is: total, issue_date, due_date, invoice_number; "" for none
    strength: int
    regex: re.Pattern


def _labels() -> tuple[_Label, ...]:
    table = [("amount", "total", s, p) for s, ps in TOTAL_LABELS.items() for p in ps]
    table += [("amount", "", 0, p) for p in NOT_TOTAL_LABELS]
    table += [("date", "issue_date", s, p) for s, ps in ISSUE_DATE_LABELS.items() for p in ps]
    table += [("date", "due_date", 2, p) for p in DUE_DATE_LABELS]
    table += [("date", "", 0, p) for p in OTHER_DATE_LABELS]
    table += [("number", "invoice_number", s, p) for s, ps in NUMBER_LABELS.items() for p in ps]
    table += [("number", "", 0, p) for p in NOT_NUMBER_LABELS]
    table += [("party", "", 0, p) for p in CUSTOMER_CUES]
    return tuple(_Label(g, f, s, re.compile(_phrase(p), _FLAGS)) for g, f, s, p in table)


_LABELS = _labels()
_CUSTOMER = _any_of(CUSTOMER_CUES)
_CUSTOMER_AT_START = re.compile(r"^\W*(?:" + _CUSTOMER.pattern + ")", _FLAGS)
_VAT_WORD = _any_of(VAT_WORDS)
_VAT_NUMBER_WORD = _any_of(VAT_NUMBER_WORDS)
_IBAN_WORD = _any_of(IBAN_WORDS)
_IBAN_CUSTOMER = _any_of(IBAN_CUSTOMER_CUES)
_IBAN_SUPPLIER = _any_of(IBAN_SUPPLIER_CUES)
_COMMUNICATION_LABEL = _any_of(COMMUNICATION_LABELS)
_PERIOD = re.compile("|".join(PERIOD_CUES), _FLAGS)
_NOT_VAT = _any_of(NOT_VAT_CUES)
_KIND = {kind: {w: _any_of(ps) for w, ps in cues.items()} for kind, cues in KIND_CUES.items()}
_LANGUAGE = {lang: (_any_of(labels), _any_of(words)) for lang, (labels, words) in LANGUAGE_WORDS.items()}
_TITLE = re.compile(
    r"^\W*(?:" + _any_of(KIND_CUES["receipt"][2] + KIND_CUES["invoice"][2]).pattern + r")\W*$", _FLAGS
)
_LEGAL_FORM = re.compile(
    r"(?<!\w)(?:" + "|".join(re.escape(f) for f in sorted(LEGAL_FORMS, key=len, reverse=True)) + r")(?!\w)"
)
_LEGAL_FORM_AT_END = re.compile(r"(?<!\w)(?:" + "|".join(LEGAL_FORMS_AT_END) + r")\.?\W*$", _FLAGS)
_MONTH_NUMBER = {_plain(name): number for number, names in MONTHS.items() for name in names}
_MONTH = "|".join(
    _body(n) for n in sorted((n for names in MONTHS.values() for n in names), key=len, reverse=True)
)
_ADDRESS = re.compile(
    r"(?<!\d)[1-9]\d{3}[ \t]+[^\W\d]{2}"  # 1050 Bruxelles
    r"|(?<!\w)[A-Z]{1,2}\d[A-Z\d]?[ \t]\d[A-Z]{2}(?!\w)"  # CT1 2AB
    rf"|(?:{_any_of(STREET_WORDS).pattern}).*\d|\d.*(?:{_any_of(STREET_WORDS).pattern})",
    _FLAGS,
)
_DATE_SHAPE = re.compile(r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}|\d{4}[/.\-]\d{1,2}[/.\-]\d{1,2}")
_CURRENCY = re.compile(
    r"€|£|\$|(?<![A-Za-z])(?:EUR|EUROS?|GBP|USD|CHF)(?![A-Za-z])|(?<![A-Za-z])[Ee]uros?(?![A-Za-z])"
)


# --- values in the text ----------------------------------------------------------------------------

_D = "[0-9OolI]"  # a digit, or a letter OCR gives for one (read as one only where safe)
_AMOUNT = re.compile(
    r"(?<![\w.,/\-])(?P<sign>-[ \t]?)?(?P<num>"
    rf"\d{_D}{{0,2}}(?:[ .\u00a0\u202f']{_D}{{3}})+,{_D}{{2}}"  # 4 350,00  4.350,00
    rf"|\d{_D}{{0,2}}(?:[,\u00a0\u202f' ]{_D}{{3}})+\.{_D}{{2}}"  # 4,350.00
    rf"|\d{_D}*[.,]{_D}{{2}}"  # 4350,00  4350.00
    r")(?![0-9OolI]|[.,/]\d)(?P<trailing>-(?!\w))?"
)
#: After an amount: a rate, a quantity or a price per unit, no sum of money.
_NOT_MONEY_AFTER = re.compile(
    r"[ \t]*(?:%|(?:€|eur)?[ \t]*/|kwh|mwh|kw(?!\w)|m³|m3(?!\w)|m²|kg(?!\w)|km(?!\w)|l(?!\w)|ltr(?!\w))",
    _FLAGS,
)
_OCR_DIGITS = str.maketrans("OolI", "0011")
_RATE = re.compile(r"(?<![\d.,])(\d{1,2}(?:[.,]\d{1,2})?)[ \t]?%")
_NUMERIC_DATE = re.compile(
    r"(?<![\w/.\-])(?P<a>\d{1,2})[ ]?(?P<s>[/.\-])[ ]?(?P<b>\d{1,2})[ ]?(?P=s)[ ]?(?P<y>\d{4}|\d{2})"
    r"(?!\d|[/.\-]\d)"
)
_ISO_DATE = re.compile(
    r"(?<![\w/.\-])(?P<y>\d{4})(?P<s>[/.\-])(?P<b>\d{1,2})(?P=s)(?P<a>\d{1,2})(?!\d|[/.\-]\d)"
)
_DAY_MONTH_DATE = re.compile(
    rf"(?<!\w)(?P<a>\d{{1,2}})(?:er|e|ste|de|st|nd|rd|th)?\.?(?:[ \t]+|[ \t]*-[ \t]*)(?P<m>{_MONTH})(?!\w)\.?"
    r"(?:[ \t]*[,\-][ \t]*|[ \t]+)(?P<y>\d{4})(?!\d)",
    _FLAGS,
)
_MONTH_DAY_DATE = re.compile(
    rf"(?<!\w)(?P<m>{_MONTH})(?!\w)\.?[ \t]+(?P<a>\d{{1,2}})(?:st|nd|rd|th)?(?!\d)"
    r"(?:[ \t]*,[ \t]*|[ \t]+)(?P<y>\d{4})(?!\d)",
    _FLAGS,
)
_ID = re.compile(r"(?<![\w/\-.])[A-Za-z0-9](?:[A-Za-z0-9/\-_.]*[A-Za-z0-9])?(?![\w/\-])")
#: What may stand between a number label and its number.
_ID_SEPARATORS = re.compile(r"[ \t:#=.\-–—]*")
_IBAN_START = re.compile(r"(?<![A-Za-z0-9])(?P<cc>[A-Z]{2})[ \u00a0]?[0-9OolI]{2}")
_OGM_MARKED = re.compile(
    r"(?P<open>[+*](?:[ \t]?[+*]){1,2})[ \t]*(?P<a>[0-9OolI]{3})[ \t]*/[ \t]*(?P<b>[0-9OolI]{4})[ \t]*/"
    r"[ \t]*(?P<c>[0-9OolI]{5})[ \t]*(?P<close>[+*](?:[ \t]?[+*]){1,2})"
)
_OGM_BARE = re.compile(
    r"(?<![\d/+*])(?P<a>\d{3})[ \t]*/[ \t]*(?P<b>\d{4})[ \t]*/[ \t]*(?P<c>\d{5})(?![\d/+*])"
)
#: VAT numbers after their country code, by country (validated by stdnum afterwards).
VAT_NUMBER_SHAPES = {
    "BE": r"(?:[01][ .]?\d{3}|\d{3})[ .]?\d{3}[ .]?\d{3}",
    "NL": r"\d{9}[ .]?B[ .]?\d{2}",
    "FR": r"[0-9A-HJ-NP-Z]{2}[ .]?\d{3}[ .]?\d{3}[ .]?\d{3}",
    "LU": r"\d{8}",
    "DE": r"\d{9}",
    "GB": r"\d{3}[ .]?\d{4}[ .]?\d{2}(?:[ .]?\d{3})?",
    "AT": r"U\d{8}",
    "ES": r"[0-9A-Z]\d{7}[0-9A-Z]",
    "IT": r"\d{11}",
    "PT": r"\d{9}",
    "PL": r"\d{10}",
    "DK": r"\d{8}",
    "FI": r"\d{8}",
    "SE": r"\d{12}",
}
_VAT_PREFIXED = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    + "|".join(f"(?P<{cc}>{cc}[ .:\\-]?{shape})" for cc, shape in VAT_NUMBER_SHAPES.items())
    + r")(?![0-9A-Za-z])"
)
#: A Belgian company number without BE, read only after a VAT or company label.
_BE_NUMBER = re.compile(
    r"(?<![\w.])(?:[01][ .]?\d{3}[ .]\d{3}[ .]\d{3}|\d{3}[ .]\d{3}[ .]\d{3}|[01]\d{9})(?![\w.])"
)
_SEGMENT = re.compile(r"\S+(?:[ \t]{1,2}\S+)*")


@dataclass(frozen=True)
class _Found:
    """A value found in a page's text at [start, end)."""

    start: int
    end: int
    value: str
    factor: float = 1.0  # below 1 when read with a guess (O/l read as 0/1, month first, two-digit year)


@dataclass(frozen=True)
class _Hit:
    label: _Label
    start: int
    end: int


def _amount_value(num: str) -> str | None:
    """``4 350,00``, ``4.350,00``, ``4,350.00``, ``4350,00`` as ``4350.00``; None where a letter
    standing for a digit is not between a digit and a digit or separator."""
    for run in re.finditer("[OolI]+", num):
        before = num[run.start() - 1] if run.start() else ""
        after = num[run.end()] if run.end() < len(num) else ""
        if not before.isdigit() or not (after.isdigit() or after in (".", ",")):
            return None
    compact = re.sub(r"[\s\u00a0\u202f]", "", num.translate(_OCR_DIGITS))
    whole = re.sub(r"[.,']", "", compact[:-3])
    return f"{int(whole)}.{compact[-2:]}"


def _date_value(day: int, month: int, year: int) -> str | None:
    if not 1900 <= year <= 2099:
        return None
    try:
        return date(year, month, day).isoformat()
    except ValueError:
        return None


def _dates_in(text: str) -> list[_Found]:
    found = []
    for regex in (_ISO_DATE, _NUMERIC_DATE, _DAY_MONTH_DATE, _MONTH_DAY_DATE):
        for m in regex.finditer(text):
            year, factor = int(m["y"]), 1.0
            if len(m["y"]) == 2:
                year, factor = 2000 + year, 0.9
            if "m" in m.groupdict():
                value = _date_value(int(m["a"]), _MONTH_NUMBER[_plain(m["m"])], year)
            else:
                value = _date_value(int(m["a"]), int(m["b"]), year)
                if value is None and regex is _NUMERIC_DATE:  # 03/25/2025: only month first fits
                    value, factor = _date_value(int(m["b"]), int(m["a"]), year), factor * 0.7
            if value:
                found.append(_Found(m.start(), m.end(), value, factor))
    return _without_overlaps(found)


def _without_overlaps(found: list[_Found]) -> list[_Found]:
    kept: list[_Found] = []
    for f in sorted(found, key=lambda f: (f.start, f.start - f.end)):
        if not kept or f.start >= kept[-1].end:
            kept.append(f)
    return kept


@dataclass
class _Page:
    number: int
    text: str
    _line_starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]

    # --- lines and columns ---

    @property
    def line_count(self) -> int:
        return len(self._line_starts)

    def line_of(self, pos: int) -> int:
        return bisect_right(self._line_starts, pos) - 1

    def line_span(self, line: int) -> tuple[int, int]:
        start = self._line_starts[line]
        end = self._line_starts[line + 1] - 1 if line + 1 < len(self._line_starts) else len(self.text)
        return start, end

    def line_text(self, line: int) -> str:
        start, end = self.line_span(line)
        return self.text[start:end]

    def col(self, pos: int) -> int:
        return pos - self._line_starts[self.line_of(pos)]

    def segment_at(self, start: int, end: int) -> tuple[int, int]:
        """The columns of the run of text (words apart by at most two spaces) around [start, end)."""
        line = self.line_of(start)
        c0, c1 = self.col(start), self.col(start) + (end - start)
        for m in _SEGMENT.finditer(self.line_text(line)):
            if m.start() < c1 and c0 < m.end():
                return min(m.start(), c0), max(m.end(), c1)
        return c0, c1

    # --- what is in it ---

    @cached_property
    def hits(self) -> list[_Hit]:
        """Labels found, the longest first where two of one group overlap, in the order of the text."""
        raw = [_Hit(label, m.start(), m.end()) for label in _LABELS for m in label.regex.finditer(self.text)]
        kept: list[_Hit] = []
        for hit in sorted(raw, key=lambda h: (h.start - h.end, -h.label.strength, h.start)):
            if all(
                k.label.group != hit.label.group or hit.end <= k.start or k.end <= hit.start for k in kept
            ):
                kept.append(hit)
        # "facture" in "date de facture", "invoice" in "invoice date" name no number
        kept = [
            h
            for h in kept
            if h.label.group != "number"
            or not any(k.label.group != "number" and k.start <= h.start and h.end <= k.end for k in kept)
        ]
        return sorted(kept, key=lambda h: h.start)

    @cached_property
    def amounts(self) -> list[_Found]:
        found = []
        for m in _AMOUNT.finditer(self.text):
            value = _amount_value(m["num"])
            if value is None or _NOT_MONEY_AFTER.match(self.text, m.end()):
                continue
            if (m["sign"] or m["trailing"]) and Decimal(value):
                value = "-" + value
            fixed = any(c in "OolI" for c in m["num"])
            found.append(_Found(m.start(), m.end(), value, 1 - OCR_FIXED_PENALTY if fixed else 1.0))
        return found

    @cached_property
    def dates(self) -> list[_Found]:
        return _dates_in(self.text)

    @cached_property
    def ids(self) -> list[_Found]:
        found = []
        for m in _ID.finditer(self.text):
            token = m.group()
            if not any(c.isdigit() for c in token) or len(token) > 30:
                continue
            if _DATE_SHAPE.fullmatch(token):  # a date, even one that does not exist
                continue
            if _AMOUNT.fullmatch(token):
                continue
            found.append(_Found(m.start(), m.end(), token))
        return found


# --- labels and their values -------------------------------------------------------------------------


def _after(page: _Page, hit: _Hit, found: list[_Found], next_line: bool) -> list[_Found]:
    """The values after a label: on its line up to the next label, else (``next_line``) on the next
    non-empty line, in the label's column (a text-layer table)."""
    line = page.line_of(hit.end)
    line_start, line_end = page.line_span(line)
    stop = min((h.start for h in page.hits if hit.end <= h.start < line_end), default=line_end)
    same = [f for f in found if f.start >= hit.end and f.end <= stop]
    if same or not next_line:
        return same
    following = line + 1
    while following < page.line_count and following <= line + 2 and not page.line_text(following).strip():
        following += 1
    if following >= page.line_count:
        return []
    start, end = page.line_span(following)
    if any(start <= h.start < end and h.label.group == hit.label.group for h in page.hits):
        return []  # the next line has a label of its own
    on_label_line = [h for h in page.hits if line_start < h.end <= line_end]

    def distance(h: _Hit, f: _Found) -> int:
        c0 = page.col(h.start) if h.start >= line_start else 0
        c1 = page.col(h.end)
        v0, v1 = page.col(f.start), page.col(f.end)
        return max(0, v0 - c1, c0 - v1)

    out = []
    for f in (f for f in found if f.start >= start and f.end <= end):
        mine = distance(hit, f)
        nearest = min(distance(h, f) for h in on_label_line)
        alone = len(on_label_line) == 1 and not _CURRENCY.sub("", page.text[start : f.start]).strip()
        if alone or (mine <= 4 and mine == nearest):
            out.append(f)
    return out


def _field(
    value, page: _Page, start: int, end: int, confidence: float, method: str = "rules", **extra
) -> dict:
    out = {"value": value, "page": page.number, "source": page.text[start:end]}
    out.update(extra)
    out.update({"confidence": round(max(0.0, min(1.0, confidence)), 2), "method": method})
    return out


def _total(pages: list[_Page], kind: str | None) -> tuple[dict, tuple[_Page, int, int]] | None:
    candidates = []
    for page in pages:
        for hit in page.hits:
            if hit.label.field == "total":
                found = _after(page, hit, page.amounts, next_line=hit.label.strength >= 2)
                if found:
                    candidates.append(
                        (hit.label.strength, page, hit, max(found, key=lambda f: Decimal(f.value)))
                    )
    if not candidates:
        return None
    strongest = max(c[0] for c in candidates)
    pool = [c for c in candidates if c[0] == strongest]
    if kind == "receipt":
        strength, page, hit, found = pool[-1]
    else:
        strength, page, hit, found = max(pool, key=lambda c: Decimal(c[3].value))
    confidence = {3: 0.9, 2: 0.85, 1: 0.6}[strength] * found.factor
    if len({c[3].value for c in pool}) > 1:
        confidence -= 0.1
    return _field(found.value, page, hit.start, found.end, confidence), (page, hit.start, found.end)


def _labelled(pages: list[_Page], field_name: str, values: str, next_line_from: int):
    """The strongest label of ``field_name`` with a value after it, the first among equals."""
    best = None
    for page in pages:
        for hit in page.hits:
            if hit.label.field != field_name:
                continue
            found = _after(page, hit, getattr(page, values), next_line=hit.label.strength >= next_line_from)
            if values == "ids":  # a number stands right after its label on the label's line
                line_end = page.line_span(page.line_of(hit.end))[1]
                found = [
                    f
                    for f in found
                    if f.start > line_end or _ID_SEPARATORS.fullmatch(page.text, hit.end, f.start)
                ]
            if found and (best is None or hit.label.strength > best[2].label.strength):
                best = (page, found[0], hit)
    return best


def _claimed_dates(pages: list[_Page]) -> set[tuple[int, int]]:
    """Dates after any date label: (page, start)."""
    return {
        (page.number, found[0].start)
        for page in pages
        for hit in page.hits
        if hit.label.group == "date" and (found := _after(page, hit, page.dates, next_line=True))
    }


def _issue_date(pages: list[_Page], kind: str | None) -> dict | None:
    best = _labelled(pages, "issue_date", "dates", next_line_from=1)
    if best:
        page, found, hit = best
        return _field(
            found.value, page, hit.start, found.end, (0.9 if hit.label.strength > 1 else 0.8) * found.factor
        )
    # unlabelled: the first date of page 1 that no label claims and that is no period's
    page = pages[0]
    claimed = _claimed_dates(pages)
    for found in page.dates:
        if (page.number, found.start) in claimed or _PERIOD.search(page.line_text(page.line_of(found.start))):
            continue
        return _field(
            found.value, page, found.start, found.end, (0.6 if kind == "receipt" else 0.4) * found.factor
        )
    return None


def _due_date(pages: list[_Page], issue: dict | None) -> dict | None:
    best = _labelled(pages, "due_date", "dates", next_line_from=1)
    if not best:
        return None
    page, found, hit = best
    confidence = 0.9 * found.factor
    if issue and found.value < issue["value"]:
        confidence = 0.5
    return _field(found.value, page, hit.start, found.end, confidence)


def _invoice_number(pages: list[_Page]) -> dict | None:
    best = _labelled(pages, "invoice_number", "ids", next_line_from=2)
    if not best:
        return None
    page, found, hit = best
    return _field(found.value, page, hit.start, found.end, 0.9 if hit.label.strength > 1 else 0.6)


# --- VAT lines ----------------------------------------------------------------------------------------


def _rate(text: str) -> str:
    rate = Decimal(text.replace(",", "."))
    return format(rate.normalize(), "f") if rate else "0"


def _vat_line(page: _Page, line: int) -> tuple[dict, float] | None:
    start, end = page.line_span(line)
    text = page.text[start:end]
    rates = {_rate(m[1]) for m in _RATE.finditer(text)}
    if len(rates) != 1 or Decimal(next(iter(rates))) > 30 or _NOT_VAT.search(text):
        return None
    if any(start <= h.start < end and h.label.field == "total" and h.label.strength >= 2 for h in page.hits):
        return None  # a total incl. VAT that names its rate
    amounts = [Decimal(f.value) for f in page.amounts if start <= f.start < end]
    if not amounts:
        return None
    rate = next(iter(rates))
    labelled = bool(_VAT_WORD.search(text))
    if not labelled:  # a row of a table whose header says TVA / BTW / VAT
        above = [line - k for k in range(1, 5) if line - k >= 0]
        header = False
        for k in above:
            k_start, k_end = page.line_span(k)
            if not page.text[k_start:k_end].strip():
                break
            if _VAT_WORD.search(page.text[k_start:k_end]) and not any(
                k_start <= f.start < k_end for f in page.amounts
            ):
                header = True
                break
        if not header:
            return None
    for i, base in enumerate(amounts):
        for j, amount in enumerate(amounts):
            if i == j or amount > base or not base:
                continue
            tolerance = max(Decimal("0.02"), abs(amount) * Decimal("0.005"))
            if abs(base * Decimal(rate) / 100 - amount) <= tolerance:
                return {"rate": rate, "base": f"{base:.2f}", "amount": f"{amount:.2f}"}, 0.9
    if labelled and len(amounts) == 1:
        return {"rate": rate, "amount": f"{amounts[0]:.2f}"}, 0.6
    return None


def _vat(pages: list[_Page]) -> dict | None:
    """VAT lines of the last page that has any: one rate each, with an amount (and a base when an
    amount is the rate of another)."""
    for page in reversed(pages):
        entries, lines, confidences = [], [], []
        for line in range(page.line_count):
            read = _vat_line(page, line)
            if read and read[0] not in entries:
                entries.append(read[0])
                lines.append(line)
                confidences.append(read[1])
        if entries:
            start = page.line_span(lines[0])[0]
            end = page.line_span(lines[-1])[1]
            while page.text[start].isspace():
                start += 1
            return _field(entries, page, start, end, min(confidences))
    return None


# --- identifiers --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Identifier:
    page: _Page
    start: int
    end: int
    value: str
    valid: bool
    labelled: bool
    fixed: bool = False  # read with O/l as 0/1
    customer: bool = False  # the customer's, not the supplier's
    shaped: bool = True  # exactly the shape of one: worth flagging when invalid


def _line_before(page: _Page, pos: int) -> str:
    """The text of the line before ``pos`` and of the line above it."""
    line = page.line_of(pos)
    start = page.line_span(line)[0]
    above = page.line_text(line - 1) if line else ""
    return above + "\n" + page.text[start:pos]


def _in_customer_block(page: _Page, start: int, end: int) -> bool:
    """Whether a customer cue (Client, Klant, Bill to…) stands before [start, end) on its line, or at the
    head of a run of text above it in the same column, within its block (up to two blank lines: OCR
    puts a stray one inside a block now and then)."""
    line = page.line_of(start)
    s0, s1 = page.segment_at(start, end)
    line_start = page.line_span(line)[0]
    if _CUSTOMER.search(page.text[line_start + s0 : start]):
        return True
    blank = 0
    for above in range(line - 1, max(-1, line - 9), -1):
        text = page.line_text(above)
        if not text.strip():
            # OCR puts a stray blank line inside a block now and then: two end it.
            blank += 1
            if blank == 2:
                return False
            continue
        blank = 0
        for m in _SEGMENT.finditer(text):
            if m.start() < s1 and s0 < m.end() and _CUSTOMER_AT_START.match(m.group()):
                return True
    return False


@cache
def _iban_shape(country: str) -> str | None:
    """'aann' then one of n (digit), a (letter), c (either) per character of the country's BBAN."""
    info = numdb.get("iban").info(country)[0][1]
    if not info.get("bban"):
        return None
    return "aann" + "".join(kind * int(n) for n, kind in re.findall(r"(\d+)!([nac])", info["bban"]))


def _ibans(page: _Page) -> list[_Identifier]:
    out = []
    text = page.text
    for m in _IBAN_START.finditer(text):
        shape = _iban_shape(m["cc"])
        if not shape:
            continue
        chars, pos, gap = [], m.start(), 0
        while pos < len(text) and len(chars) < len(shape):
            char = text[pos]
            if char.isascii() and char.isalnum():
                chars.append(char)
                gap = 0
            elif char in " \u00a0" and gap < 2:
                gap += 1
            else:
                break
            pos += 1
        if len(chars) != len(shape) or (pos < len(text) and text[pos].isascii() and text[pos].isalnum()):
            continue
        read = "".join(
            c.translate(_OCR_DIGITS) if k == "n" else c.upper() for c, k in zip(chars, shape, strict=True)
        )
        if not all(
            c.isdigit() if k == "n" else c.isalpha() if k == "a" else True
            for c, k in zip(read, shape, strict=True)
        ):
            continue
        raw = text[m.start() : pos]
        groups = raw.split()
        grouped = len(groups) > 1 and all(len(g) == 4 for g in groups[:-1]) and len(groups[-1]) <= 4
        before = _line_before(page, m.start())
        customer = bool(_IBAN_CUSTOMER.search(before)) and not _IBAN_SUPPLIER.search(before)
        labelled = bool(_IBAN_WORD.search(before))
        out.append(
            _Identifier(
                page,
                m.start(),
                pos,
                read,
                stdnum_iban.is_valid(read),
                labelled,
                fixed=read != "".join(chars).upper(),
                customer=customer,
                shaped=grouped or labelled,
            )
        )
    return out


def _iban(pages: list[_Page]) -> dict | None:
    candidates = [c for page in pages for c in _ibans(page) if not c.customer]
    valid = [c for c in candidates if c.valid]
    if valid:
        chosen = next((c for c in valid if c.labelled), valid[0])
        confidence = (0.95 if chosen.labelled else 0.85) - (OCR_FIXED_PENALTY if chosen.fixed else 0)
        if len({c.value for c in valid}) > 1:
            confidence -= 0.2
        return _field(chosen.value, chosen.page, chosen.start, chosen.end, confidence, valid=True)
    return _flagged([c for c in candidates if c.shaped])


def _flagged(candidates: list[_Identifier]) -> dict | None:
    if not candidates:
        return None
    c = candidates[0]
    return _field(c.value, c.page, c.start, c.end, INVALID_CONFIDENCE, valid=False)


def _communications(page: _Page) -> list[_Identifier]:
    out = []
    for m in _OGM_MARKED.finditer(page.text):
        raw = m["a"] + m["b"] + m["c"]
        digits = raw.translate(_OCR_DIGITS)
        value = f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"
        out.append(
            _Identifier(page, m.start(), m.end(), value, ogm_vcs.is_valid(digits), True, digits != raw)
        )
    for m in _OGM_BARE.finditer(page.text):
        if not _COMMUNICATION_LABEL.search(_line_before(page, m.start())):
            continue
        digits = m["a"] + m["b"] + m["c"]
        value = f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"
        out.append(_Identifier(page, m.start(), m.end(), value, ogm_vcs.is_valid(digits), False))
    return out


def _communication(pages: list[_Page]) -> dict | None:
    candidates = [c for page in pages for c in _communications(page)]
    valid = [c for c in candidates if c.valid]
    if valid:
        chosen = valid[0]
        confidence = (0.95 if chosen.labelled else 0.8) - (OCR_FIXED_PENALTY if chosen.fixed else 0)
        if len({c.value for c in valid}) > 1:
            confidence -= 0.2
        return _field(chosen.value, chosen.page, chosen.start, chosen.end, confidence, valid=True)
    return _flagged(candidates)


def _vat_valid(value: str) -> bool:
    if value.startswith("GB"):
        return gb_vat.is_valid(value)
    return eu_vat.is_valid(value)


def _vat_numbers(page: _Page, taken: list[tuple[int, int]]) -> list[_Identifier]:
    out = []
    for m in _VAT_PREFIXED.finditer(page.text):
        if any(s < m.end() and m.start() < e for s, e in taken):
            continue  # part of an IBAN
        country = next(cc for cc in VAT_NUMBER_SHAPES if m[cc])
        number = re.sub(r"[ .:\-]", "", m.group()[2:]).upper()
        if country == "BE":
            number = be_vat.compact(number)
        value = country + number
        before = _line_before(page, m.start())
        customer = _in_customer_block(page, m.start(), m.end())
        labelled = bool(_VAT_NUMBER_WORD.search(before))
        out.append(
            _Identifier(page, m.start(), m.end(), value, _vat_valid(value), labelled, customer=customer)
        )
    for m in _BE_NUMBER.finditer(page.text):
        line_start = page.line_span(page.line_of(m.start()))[0]
        s0 = page.segment_at(m.start(), m.end())[0]
        if not _VAT_NUMBER_WORD.search(page.text[line_start + s0 : m.start()]):
            continue
        if any(s < m.end() and m.start() < e for s, e in taken) or any(
            v.start <= m.start() < v.end for v in out
        ):
            continue
        value = "BE" + be_vat.compact(re.sub(r"[ .]", "", m.group()))
        customer = _in_customer_block(page, m.start(), m.end())
        out.append(_Identifier(page, m.start(), m.end(), value, _vat_valid(value), True, customer=customer))
    return out


def _supplier_vat(pages: list[_Page]) -> tuple[dict | None, _Identifier | None]:
    candidates = []
    for page in pages:
        taken = [(c.start, c.end) for c in _ibans(page)]
        candidates += [c for c in _vat_numbers(page, taken) if not c.customer]
    valid = [c for c in candidates if c.valid]
    if valid:
        chosen = valid[0]
        confidence = 0.9 if len({c.value for c in valid}) == 1 else 0.6
        return _field(chosen.value, chosen.page, chosen.start, chosen.end, confidence, valid=True), chosen
    return _flagged(candidates), None


# --- supplier name, kind, language, currency -------------------------------------------------------


def _looks_like_name(text: str) -> bool:
    text = text.strip()
    letters = sum(c.isalpha() for c in text)
    return (
        3 <= len(text) <= 60
        and letters >= 3
        and letters >= 0.6 * len(text.replace(" ", ""))
        and not any(c.isdigit() for c in text)
        and not any(mark in text.lower() for mark in (":", "@", "www", "http"))
        and not _TITLE.match(text)
        and not _CUSTOMER_AT_START.match(text)
    )


def _looks_like_company(text: str) -> bool:
    text = text.strip()
    return (
        len(text) <= 70
        and not any(mark in text.lower() for mark in (":", "@", "www", "http"))
        and bool(_LEGAL_FORM.search(text) or _LEGAL_FORM_AT_END.search(text))
        and sum(c.isalpha() for c in _LEGAL_FORM.sub("", text)) >= 4
        and not _CUSTOMER_AT_START.match(text)
    )


def _supplier_name(pages: list[_Page], vat: _Identifier | None) -> dict | None:
    page = pages[0]
    lines = [i for i in range(min(page.line_count, 40)) if page.line_text(i).strip()][:25]
    for line in lines:
        line_start = page.line_span(line)[0]
        for m in _SEGMENT.finditer(page.line_text(line)):
            start, end = line_start + m.start(), line_start + m.end()
            if _looks_like_company(m.group()) and not _in_customer_block(page, start, end):
                return _field(m.group(), page, start, end, 0.8)
    if vat is not None and vat.page is page:
        # the head of the VAT number's block, else the line right above it, in its column
        s0, s1 = page.segment_at(vat.start, vat.end)
        line = page.line_of(vat.start)
        runs = []
        for above in range(line - 1, max(-1, line - 9), -1):
            text = page.line_text(above)
            if not text.strip():
                break
            run = next((m for m in _SEGMENT.finditer(text) if m.start() < s1 and s0 < m.end()), None)
            if run:
                runs.append((above, run))
        for above, run in [*runs[-1:], *runs[:1]]:
            if _looks_like_name(run.group()):
                start = page.line_span(above)[0] + run.start()
                return _field(run.group(), page, start, start + len(run.group()), 0.5)
    # a guess: the first line of page 1, when it looks like a name and an address follows it
    for n, line in enumerate(lines[:3]):
        line_start = page.line_span(line)[0]
        run = _SEGMENT.search(page.line_text(line))
        if run and _TITLE.match(run.group()):
            continue
        address = any(_ADDRESS.search(page.line_text(below)) for below in lines[n + 1 : n + 4])
        if run and address and _looks_like_name(run.group()):
            return _field(run.group(), page, line_start + run.start(), line_start + run.end(), 0.3)
        break
    return None


def _kind(pages: list[_Page]) -> dict | None:
    scores, sources = {}, {}
    for kind, cues in _KIND.items():
        scores[kind] = 0
        for weight in sorted(cues, reverse=True):
            hit = next(((p, m) for p in pages for m in [cues[weight].search(p.text)] if m), None)
            if hit:
                scores[kind] += weight
                sources.setdefault(kind, hit)
    lengths = sorted(len(line.strip()) for p in pages for line in p.text.splitlines() if line.strip())
    if len(lengths) >= 8 and lengths[len(lengths) // 2] <= 32:
        scores["receipt"] += 1
        sources.setdefault("receipt", None)
    ranked = sorted(scores, key=scores.get, reverse=True)
    top, second = scores[ranked[0]], scores[ranked[1]]
    if top == second or sources.get(ranked[0]) is None:
        return None
    page, m = sources[ranked[0]]
    # as sure as the margin over the other kind, and less on fewer than three cues' weight
    confidence = (0.5 + 0.45 * (top - second) / top) * min(1, top / 3)
    return _field(ranked[0], page, m.start(), m.end(), confidence)


def _language(pages: list[_Page]) -> dict | None:
    counts = {
        lang: sum(len(labels.findall(p.text)) + len(words.findall(p.text)) for p in pages)
        for lang, (labels, words) in _LANGUAGE.items()
    }
    ranked = sorted(counts, key=counts.get, reverse=True)
    total = sum(counts.values())
    if total < 3 or counts[ranked[0]] == counts[ranked[1]]:
        return None
    labels, words = _LANGUAGE[ranked[0]]
    source = next(
        ((p, m) for regex in (labels, words) for p in pages for m in [regex.search(p.text)] if m), None
    )
    if source is None:
        return None
    page, m = source
    return _field(ranked[0], page, m.start(), m.end(), min(0.95, counts[ranked[0]] / total))


def _currency(pages: list[_Page], total: tuple[_Page, int, int] | None) -> dict | None:
    """The currency of the total's line, else the one the document names most."""
    if total:
        page, start, end = total
        m = _CURRENCY.search(page.text, start, page.line_span(page.line_of(end))[1])
        if m:
            return _field(CURRENCIES[m.group().upper()], page, m.start(), m.end(), 0.95)
    seen = [(CURRENCIES[m.group().upper()], page, m) for page in pages for m in _CURRENCY.finditer(page.text)]
    if not seen:
        return None
    codes = [code for code, _, _ in seen]
    best = max(dict.fromkeys(codes), key=codes.count)
    code, page, m = next(s for s in seen if s[0] == best)
    return _field(code, page, m.start(), m.end(), 0.85 if len(set(codes)) == 1 else 0.6)


# --- all of it --------------------------------------------------------------------------------------------


def extract(pages: list[str]) -> dict:
    """The fields of an invoice or a receipt from the text of its pages (see the module's docstring)."""
    doc = [_Page(i + 1, unicodedata.normalize("NFC", text or "")) for i, text in enumerate(pages)]
    if not any(page.text.strip() for page in doc):
        return {}
    kind = _kind(doc)
    vat_number, vat_identifier = _supplier_vat(doc)
    issue = _issue_date(doc, kind["value"] if kind else None)
    total, total_span = _total(doc, kind["value"] if kind else None) or (None, None)
    fields = {
        "supplier_name": _supplier_name(doc, vat_identifier),
        "supplier_vat": vat_number,
        "invoice_number": _invoice_number(doc),
        "issue_date": issue,
        "due_date": _due_date(doc, issue),
        "total": total,
        "currency": _currency(doc, total_span),
        "vat": _vat(doc),
        "iban": _iban(doc),
        "structured_communication": _communication(doc),
        "kind": kind,
        "language": _language(doc),
    }
    return {name: value for name, value in fields.items() if value is not None}


# --- a model's answer, checked against the text ----------------------------------------------------

#: The confidence of a field the rules missed and a model found printed in the text.
MODEL_CONFIDENCE = 0.5

_Located = tuple[str, _Page, int, int, dict]


def _first(found: list[_Found]) -> str | None:
    return found[0].value if found else None


def _printed_total(doc: list[_Page], proposed: str) -> _Located | None:
    """The amount printed, as a total: on a line with a total label, or the largest on its page
    (a VAT amount or a line's price is not taken for the total)."""
    wanted = _first(_Page(0, proposed).amounts)
    for page in doc:
        largest = max((Decimal(f.value) for f in page.amounts), default=None)
        for f in page.amounts:
            if not wanted or f.value != wanted:
                continue
            line = page.line_of(f.start)
            labelled = any(h.label.field == "total" and page.line_of(h.start) == line for h in page.hits)
            if labelled or Decimal(f.value) == largest:
                return f.value, page, f.start, f.end, {}
    return None


def _printed_date(doc: list[_Page], proposed: str) -> _Located | None:
    wanted = _first(_dates_in(proposed))
    return next(
        ((f.value, p, f.start, f.end, {}) for p in doc for f in p.dates if wanted and f.value == wanted), None
    )


def _printed_identifier(doc: list[_Page], proposed: str, read) -> _Located | None:
    """A valid identifier printed in the text (not the customer's) equal to the one proposed."""
    wanted = {c.value for c in read(_Page(0, proposed)) if c.valid}
    for page in doc:
        for c in read(page):
            if c.valid and not c.customer and c.value in wanted:
                return c.value, page, c.start, c.end, {"valid": True}
    return None


def _printed_communication(doc: list[_Page], proposed: str) -> _Located | None:
    digits = re.sub(r"\D", "", proposed)
    if len(digits) != 12:
        return None
    if not ogm_vcs.is_valid(digits):
        return None
    marked = f"+++{digits[:3]}/{digits[3:7]}/{digits[7:]}+++"
    # printed between +++ or ***, or bare (123/4567/89002) with or without a label
    for page in doc:
        for m in (*_OGM_MARKED.finditer(page.text), *_OGM_BARE.finditer(page.text)):
            if (m["a"] + m["b"] + m["c"]).translate(_OCR_DIGITS) == digits:
                return marked, page, m.start(), m.end(), {"valid": True}
    return None


def _printed_number(doc: list[_Page], proposed: str) -> _Located | None:
    wanted = proposed.strip().casefold()
    return next(
        ((f.value, p, f.start, f.end, {}) for p in doc for f in p.ids if f.value.casefold() == wanted), None
    )


def _printed_name(doc: list[_Page], proposed: str) -> _Located | None:
    words = proposed.split()
    if sum(c.isalpha() for c in proposed) < 2 or len(words) > 12:
        return None
    pattern = re.compile(r"(?<!\w)" + r"[ \t\u00a0]+".join(map(re.escape, words)) + r"(?!\w)", _FLAGS)
    for page in doc:
        for m in pattern.finditer(page.text):
            if not _in_customer_block(page, m.start(), m.end()):  # the customer is no supplier
                return m.group(), page, m.start(), m.end(), {}
    return None


def _printed_currency(doc: list[_Page], proposed: str) -> _Located | None:
    wanted = CURRENCIES.get(proposed.strip().upper())
    for page in doc:
        for m in _CURRENCY.finditer(page.text):
            if wanted and CURRENCIES.get(m.group().upper()) == wanted:
                return wanted, page, m.start(), m.end(), {}
    return None


_PRINTED = {
    "supplier_name": _printed_name,
    "supplier_vat": lambda doc, proposed: _printed_identifier(
        doc, proposed, lambda page: _vat_numbers(page, [])
    ),
    "invoice_number": _printed_number,
    "issue_date": _printed_date,
    "due_date": _printed_date,
    "total": _printed_total,
    "currency": _printed_currency,
    "iban": lambda doc, proposed: _printed_identifier(doc, proposed, _ibans),
    "structured_communication": _printed_communication,
}


def fill(found: dict, proposed: object, pages: list[str]) -> dict:
    """The rules' fields (``extract``), with those they missed filled from a model's answer
    (``proposed``: field name → the value as the model copied it) when, and only when, that value
    is printed in the text: an amount, a date, a valid identifier (not in the customer's block),
    a number or a name found there. Such a field says ``"method": "llm"``, its confidence is
    ``MODEL_CONFIDENCE``, and its value and source are the text's, not the model's. A model's
    answer is a node's claim: anything else in it is dropped. That a value is printed is checked,
    and a few roles (a total is labelled or the largest amount, a supplier is not in the
    customer's block, a due date follows the issue date); the rest of its role is the model's
    word, hence the lower confidence."""
    if not isinstance(proposed, dict):
        return found
    doc = [_Page(i + 1, unicodedata.normalize("NFC", text or "")) for i, text in enumerate(pages)]
    out = dict(found)
    issued = (found.get("issue_date") or {}).get("value")
    for name, locate in _PRINTED.items():
        value = proposed.get(name)
        if name in out or not isinstance(value, str) or not 0 < len(value) <= MODEL_FIELD_MAX_CHARS:
            continue
        located = locate(doc, unicodedata.normalize("NFC", value))
        if located is not None and name == "due_date" and issued and located[0] <= issued:
            continue  # a due date is after the issue date
        if located is not None:
            value, page, start, end, extra = located
            out[name] = _field(value, page, start, end, MODEL_CONFIDENCE, method="llm", **extra)
    return out
