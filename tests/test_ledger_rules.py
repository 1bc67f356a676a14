"""The ledger's rules as a treasurer reads them: what an execution is granted, in which units,
and what it earns, in exact decimal euros. Pure functions: no database, no broker."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from app.ledger import rules
from app.ledger.rules import Grant

MINUTE_MS = 60_000
HOUR_MS = 3_600_000


@pytest.mark.parametrize("claimed_ms", [0, 1, 95_432, 10 * HOUR_MS])
def test_a_succeeded_execution_is_granted_exactly_what_it_claims(claimed_ms):
    assert rules.grant("succeeded", claimed_ms) == Grant(claimed_ms, "claimed")


@pytest.mark.parametrize("outcome", ["failed", "retried", "lost"])
def test_failed_retried_and_lost_executions_earn_nothing_and_say_why(outcome):
    granted = rules.grant(outcome, 42_000)
    assert granted == Grant(0, f"not_granted_{outcome}")


def test_an_unknown_outcome_is_never_granted_anything():
    assert rules.grant("bogus", 42_000) == Grant(0, "not_granted_bogus")


def test_a_negative_claim_is_refused():
    with pytest.raises(ValueError, match="negative"):
        rules.grant("succeeded", -1)


def test_ocr_work_is_counted_in_pages():
    assert rules.units_of("ocr", {"pages": 12}) == 12
    # Token counts that a node might send along do not turn into pages.
    assert rules.units_of("ocr", {"pages": 3, "prompt_tokens": 500}) == 3


def test_llm_work_is_counted_in_prompt_plus_completion_tokens():
    assert rules.units_of("llm", {"prompt_tokens": 149, "completion_tokens": 341}) == 490
    assert rules.units_of("llm", {"completion_tokens": 128}) == 128


def test_an_execution_that_reported_no_units_counts_zero():
    assert rules.units_of("ocr", {}) == 0
    assert rules.units_of("llm", {}) == 0


def test_each_capability_has_its_unit():
    assert rules.UNIT_OF_CAPABILITY == {"ocr": "page", "llm": "token"}


def test_milliseconds_become_exact_decimal_hours():
    assert rules.hours(HOUR_MS) == Decimal(1)
    assert rules.hours(90 * MINUTE_MS) == Decimal("1.5")
    assert rules.hours(90_000) == Decimal("0.025")
    assert rules.hours(0) == Decimal(0)
    assert isinstance(rules.hours(1), Decimal)


def test_two_minutes_of_ocr_and_five_of_llm_earn_exactly_twelve_cents():
    ocr = rules.reward(2 * MINUTE_MS, Decimal("0.60"))
    llm = rules.reward(5 * MINUTE_MS, Decimal("1.20"))
    assert ocr == Decimal("0.02")
    assert llm == Decimal("0.10")
    assert ocr + llm == Decimal("0.12")


def test_a_reward_with_a_finite_decimal_value_is_computed_exactly():
    # 408 ms at 0.60 €/h is 0.000068 € exactly; dividing into hours first gave 0.0000679…98.
    assert rules.reward(408, Decimal("0.60")) == Decimal("0.000068")
    for ms in range(1, 50_000, 37):
        for rate in ("0.45", "0.60", "1.20", "2.99"):
            exact = Fraction(ms) * Fraction(rate) / HOUR_MS
            denominator = exact.denominator
            for factor in (2, 5):
                while denominator % factor == 0:
                    denominator //= factor
            if denominator == 1:  # a finite decimal: Decimal must hold it exactly
                assert Fraction(rules.reward(ms, Decimal(rate))) == exact, (ms, rate)


def test_a_reward_is_never_a_float():
    assert isinstance(rules.reward(1_000, Decimal("0.60")), Decimal)
    assert rules.reward(0, Decimal("1.20")) == 0
