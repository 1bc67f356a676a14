"""The ledger's rules as plain Python: what an execution is granted, what it earns, and how a
period is settled into cents.

No Flask, SQL or Celery here, so the rules are tested in microseconds (and by hypothesis).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

MS_PER_HOUR = Decimal(3_600_000)
CENT = Decimal("0.01")

#: The work unit each capability is measured in.
UNIT_OF_CAPABILITY = {"ocr": "page", "llm": "token"}

GIB = 1024**3

#: Added to what the coordinator observes (completion received − start first seen): both
#: records wait in the same ledger queue, and jitter in that wait must not cut an honest claim.
OBSERVATION_ALLOWANCE_MS = 2000


@dataclass(frozen=True)
class ReferenceCosts:
    """What a unit of work should cost on a slow volunteer machine, with slack on top.

    Measured on a 2-core x86 machine (measured: ~0.8 s per 300-dpi page with one thread) and
    scaled for a Raspberry Pi 4, about five times slower. LLM costs are per 1,000 tokens
    (prompt and completion together) by model file size, the best proxy for parameters.
    """

    ocr_seconds_per_page: Decimal = Decimal("4")
    #: (largest model file in bytes, seconds per 1,000 tokens), smallest first.
    llm_seconds_per_1k_tokens: tuple[tuple[int, Decimal], ...] = (
        (1 * GIB, Decimal("15")),
        (5 * GIB, Decimal("60")),
        (10 * GIB, Decimal("150")),
        (2**63, Decimal("400")),
    )
    slack: Decimal = Decimal("3")

    def seconds_per_unit(self, capability: str, model_bytes: int = 0) -> Decimal:
        if capability == "ocr":
            return self.ocr_seconds_per_page
        for limit, seconds in self.llm_seconds_per_1k_tokens:
            if model_bytes <= limit:
                return seconds / 1000
        return self.llm_seconds_per_1k_tokens[-1][1] / 1000


#: The most tokens an LLM execution may claim per byte of the text the coordinator sent it, and
#: on top. A token covers at least one byte of the text it reads; a long text read in pieces
#: and summarised again (map, then combine) adds its partial summaries and one system prompt
#: per call. Measured on the demo's minutes with a 512-token window (many calls): 1.6 tokens
#: per byte for a summary, 0.7 for a translation; 4 leaves room for smaller windows.
LLM_TOKENS_PER_INPUT_BYTE = 4
LLM_TOKENS_ALLOWANCE = 4096


def llm_units_bound(input_bytes: int) -> int:
    """The most tokens an LLM execution on ``input_bytes`` of text can have used."""
    return LLM_TOKENS_PER_INPUT_BYTE * max(0, input_bytes) + LLM_TOKENS_ALLOWANCE


def cap_ms(capability: str, units: int, costs: ReferenceCosts, model_bytes: int = 0) -> int:
    """The most an execution of ``units`` work units can be granted: units × reference × slack."""
    seconds = Decimal(max(0, units)) * costs.seconds_per_unit(capability, model_bytes) * costs.slack
    return int((seconds * 1000).to_integral_value(rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True)
class Grant:
    granted_ms: int
    #: Which bound decided: claimed, observed or cap; or why nothing was granted.
    basis: str


def bounded(claimed_ms: int, observed_ms: int | None, cap: int) -> Grant:
    """min(claimed, observed, cap), naming the bound that applied (the claim wins ties).

    ``observed_ms`` is None when the coordinator could not observe the execution (its start
    and its end reached the ledger together): then only the claim and the cap bound it.
    """
    bounds = [claimed_ms, cap] if observed_ms is None else [claimed_ms, observed_ms, cap]
    if min(bounds) < 0:
        raise ValueError("claims, observations and caps are never negative")
    granted = min(bounds)
    basis = "claimed" if granted == claimed_ms else "observed" if granted == observed_ms else "cap"
    return Grant(granted, basis)


def grant(
    outcome: str,
    claimed_ms: int,
    observed_ms: int | None,
    cap: int,
    *,
    error_code: str | None = None,
    time_limit_ms: int | None = None,
    planned_cap_ms: int | None = None,
) -> Grant:
    """Compute time granted for one execution (docs/decisions/0004).

    A succeeded execution is granted min(claimed, observed, cap). A failed one earns nothing,
    unless the failure was the coordinator's own: a time limit shorter than the reference cost
    of the work it asked for; then the time up to the limit is granted, still bounded.
    """
    if outcome == "succeeded":
        return bounded(claimed_ms, observed_ms, cap)
    if (
        error_code == "time_limit"
        and time_limit_ms is not None
        and planned_cap_ms is not None
        and planned_cap_ms > time_limit_ms
    ):
        limited = bounded(claimed_ms, observed_ms, time_limit_ms)
        return Grant(limited.granted_ms, f"time_limit_too_low:{limited.basis}")
    return Grant(0, f"not_granted_{outcome}")


def free_slot(busy_until: Sequence[int], concurrency: int) -> int:
    """When the earliest of a node's ``concurrency`` execution slots is free (epoch ms; 0 for a
    slot never used). ``busy_until`` holds the slots' ends, as ``occupy`` left them."""
    ends = sorted(busy_until, reverse=True)[: max(1, concurrency)]
    return 0 if len(ends) < max(1, concurrency) else ends[-1]


