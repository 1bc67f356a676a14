"""axe-core in the page: the WCAG 2.1 A and AA rules run by the browser on what it rendered.

axe-core is pinned in ``scripts/axe-core.sh`` (version and SHA-512), which fetches it from the npm
registry into ``var/vendor/axe-core-VERSION/axe.min.js``; ``make test`` runs it first.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from tests.grid import ROOT

FETCH_SCRIPT = ROOT / "scripts" / "axe-core.sh"
#: The rules checked: WCAG 2.0 and 2.1, levels A and AA.
TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")

_RUN = """
const done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']})
  .then(results => done({violations: results.violations, passes: results.passes.length,
                         incomplete: results.incomplete.map(rule => rule.id)}))
  .catch(error => done({error: String(error && error.stack || error)}));
"""


def version() -> str:
    """The version ``scripts/axe-core.sh`` pins (read from it: one place to change it)."""
    found = re.search(r"^AXE_VERSION=(\S+)$", FETCH_SCRIPT.read_text(), re.MULTILINE)
    assert found, f"no AXE_VERSION= line in {FETCH_SCRIPT}"
    return found.group(1)


def path() -> Path:
    return ROOT / "var" / "vendor" / f"axe-core-{version()}" / "axe.min.js"


@cache
def source() -> str:
    """axe.min.js's text; fails (never skips) when it was not fetched."""
    script = path()
    if not script.is_file() or script.stat().st_size == 0:
        raise AssertionError(
            f"axe-core {version()} is missing ({script.relative_to(ROOT)}): run scripts/axe-core.sh "
            "(make test and make screenshots run it)"
        )
    return script.read_text(encoding="utf-8")


def audit(driver) -> dict:
    """axe's outcome on the page: ``violations`` (each rule broken, with its elements), ``passes``
    (how many rules held) and ``incomplete`` (the rules axe could not decide alone: to review)."""
    driver.execute_script(source())
    outcome = driver.execute_async_script(_RUN, list(TAGS))
    if outcome is None or "error" in outcome:
        raise AssertionError(f"axe.run failed on {driver.current_url}: {outcome}")
    return outcome


def check_page(driver) -> list[dict]:
    """The page's violations of the WCAG 2.1 A and AA rules, as axe reports them."""
    return audit(driver)["violations"]


def describe(violations: list[dict]) -> str:
    """One paragraph a violation: rule, impact, help, where (selectors) and the first element's HTML."""
    lines = []
    for violation in violations:
        nodes = violation.get("nodes", [])
        targets = ", ".join(" ".join(map(str, node.get("target", []))) for node in nodes[:5])
        if len(nodes) > 5:
            targets += f" (and {len(nodes) - 5} more)"
        lines.append(
            f"- {violation['id']} [{violation.get('impact')}]: {violation.get('help')}\n"
            f"  {violation.get('helpUrl', '')}\n"
            f"  at: {targets}\n"
            f"  html: {nodes[0].get('html', '') if nodes else ''}"
        )
        if nodes and nodes[0].get("failureSummary"):
            lines.append("  " + nodes[0]["failureSummary"].replace("\n", "\n  "))
    return "\n".join(lines)


def assert_accessible(driver, what: str = "") -> dict:
    """Fails with a readable list when axe finds any violation on the page; else axe's outcome."""
    outcome = audit(driver)
    violations = outcome["violations"]
    assert not violations, (
        f"{len(violations)} WCAG 2.1 A/AA violation(s) on {what or driver.current_url} "
        f"({driver.current_url}):\n{describe(violations)}"
    )
    return outcome
