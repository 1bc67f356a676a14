"""The validation policy's pure rules (app.validation.policy), by example and by hypothesis:
trust and spot-check probability, text agreement, and what a set of results decides."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from app.validation import policy
from app.validation.policy import AGREED, NEED_REPLICA, NO_AGREEMENT, Policy

RULES = Policy()
streaks = st.integers(min_value=0, max_value=10_000)
texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


# --- trust ---------------------------------------------------------------------------------


@given(streaks)
def test_a_node_on_probation_has_every_result_checked(streak):
    if streak < RULES.probation_results:
        assert not policy.trusted(streak, RULES)
        assert policy.check_probability(streak, RULES) == 1.0
        assert policy.needs_check(streak, RULES, draw=0.999999)


@given(streaks, st.floats(min_value=0.0, max_value=0.5))
def test_a_trusted_node_is_checked_at_max_of_one_over_its_streak_and_the_floor(streak, floor):
    rules = Policy(spot_check_floor=floor)
    if not policy.trusted(streak, rules):
        return
    p = policy.check_probability(streak, rules)
    assert p == max(1 / streak, floor)
    assert floor <= p <= max(floor, 1 / rules.probation_results)
    assert policy.check_probability(streak + 1, rules) <= p  # never checked more for doing well


def test_the_default_spot_check_rate_settles_at_five_percent():
    assert policy.check_probability(10, RULES) == 0.1
    assert policy.check_probability(20, RULES) == 0.05
    assert policy.check_probability(500, RULES) == 0.05


@given(st.lists(st.booleans(), max_size=60))
def test_an_invalid_result_resets_the_streak_and_totals_only_grow(verdicts):
    trust = policy.Trust(0, 0, 0)
    run = 0
    for valid in verdicts:
        after = policy.after_verdict(trust, valid)
        run = run + 1 if valid else 0
        assert after.streak == run
        assert after.validated >= trust.validated and after.invalid >= trust.invalid
        assert after.validated + after.invalid == trust.validated + trust.invalid + 1
        trust = after
    assert trust.validated == sum(verdicts) and trust.invalid == len(verdicts) - sum(verdicts)


@given(st.integers(min_value=0, max_value=20))
def test_suspicion_starts_at_the_threshold(invalid):
    assert policy.suspicious(invalid, RULES) == (invalid >= RULES.suspicion_invalid_results)


def test_needs_check_follows_the_draw_at_the_configured_rate():
    draws = random.Random(7)
    checked = sum(policy.needs_check(40, RULES, draws.random()) for _ in range(20_000))
    assert 0.045 < checked / 20_000 < 0.055  # max(1/40, 5 %) = 5 %


# --- agreement -----------------------------------------------------------------------------


@given(texts, texts)
def test_distance_is_symmetric_bounded_and_zero_for_the_same_text(a, b):
    d = policy.distance(a, b)
    assert 0.0 <= d <= 1.0
    assert d == policy.distance(b, a)
    assert policy.distance(a, a) == 0.0
    if a.count("\f") == b.count("\f"):
        assert (d == 0.0) == all(
            policy.normalise(x) == policy.normalise(y)
            for x, y in zip(a.split("\f"), b.split("\f"), strict=True)
        )


@given(texts)
def test_line_breaks_and_spacing_do_not_count(text):
    respaced = "  \n".join(text.split(" ")) + "\n\n"
    assert policy.distance(text, respaced) == 0.0


def test_texts_of_different_page_counts_never_agree():
    assert policy.distance("a\fb", "a b") == 1.0


def test_empty_and_invented_texts_are_far_from_the_real_one():
    real = "Procès-verbal de l'assemblée générale du 12 mars 2025. Présents : 18 coopérateurs sur 24."
    assert policy.distance(real, "") == 1.0
    assert policy.distance(real, "Facture 2024-117 du fournisseur Dupont, total 12 480 EUR.") > 0.5
    assert policy.distance(real, real.replace("18", "19")) < RULES.ocr_max_distance


def test_results_in_another_language_never_agree():
    a = {"summary": "Le budget est voté.", "language": "fr"}
    assert policy.result_distance("summarise", a, {**a, "language": "en"}) == 1.0
    assert policy.result_distance("summarise", a, dict(a)) == 0.0
    assert policy.result_distance("summarise", a, "not a result") == 1.0


# --- decisions -----------------------------------------------------------------------------


def _decide(values: list[float], *, strict: float = 0.0, noise: float = 0.0, max_replicas: int = 2):
    """Results as numbers: their distance is how far apart the numbers are; another replica
    can be asked for while fewer than ``max_replicas`` were."""
    return policy.decide(values, lambda a, b: abs(a - b), strict, noise, len(values) - 1 < max_replicas)


def test_two_agreeing_results_are_both_valid_and_the_original_is_given():
    decision = _decide([1.0, 1.0])
    assert decision.outcome == AGREED and decision.canonical == 0
    assert decision.valid == {0, 1} and not decision.invalid


def test_a_disagreement_asks_for_another_replica_which_decides():
    assert _decide([1.0, 2.0]).outcome == NEED_REPLICA
    original_lost = _decide([1.0, 2.0, 2.0])
    assert original_lost.outcome == AGREED and original_lost.canonical == 1
    assert original_lost.valid == {1, 2} and original_lost.invalid == {0}
    replica_lost = _decide([1.0, 2.0, 1.0])
    assert replica_lost.canonical == 0 and replica_lost.invalid == {1}


def test_noise_level_agreement_counts_only_once_no_more_replicas_are_asked_for():
    assert _decide([1.0, 1.2], strict=0.1, noise=0.3).outcome == NEED_REPLICA
    late = _decide([1.0, 1.2, 5.0], strict=0.1, noise=0.3)
    assert late.outcome == AGREED and late.valid == {0, 1} and late.invalid == {2}
    closest = _decide([1.0, 1.25, 1.2], strict=0.01, noise=0.3)  # the closest pair decides
    assert closest.canonical == 1 and closest.valid == {0, 1, 2}
    assert _decide([1.0, 3.0, 5.0], strict=0.1, noise=0.3).outcome == NO_AGREEMENT


@settings(max_examples=300)
@given(
    st.lists(st.integers(min_value=0, max_value=4), min_size=2, max_size=4),
    st.integers(min_value=1, max_value=3),
)
def test_a_decision_is_consistent(values, max_replicas):
    decision = _decide([float(v) for v in values], max_replicas=max_replicas)
    everyone = frozenset(range(len(values)))
    if decision.outcome == AGREED:
        assert decision.canonical in decision.valid
        assert decision.valid | decision.invalid == everyone and not decision.valid & decision.invalid
        assert len(decision.valid) >= 2  # a result is never validated alone
        assert all(values[i] == values[decision.canonical] for i in decision.valid)
        assert all(values[i] != values[decision.canonical] for i in decision.invalid)
    elif decision.outcome == NEED_REPLICA:
        assert len(set(values)) == len(values) and len(values) - 1 < max_replicas
    else:
        assert len(set(values)) == len(values) and len(values) - 1 >= max_replicas


@given(st.lists(st.integers(min_value=0, max_value=3), min_size=3, max_size=4))
def test_a_majority_of_honest_equal_results_always_wins(values):
    honest = max(set(values), key=values.count)
    if values.count(honest) * 2 <= len(values):
        return
    decision = _decide([float(v) for v in values])
    assert decision.outcome == AGREED and values[decision.canonical] == honest


def test_a_forged_page_is_caught_whatever_the_length_of_the_document():
    honest = "\f".join(
        f"Page {n}: les copropriétaires approuvent le point {n} à l'unanimité." for n in range(50)
    )
    pages = honest.split("\f")
    pages[49] = "Page 49: le président reçoit une prime exceptionnelle de 12 000 euros."
    assert policy.distance(honest, "\f".join(pages)) > RULES.ocr_noise_distance


def test_a_huge_text_is_not_compared_and_never_agrees():
    page = "Procès-verbal de l'assemblée générale. " * 20
    huge = "\ufdfa" * (policy.MAX_PAGE_CHARS // 10)  # folds into eighteen characters each
    assert policy.distance(page, huge) == 1.0
    assert policy.distance(huge, huge) == 1.0
    assert policy.distance("x" * (policy.MAX_PAGE_CHARS + 1), "x" * (policy.MAX_PAGE_CHARS + 1)) == 1.0


def test_two_results_of_one_member_never_agree_alone():
    mallory, alice = "mallory", "alice"
    # The original (alice's) is outvoted only by results of two members, never by one member's two.
    framed = policy.decide(
        [1.0, 2.0, 2.0], lambda a, b: abs(a - b), 0.0, 0.0, False, [alice, mallory, mallory]
    )
    assert framed.outcome == NO_AGREEMENT
    honest = policy.decide([1.0, 2.0, 1.0], lambda a, b: abs(a - b), 0.0, 0.0, False, [alice, mallory, "bob"])
    assert honest.outcome == AGREED and honest.valid == {0, 2} and honest.invalid == {1}
    alone = policy.decide([1.0, 1.0], lambda a, b: abs(a - b), 0.0, 0.0, False, [alice, alice])
    assert alone.outcome == AGREED  # every result one member's: nobody else could check
