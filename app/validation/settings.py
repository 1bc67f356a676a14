"""The validation policy as configured (``GRID_VALIDATION*``, ``GRID_SUSPICION_*``: app.config)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import current_app

from app.validation import policy


def enabled() -> bool:
    return bool(current_app.config["VALIDATION"])


def current() -> policy.Policy:
    config = current_app.config
    return policy.Policy(
        probation_results=int(config["VALIDATION_PROBATION_RESULTS"]),
        spot_check_floor=float(config["VALIDATION_SPOT_CHECK_FLOOR"]),
        ocr_max_distance=float(config["VALIDATION_OCR_MAX_DISTANCE"]),
        ocr_noise_distance=float(config["VALIDATION_OCR_NOISE_DISTANCE"]),
        llm_max_distance=float(config["VALIDATION_LLM_MAX_DISTANCE"]),
        llm_noise_distance=float(config["VALIDATION_LLM_NOISE_DISTANCE"]),
        max_replicas=int(config["VALIDATION_MAX_REPLICAS"]),
        suspicion_invalid_results=int(config["SUSPICION_INVALID_RESULTS"]),
        suspicion_window=timedelta(hours=float(config["SUSPICION_WINDOW_HOURS"])),
    )


def trust_of(node: Any, rules: policy.Policy | None = None) -> dict[str, Any]:
    """A node's trust as the registry shows it (``rules``: ``current()``, read once for a list)."""
    streak, rules = node.validated_streak or 0, rules or current()
    return {
        "level": "trusted" if policy.trusted(streak, rules) else "probation",
        "validated_in_a_row": streak,
        "validated": node.validated_results or 0,
        "invalid": node.invalid_results or 0,
        "last_invalid_at": node.last_invalid_at.isoformat() if node.last_invalid_at else None,
        "check_probability": round(policy.check_probability(streak, rules), 4) if enabled() else 0.0,
    }
