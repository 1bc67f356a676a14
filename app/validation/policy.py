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

#: Where a step's text sits in its result.
TEXT_OF_STEP = {"ocr": "text", "summarise": "summary", "translate": "translation"}
#: Separates the pages of an OCR text.
PAGE_BREAK = "\f"


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


def normalise(text: str) -> str:
    """What is compared: Unicode compatibility forms folded, every run of whitespace one
    space, no space at the ends (honest engines differ in line breaks and spacing)."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def text_of(step: str, result: Any) -> str:
    value = result.get(TEXT_OF_STEP.get(step, "text")) if isinstance(result, dict) else None
    return value if isinstance(value, str) else ""


def distance(a: str, b: str) -> float:
    """Normalised character distance of two texts, page by page (pages are cut by form feeds):
    the edits that turn one into the other over the longer one's length, summed over pages.
    0 for the same text, 1 for nothing in common; texts with different page counts are 1."""
    pages_a, pages_b = a.split(PAGE_BREAK), b.split(PAGE_BREAK)
    if len(pages_a) != len(pages_b):
        return 1.0
    edits = length = 0
    for page_a, page_b in zip(pages_a, pages_b, strict=True):
        page_a, page_b = normalise(page_a), normalise(page_b)
        edits += Levenshtein.distance(page_a, page_b)
        length += max(len(page_a), len(page_b))
    return edits / length if length else 0.0


def result_distance(step: str, a: Any, b: Any) -> float:
    """How far apart two results of the same step are: their texts' distance; 1 when what the
    step was asked to produce differs (the language of a summary or translation)."""
    if isinstance(a, dict) and isinstance(b, dict) and a.get("language") != b.get("language"):
        return 1.0
    return distance(text_of(step, a), text_of(step, b))


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
    results: Sequence[Any], gap: Callable[[Any, Any], float], strict: float, noise: float, max_replicas: int
) -> Decision:
    """What a step's results decide: the original's first, then its replicas' in order.

    The earliest pair within ``strict`` of each other wins: its first member is the canonical
    result, every result as close to it is valid, every other one invalid. With no such pair,
    another replica is asked for while ``max_replicas`` allows; once it does not, pairs within
    ``noise`` (honest machines' differences on hard pages) are looked for the same way, and
    beyond that nothing is decided.
    """
    distances: dict[tuple[int, int], float] = {}

    def between(i: int, j: int) -> float:
        key = (min(i, j), max(i, j))
        if key not in distances:
            distances[key] = gap(results[key[0]], results[key[1]])
        return distances[key]

    count = len(results)

    def agreed(threshold: float) -> Decision | None:
        for j in range(1, count):
            for i in range(j):
                if between(i, j) <= threshold:
                    valid = frozenset(k for k in range(count) if k == i or between(i, k) <= threshold)
                    return Decision(AGREED, i, valid, frozenset(range(count)) - valid, distances)
        return None

    found = agreed(strict)
    if found is not None:
        return found
    if count - 1 < max_replicas:
        return Decision(NEED_REPLICA, distances=distances)
    return agreed(noise) or Decision(NO_AGREEMENT, distances=distances)


def decide_step(step: str, results: Sequence[Any], policy: Policy) -> Decision:
    """``decide`` with the step's distance and the policy's thresholds."""
    return decide(
        results,
        lambda a, b: result_distance(step, a, b),
        policy.max_distance(step),
        policy.noise_distance(step),
        policy.max_replicas,
    )