def concurrency_bound(
    busy_until: Sequence[int], concurrency: int, started_ms: int, ended_ms: int
) -> tuple[int, int]:
    """(bound, slot start) for an execution the coordinator saw from ``started_ms`` to
    ``ended_ms`` on a node that registered ``concurrency`` slots.

    An execution runs on a slot once the one before it there ended: a node that holds more
    executions at once than it said it runs gets, for each beyond, only the time left after a
    slot came free, so it is paid for no more time than its slots could give. The allowance of
    the observation covers the ledger's lag (the next execution may be seen starting before the
    ledger entered the end of the one it follows); it is shared by a burst, not given to each.
    """
    start = max(started_ms, free_slot(busy_until, concurrency))
    return max(0, ended_ms - start + OBSERVATION_ALLOWANCE_MS), start


def occupy(busy_until: Sequence[int], concurrency: int, start_ms: int, busy_ms: int) -> list[int]:
    """The slots' ends once an execution held the earliest free slot from ``start_ms`` for
    ``busy_ms`` (what it claimed, within its bound)."""
    ends = sorted(busy_until, reverse=True)[: max(1, concurrency)]
    if len(ends) >= max(1, concurrency):
        ends.pop()  # the earliest free slot is the one taken
    return sorted([*ends, start_ms + max(0, busy_ms)], reverse=True)


def units_of(capability: str, units: Mapping[str, int]) -> int:
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


@dataclass(frozen=True)
class Rate:
    capability: str
    eur_per_hour: Decimal
    effective_from: datetime


def rate_at(rates: Iterable[Rate], capability: str, moment: datetime) -> Decimal:
    """The capability's rate in force at ``moment``: the latest one effective at or before it."""
    applicable = [r for r in rates if r.capability == capability and r.effective_from <= moment]
    if not applicable:
        raise LookupError(f"no {capability} rate in force at {moment.isoformat()}")
    return max(applicable, key=lambda r: r.effective_from).eur_per_hour


def to_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def allocate_cents(amounts: Sequence[Decimal], per: Decimal = Decimal(1)) -> list[Decimal]:
    """Round each amount to the cent so that the parts add up to the rounded total.

    The remainder is carried: each part is the rounded running total minus the rounded running
    total before it, so no part is more than a cent from its exact value.

    Every amount is divided by ``per``: settle() passes exact ms × €/h products and
    MS_PER_HOUR, so the running total stays exact and is divided once, just before rounding.
    """
    parts: list[Decimal] = []
    running = Decimal(0)
    previous = Decimal("0.00")
    for amount in amounts:
        running += amount
        current = to_cents(running / per)
        parts.append(current - previous)
        previous = current
    return parts


def split(total: Decimal, shares: Mapping[str, Decimal]) -> dict[str, Decimal]:
    """Divide an amount (rounded to the cent) among named shares that add up to 1."""
    if sum(shares.values()) != 1:
        raise ValueError("the shares of a split must add up to 1")
    names = list(shares)
    parts = allocate_cents([total * shares[name] for name in names])
    return dict(zip(names, parts, strict=True))


@dataclass(frozen=True)
class Line:
    """Granted time of one node in one capability at one rate, inside the period settled."""

    node_id: str
    capability: str
    granted_ms: int
    rate_eur_per_hour: Decimal


@dataclass
class NodeReward:
    node_id: str
    granted_ms: dict[str, int] = field(default_factory=dict)
    exact_eur: Decimal = Decimal(0)
    amount_eur: Decimal = Decimal("0.00")

    def hours(self, capability: str) -> Decimal:
        return hours(self.granted_ms.get(capability, 0))


@dataclass(frozen=True)
class Settlement:
    total_exact_eur: Decimal
    total_eur: Decimal
    rewards: list[NodeReward]


def settle(lines: Iterable[Line]) -> Settlement:
    """One reward per node: its granted time per capability and its euros, cents carried so
    the rewards add up to the period's rounded total. Nodes are taken in id order.

    Euros are summed as granted ms × €/h, which Decimal holds exactly, and divided into hours
    once: summing rounded per-line rewards made the result depend on the order of the lines and
    on how granted time was cut into lines, down to the cent at a half cent."""
    by_node: dict[str, NodeReward] = {}
    eur_ms: dict[str, Decimal] = {}
    for line in lines:
        node = by_node.setdefault(line.node_id, NodeReward(line.node_id))
        node.granted_ms[line.capability] = node.granted_ms.get(line.capability, 0) + line.granted_ms
        eur_ms[line.node_id] = eur_ms.get(line.node_id, Decimal(0)) + line.granted_ms * line.rate_eur_per_hour
    rewards = [by_node[node_id] for node_id in sorted(by_node)]
    products = [eur_ms[node.node_id] for node in rewards]
    cents = allocate_cents(products, per=MS_PER_HOUR)
    for node, product, amount in zip(rewards, products, cents, strict=True):
        node.exact_eur = product / MS_PER_HOUR
        node.amount_eur = amount
    total_exact = sum(products, Decimal(0)) / MS_PER_HOUR
    return Settlement(total_exact, to_cents(total_exact), rewards)
