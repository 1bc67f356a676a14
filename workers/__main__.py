"""``python -m workers probe`` and ``python -m workers start``, for volunteers.

probe [--json]          what this machine can serve, and why
start [-Q QUEUES] [ARGS] the Celery worker on exactly the queues the probe allows; an
                        explicit -Q is honoured but still checked. Other ARGS go to Celery.
"""

from __future__ import annotations

import json
import os
import sys

from workers import preflight, probe

EX_CONFIG = 78


def _probe(argv: list[str]) -> int:
    found = probe.report()
    print(json.dumps(found, indent=2) if "--json" in argv else probe.render(found))
    return 0 if probe.servable(found) else EX_CONFIG


def _split_queues(argv: list[str]) -> tuple[list[str] | None, list[str]]:
    """The -Q/--queues value (if given) and the other arguments."""
    rest, queues = [], None
    args = iter(argv)
    for arg in args:
        if arg in ("-Q", "--queues"):
            queues = next(args, "")
        elif arg.startswith(("-Q", "--queues=")):
            queues = arg.split("=", 1)[1] if arg.startswith("--queues=") else arg[2:]
        else:
            rest.append(arg)
    return ([q for q in queues.split(",") if q] if queues is not None else None), rest


def _start(argv: list[str]) -> int:
    wanted, rest = _split_queues(argv)
    if wanted is None:
        found = probe.report()
        wanted = probe.servable(found)
        if not wanted:
            print(probe.render(found), file=sys.stderr)
            return EX_CONFIG
        print(f"grid worker: serving -Q {','.join(wanted)} (what this machine can serve)", flush=True)
    problems = preflight.problems(wanted)
    if problems:
        for line in problems:
            print(f"grid worker: {line}", file=sys.stderr)
        return EX_CONFIG
    name = os.environ.get(preflight.NODE_NAME_ENV)
    if name and not any(arg in ("-n", "--hostname") or arg.startswith(("-n", "--hostname=")) for arg in rest):
        rest = ["-n", f"{name}@%h", *rest]  # a node's worker is named after it
    command = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", ",".join(wanted), *rest]
    os.execv(sys.executable, command)
    return 0  # not reached


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "probe":
        return _probe(rest)
    if command == "start":
        return _start(rest)
    print(f"unknown command {command!r}\n\n{__doc__.strip()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
