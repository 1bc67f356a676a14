"""The ledger's rules as plain Python: what an execution is granted and what it earns.

No Flask, SQL or Celery here, so the rules are tested in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MS_PER_HOUR = Decimal(3_600_000)

#: The work unit each capability is measured in.
UNIT_OF_CAPABILITY = {"ocr": "page", "llm": "token"}


@dataclass(frozen=True)
class Grant:
    granted_ms: int
    basis: str


def grant(outcome: str, claimed_ms: int) -> Grant:
    """Compute time granted for one execution.

    A succeeded execution is granted what it claims (the coordinator's own bounds come with
    verified claims); failed, retried and lost executions earn nothing for now.
    """
    if claimed_ms < 0:
        raise ValueError("a claim cannot be negative")
    if outcome == "succeeded":
        return Grant(claimed_ms, "claimed")
    return Grant(0, f"not_granted_{outcome}")


def units_of(capability: str, units: dict[str, int]) -> int:
    """Work units of an execution: pages for OCR, prompt + completion tokens for LLM work."""
    if capability == "ocr":
        return int(units.get("pages", 0))
    return int(units.get("prompt_tokens", 0)) + int(units.get("completion_tokens", 0))


def hours(ms: int) -> Decimal:
    return Decimal(ms) / MS_PER_HOUR


def reward(ms: int, rate_eur_per_hour: Decimal) -> Decimal:
    """Unrounded euros for ``ms`` granted milliseconds at a €/hour rate.

    Multiplied before dividing, so the only rounding is the one division: an amount with a
    finite decimal expansion comes out exact (``hours(408) * Decimal("0.60")`` would give
    0.0000679…98 € instead of 0.000068 €).
    """
    return Decimal(ms) * rate_eur_per_hour / MS_PER_HOUR
