"""The CO₂ model (docs/decisions/0013), as plain Python: no Flask, SQL or Celery here.

A node's work emits ``seconds × watts of its hardware class ÷ 3,600 ÷ 1,000 × grams per kWh``
of the electricity it runs on. The seconds are the coordinator's (``app.stats`` sums them from
the ledger); the hardware class is the node's claim, taken only when it names a class of the
table and fits what the node registered about its machine, else counted at the table's highest
power, so that a false or missing claim never makes the grid look cleaner than it is. What the
grid saves is set against the seed's figure for the same requests served by a cloud GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

#: The class a node is counted as when its claim is missing, unknown or implausible.
UNKNOWN = "unknown"
MS_PER_HOUR = Decimal(3_600_000)
#: Figures are shown to the milligram; energy to the milliwatt-hour.
GRAMS_SHOWN = Decimal("0.001")
WH_SHOWN = Decimal("0.001")
#: What a figure of the model may be: above zero, and below what no machine or grid reaches.
_WATTS_RANGE = (Decimal("0.1"), Decimal(5000))
_INTENSITY_RANGE = (Decimal(0), Decimal(2000))
_REQUEST_RANGE = (Decimal(0), Decimal(100_000))
#: A Raspberry Pi is an ARM board of at most 4 cores and 16 GiB: a claim beyond is not one.
_ARM = frozenset({"aarch64", "arm64", "armv7l", "armv6l", "armv8l"})
_PI_MAX_CORES = 4
_PI_MAX_RAM_BYTES = 16 * 1024**3


@dataclass(frozen=True)
class Assumptions:
    """The model's figures, as configured (``GRID_CO2_*``)."""

    watts_by_class: Mapping[str, Decimal]
    grid_g_per_kwh: Decimal
    cloud_g_per_request: Decimal

    @property
    def unknown_watts(self) -> Decimal:
        return max(self.watts_by_class.values())

    def watts(self, hardware_class: str) -> Decimal:
        return self.watts_by_class.get(hardware_class, self.unknown_watts)

    def as_dict(self) -> dict[str, Any]:
        """The figures, returned beside the numbers they gave."""
        return {
            "formula": "co2_grams = seconds × watts ÷ 3600 ÷ 1000 × grid_g_per_kwh; "
            "co2_saved_grams = requests × cloud_g_per_request − co2_grams",
            "watts_by_hardware_class": {name: str(w) for name, w in sorted(self.watts_by_class.items())},
            "unknown_hardware_watts": str(self.unknown_watts),
            "grid_g_per_kwh": str(self.grid_g_per_kwh),
            "cloud_g_per_request": str(self.cloud_g_per_request),
            "seconds": "each execution's wall time as its node claimed it, bounded by the time the "
            "coordinator saw it take (from its input fetch to its completion record)",
            "request": "a job step that succeeded (replicas that checked it not counted)",
        }


def _figure(name: str, value: Any, bounds: tuple[Decimal, Decimal]) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise ValueError(f"{name} must be a number, not {value!r}") from None
    low, high = bounds
    if not number.is_finite() or not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value!r}")
    return number


def assumptions(config: Mapping[str, Any]) -> Assumptions:
    """The model's figures from the coordinator's settings; ``ValueError`` for one out of
    range (a misconfiguration is an operator's to fix, not a number to show)."""
    table = config["CO2_WATTS_BY_HARDWARE_CLASS"]
    if not isinstance(table, Mapping) or not table:
        raise ValueError("CO2_WATTS_BY_HARDWARE_CLASS must map hardware classes to watts")
    watts = {
        str(name): _figure(f"CO2_WATTS_BY_HARDWARE_CLASS[{name}]", value, _WATTS_RANGE)
        for name, value in table.items()
    }
    return Assumptions(
        watts_by_class=watts,
        grid_g_per_kwh=_figure("CO2_GRID_G_PER_KWH", config["CO2_GRID_G_PER_KWH"], _INTENSITY_RANGE),
        cloud_g_per_request=_figure(
            "CO2_CLOUD_G_PER_REQUEST", config["CO2_CLOUD_G_PER_REQUEST"], _REQUEST_RANGE
        ),
    )


#: The fields of a registered machine ``hardware_class`` reads, and only these
#: (``app.footprints`` sums metered time by them in SQL).
MACHINE_FIELDS = ("hardware_class", "architecture", "cores", "ram_bytes")


def hardware_class(probe: Any, known: Mapping[str, Any]) -> str:
    """The class a node is counted as, from what it registered (``probe``, a claim): the class
    it names if the table ``known`` has it and the machine it described can be one, else
    ``UNKNOWN``."""
    machine = probe.get("machine") if isinstance(probe, dict) else None
    if not isinstance(machine, dict):
        return UNKNOWN
    claimed = machine.get("hardware_class")
    if not isinstance(claimed, str) or claimed not in known:
        return UNKNOWN
    if claimed == "raspberry-pi" and not _could_be_a_pi(machine):
        return UNKNOWN
    return claimed


def _could_be_a_pi(machine: dict[str, Any]) -> bool:
    cores, ram = machine.get("cores"), machine.get("ram_bytes")
    return (
        machine.get("architecture") in _ARM
        and type(cores) is int
        and 0 < cores <= _PI_MAX_CORES
        and type(ram) is int
        and 0 < ram <= _PI_MAX_RAM_BYTES
    )


def energy_wh(ms: int, watts: Decimal) -> Decimal:
    """Watt-hours drawn by ``ms`` milliseconds of work at ``watts``."""
    return Decimal(max(0, int(ms))) * watts / MS_PER_HOUR


def grams(wh: Decimal, model: Assumptions) -> Decimal:
    """Grams of CO₂ for ``wh`` watt-hours of the grid's electricity."""
    return wh * model.grid_g_per_kwh / 1000


@dataclass(frozen=True)
class Footprint:
    """The CO₂ of some work: per hardware class, its seconds, energy and grams."""

    by_class: Mapping[str, tuple[int, Decimal, Decimal]]

    @property
    def wh(self) -> Decimal:
        return sum((wh for _, wh, _ in self.by_class.values()), Decimal(0))

    @property
    def grams(self) -> Decimal:
        return sum((g for _, _, g in self.by_class.values()), Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            name: {
                "seconds": ms / 1000,
                "energy_wh": float(wh.quantize(WH_SHOWN)),
                "co2_grams": float(g.quantize(GRAMS_SHOWN)),
            }
            for name, (ms, wh, g) in sorted(self.by_class.items())
        }


def footprint(ms_by_class: Mapping[str, int], model: Assumptions) -> Footprint:
    """The footprint of work metered as ``ms_by_class`` (milliseconds per hardware class)."""
    out = {}
    for name, ms in ms_by_class.items():
        wh = energy_wh(ms, model.watts(name))
        out[name] = (int(ms), wh, grams(wh, model))
    return Footprint(out)


def saved_grams(requests: int, emitted: Decimal, model: Assumptions) -> Decimal:
    """What the same requests would have emitted on a cloud GPU (the seed's figure), less what
    the grid emitted; below zero when the grid did worse."""
    return Decimal(max(0, requests)) * model.cloud_g_per_request - emitted


def shown(value: Decimal) -> float:
    return float(value.quantize(GRAMS_SHOWN))
