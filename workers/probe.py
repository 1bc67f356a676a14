"""What this machine can serve, and why: ``python -m workers probe``.

Architecture, cores, RAM, Tesseract and its languages, poppler, llama.cpp, the configured model
and whether it fits in RAM; then a verdict per queue, from the same checks a worker runs at
start-up (``workers.preflight``), so the probe and the worker never disagree.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import celeryconfig
from workers import model_file, preflight

#: What kind of machine a volunteer says this is (``raspberry-pi``, ``laptop``, ``mac-mini``,
#: ``desktop``…): the coordinator counts its energy at that class's power (app.carbon). Unset,
#: the probe guesses from what the system tells; when it cannot tell, it says nothing, and the
#: coordinator assumes the most power-hungry class.
HARDWARE_CLASS_ENV = "GRID_HARDWARE_CLASS"
#: SMBIOS chassis types (``/sys/class/dmi/id/chassis_type``) of portable and of desktop machines.
_PORTABLE_CHASSIS = {"8", "9", "10", "14", "30", "31", "32"}
_DESKTOP_CHASSIS = {"3", "4", "5", "6", "7", "13", "15", "16", "35", "36"}


def _version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _command_version(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def tesseract() -> dict[str, Any]:
    version = _command_version(["tesseract", "--version"])
    languages: list[str] = []
    if version:
        from workers.engines import tesseract as engine

        languages = sorted(engine.installed_languages())
    return {"version": version, "languages": languages}


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "koprogo-grid" / "model-digests.json"


def model_digest(path: Path) -> str | None:
    """SHA-256 of the model file: a result of an LLM step is checked on a node that registered
    the same one (app.validation). Kept in the user's cache by path, size and modification
    time, so a multi-gigabyte file is read once, not at every start."""
    try:
        stat = path.stat()
    except OSError:
        return None
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = _cache_file()
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    value = digest.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        known = known if isinstance(known, dict) else {}
        known[key] = value
        cache.write_text(json.dumps(known))
    except OSError:
        pass  # no cache: hashed again at the next start
    return value


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace").strip("\x00 \n")
    except OSError:
        return ""


def hardware_class() -> str | None:
    """The class of machine this is: the volunteer's word (``GRID_HARDWARE_CLASS``), else a
    guess from the device tree, the Mac model or the chassis type, else None."""
    stated = os.environ.get(HARDWARE_CLASS_ENV, "").strip().lower()
    if stated:
        return stated[:32]
    if platform.system() == "Darwin":
        model_name = _command_version(["sysctl", "-n", "hw.model"]) or ""
        if model_name.startswith("Macmini"):
            return "mac-mini"
        return "laptop" if model_name.startswith("MacBook") else None
    if "raspberry pi" in _read_text("/proc/device-tree/model").lower():
        return "raspberry-pi"
    chassis = _read_text("/sys/class/dmi/id/chassis_type")
    if chassis in _PORTABLE_CHASSIS or any(Path("/sys/class/power_supply").glob("BAT*")):
        return "laptop"
    return "desktop" if chassis in _DESKTOP_CHASSIS else None


def model() -> dict[str, Any] | None:
    """The configured GGUF model: its file, size, digest, whether it fits in this machine's RAM,
    and what its header says (architecture, name, context length, parameters, quantisation)."""
    from workers.engines import llama

    value = os.environ.get(llama.MODEL_ENV, "")
    if not value:
        return None
    path = Path(value).expanduser()
    size = path.stat().st_size if path.is_file() else None
    budget = int(preflight.total_ram_bytes() * preflight.LLM_MAX_RAM_SHARE) - preflight.LLM_OVERHEAD_BYTES
    return {
        "path": str(path),
        "file_name": path.name,
        "exists": size is not None,
        "bytes": size,
        # A model too big for this machine is not served: not worth reading through.
        "sha256": model_digest(path) if size is not None and size <= budget else None,
        "fits_in_ram": size is not None and size <= budget,
        **(model_file.describe(path) if size is not None else {}),
    }


def report(queues: tuple[str, ...] = celeryconfig.VOLUNTEER_QUEUES) -> dict[str, Any]:
    """Everything the probe found, as data (also what a worker registers with)."""
    verdicts = {}
    for queue in queues:
        problem = preflight.CHECKS[queue]()
        verdicts[queue] = {"can_serve": problem is None, "why": problem or "ready"}
    return {
        "machine": {
            "architecture": platform.machine(),
            "system": platform.platform(terse=True),
            "cores": os.cpu_count(),
            "ram_bytes": preflight.total_ram_bytes(),
            "hardware_class": hardware_class(),
        },
        "software": {
            "python": platform.python_version(),
            "celery": _version_of("celery"),
            "tesseract": tesseract(),
            "poppler": _command_version(["pdfinfo", "-v"]),
            "llama_cpp_python": _version_of("llama-cpp-python"),
        },
        "model": model(),
        "enrolment": preflight.enrolment_problem() or "enrolled",
        "queues": verdicts,
    }


def servable(found: dict[str, Any]) -> list[str]:
    return [queue for queue, verdict in found["queues"].items() if verdict["can_serve"]]


def render(found: dict[str, Any]) -> str:
    """The report for a person."""
    machine, software = found["machine"], found["software"]
    tess = software["tesseract"]
    lines = [
        f"machine     {machine['architecture']}, {machine['cores']} cores, "
        f"{machine['ram_bytes'] / 2**30:.1f} GiB RAM ({machine['system']})",
        f"class       {machine.get('hardware_class') or f'unknown (set {HARDWARE_CLASS_ENV})'}",
        f"tesseract   {tess['version'] or 'not installed'}"
        + (f"; languages {', '.join(tess['languages'])}" if tess["languages"] else ""),
        f"poppler     {software['poppler'] or 'not installed'}",
        f"llama.cpp   llama-cpp-python {software['llama_cpp_python'] or 'not installed'}",
    ]
    current = found["model"]
    if current is None:
        lines.append("model       none configured (GRID_LLM_MODEL)")
    else:
        size = f"{current['bytes'] / 2**30:.2f} GiB" if current["exists"] else "missing"
        fits = "fits in RAM" if current["fits_in_ram"] else "does NOT fit in RAM"
        lines.append(f"model       {current['path']} ({size}{', ' + fits if current['exists'] else ''})")
        if current.get("architecture"):
            lines.append(
                f"            {current['architecture']}, {current.get('parameters') or '?'} parameters, "
                f"context {current.get('context_length') or '?'}, {current.get('quantisation') or '?'}"
            )
    lines.append(f"enrolment   {found['enrolment']}")
    lines.append("")
    for queue, verdict in found["queues"].items():
        mark = "yes" if verdict["can_serve"] else "no "
        lines.append(f"queue {queue:<5} {mark}  {verdict['why']}")
    usable = servable(found)
    lines.append("")
    if usable:
        lines.append(f"This machine can serve: -Q {','.join(usable)}   (python -m workers start)")
    else:
        lines.append("This machine cannot serve any queue yet: see the reasons above.")
    return "\n".join(lines)
