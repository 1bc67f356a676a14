"""The validation policy as plain Python: who is trusted, which results are re-run on another
node, when two results agree, and what a set of results decides.

No Flask, SQL or Celery here (``app.validation.checks`` applies it), so the rules are tested in
microseconds and by hypothesis. The thresholds come from measurement (docs/decisions/0011).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from rapidfuzz.distance import Levenshtein

from workers.protocol import documents, texts

TEXT_OF_STEP = texts.RESULT_TEXT
PAGE_BREAK = documents.PAGE_BREAK


@dataclass(frozen=True)
class Policy:
    #: Validated results in a row after which a node is trusted.
    probation_results: int = 10
    #: A trusted node's result is re-run with probability max(1 / streak, floor).
    spot_check_floor: float = 0.05
    #: Two OCR texts agree when their normalised character distance is at most this.
    ocr_max_distance: float = 0.02
    #: Once no more replicas are asked for, two OCR texts this close still agree: what honest
    #: machines with another renderer or resolution produce on a noisy scan, short of a cheat.
    ocr_noise_distance: float = 0.45
    #: Two LLM texts agree when their normalised character distance is at most this (0: the
    #: same text once whitespace is normalised).
    llm_max_distance: float = 0.0
    #: The LLM's counterpart of ``ocr_noise_distance``.
    llm_noise_distance: float = 0.5
    #: Replicas of one result at most: with two, three results give a majority of two.
    max_replicas: int = 2
    #: A node with this many invalid results within ``suspicion_window`` is paused.
    suspicion_invalid_results: int = 3
    suspicion_window: timedelta = field(default=timedelta(hours=24))

    def max_distance(self, step: str) -> float:
        return self.ocr_max_distance if step == "ocr" else self.llm_max_distance

    def noise_distance(self, step: str) -> float:
        return max(
            self.max_distance(step), self.ocr_noise_distance if step == "ocr" else self.llm_noise_distance
        )


# --- trust ---------------------------------------------------------------------------------


def trusted(streak: int, policy: Policy) -> bool:
    """Whether a node with ``streak`` validated results in a row is out of probation."""
    return streak >= policy.probation_results


def check_probability(streak: int, policy: Policy) -> float:
    """How likely a node's next result is re-run on another node: always on probation, then
    max(1 / streak, floor)."""
    if not trusted(streak, policy) or streak <= 0:
        return 1.0
    return min(1.0, max(1.0 / streak, policy.spot_check_floor))


def needs_check(streak: int, policy: Policy, draw: float) -> bool:
    """Whether this result is re-run, for a uniform ``draw`` in [0, 1) the node cannot predict."""
    return draw < check_probability(streak, policy)


@dataclass(frozen=True)
class Trust:
    streak: int
    validated: int
    invalid: int


def after_verdict(trust: Trust, valid: bool) -> Trust:
    """A validated result adds one to the streak; an invalid one resets it."""
    if valid:
        return Trust(trust.streak + 1, trust.validated + 1, trust.invalid)
    return Trust(0, trust.validated, trust.invalid + 1)


def suspicious(invalid_in_window: int, policy: Policy) -> bool:
    return invalid_in_window >= policy.suspicion_invalid_results


# --- agreement -----------------------------------------------------------------------------


#: The most characters a page of OCR text may hold (a dense A3 page holds about 12,000): a
#: longer one is not a page's text, and is not compared (it would cost the ledger seconds).
MAX_PAGE_CHARS = 20_000
#: A page's edits are counted over at least this many characters, so one stray character on a
#: nearly blank page does not make two honest readings disagree.
MIN_PAGE_CHARS = 20


def normalise(text: str, limit: int = MAX_PAGE_CHARS) -> str | None:
    """What is compared: Unicode compatibility forms folded, every run of whitespace one
    space, no space at the ends (honest engines differ in line breaks and spacing). None when
    the text is longer than ``limit`` characters, before or after folding."""
    if len(text) > limit:
        return None
    folded = " ".join(unicodedata.normalize("NFKC", text).split())
    return folded if len(folded) <= limit else None


def text_of(step: str, result: Any) -> str:
    value = result.get(TEXT_OF_STEP.get(step, "text")) if isinstance(result, dict) else None
    return value if isinstance(value, str) else ""


def distance(a: str, b: str, limit: float = 1.0, max_chars: int = MAX_PAGE_CHARS) -> float:
    """Normalised character distance of two texts, page by page (pages are cut by form feeds):
    the largest, over pages, of the edits that turn one page into the other over the longer
    one's length. 0 for the same text, 1 for nothing in common; texts with different page
    counts, or a page over ``max_chars``, are 1. Distances above ``limit`` are not computed
    exactly (a value above ``limit`` is returned): only the thresholds matter, and bounding the
    work keeps a crafted text from holding the ledger."""
    pages_a, pages_b = a.split(PAGE_BREAK), b.split(PAGE_BREAK)
    if len(pages_a) != len(pages_b):
        return 1.0
    worst = 0.0
    for page_a, page_b in zip(pages_a, pages_b, strict=True):
        folded_a, folded_b = normalise(page_a, max_chars), normalise(page_b, max_chars)
        if folded_a is None or folded_b is None:
            return 1.0
        length = max(len(folded_a), len(folded_b), MIN_PAGE_CHARS)
        cutoff = min(length, int(limit * length) + 1)
        edits = Levenshtein.distance(folded_a, folded_b, score_cutoff=cutoff)
        worst = max(worst, min(1.0, edits / length))
        if worst > limit:
            return worst
    return worst


def result_distance(step: str, a: Any, b: Any, limit: float = 1.0, max_chars: int = MAX_PAGE_CHARS) -> float:
    """How far apart two results of the same step are: their texts' distance; 1 when what the
    step was asked to produce differs (the language of a summary or translation), or when one
    is not a result at all."""
    if not (isinstance(a, dict) and isinstance(b, dict)) or a.get("language") != b.get("language"):
        return 1.0
    return distance(text_of(step, a), text_of(step, b), limit, max_chars)


# --- decision ------------------------------------------------------------------------------

AGREED = "agreed"
NEED_REPLICA = "need_replica"
NO_AGREEMENT = "no_agreement"


@dataclass(frozen=True)
class Decision:
    outcome: str
    #: Index of the result the user gets (the earliest of the agreeing pair).
    canonical: int | None = None
    valid: frozenset[int] = frozenset()
    invalid: frozenset[int] = frozenset()
    #: Distances measured, by pair of indexes.
    distances: dict[tuple[int, int], float] = field(default_factory=dict)


def decide(
    results: Sequence[Any],
    gap: Callable[[Any, Any], float],
    strict: float,
    noise: float,
    more_possible: bool,
    owners: Sequence[Any] | None = None,
) -> Decision:
    """What a step's results decide: the original's first, then its replicas' in order.

    Two results of one owner (``owners``, one per result) never make an agreeing pair on their
    own, unless every result is that owner's. The earliest pair within ``strict`` of each
    other wins: its first member is the canonical result, every result as close to it is valid,
    every other one invalid. With no such pair, another replica is asked for while one
    ``more_possible`` can be; once none can, the closest pair within ``noise`` (honest
    machines' differences on hard pages) decides the same way, and beyond that nothing does.
    """
    count = len(results)
    owners = list(owners) if owners is not None else list(range(count))
    one_owner = len(set(owners)) <= 1
    distances: dict[tuple[int, int], float] = {}

    def between(i: int, j: int) -> float:
        key = (min(i, j), max(i, j))
        if key not in distances:
            distances[key] = gap(results[key[0]], results[key[1]])
        return distances[key]

    pairs = [(i, j) for j in range(1, count) for i in range(j) if one_owner or owners[i] != owners[j]]

    def agreed(i: int, threshold: float) -> Decision:
        valid = frozenset(k for k in range(count) if k == i or between(i, k) <= threshold)
        return Decision(AGREED, i, valid, frozenset(range(count)) - valid, distances)

    for i, j in pairs:
        if between(i, j) <= strict:
            return agreed(i, strict)
    if more_possible:
        return Decision(NEED_REPLICA, distances=distances)
    close = [(between(i, j), i, j) for i, j in pairs if between(i, j) <= noise]
    if close:
        return agreed(min(close)[1], noise)
    return Decision(NO_AGREEMENT, distances=distances)


def decide_step(
    step: str,
    results: Sequence[Any],
    policy: Policy,
    *,
    more_possible: bool,
    owners: Sequence[Any] | None = None,
    max_chars: int = MAX_PAGE_CHARS,
) -> Decision:
    """``decide`` with the step's distance and the policy's thresholds."""
    noise = policy.noise_distance(step)
    return decide(
        results,
        lambda a, b: result_distance(step, a, b, noise, max_chars),
        policy.max_distance(step),
        noise,
        more_possible,
        owners,
    )
