"""What the accessibility tests saw on each page, printed at the end of a run that checked pages
(``make test``, ``make screenshots``): axe's outcome (rules broken, rules held, rules left for a
person to review) and the server's response time for the page, as the browser timed it."""

from __future__ import annotations

from dataclasses import dataclass

from selenium.webdriver.remote.webdriver import WebDriver

#: The server's part of the page's navigation: the request sent to the first byte of the answer
#: (Navigation Timing level 2), in milliseconds; None when the browser kept no entry.
_SERVER_MS = """
const entry = performance.getEntriesByType('navigation')[0];
return entry ? entry.responseStart - entry.requestStart : null;
"""


@dataclass(frozen=True)
class Seen:
    page: str
    lang: str
    role: str
    violations: int
    passes: int
    incomplete: tuple[str, ...]
    server_ms: float | None


SEEN: list[Seen] = []


def server_ms(driver: WebDriver) -> float | None:
    value = driver.execute_script(_SERVER_MS)
    return None if value is None else float(value)


def record(driver: WebDriver, page: str, lang: str, role: str, outcome: dict) -> None:
    SEEN.append(
        Seen(
            page=page,
            lang=lang,
            role=role,
            violations=len(outcome["violations"]),
            passes=int(outcome["passes"]),
            incomplete=tuple(outcome["incomplete"]),
            server_ms=server_ms(driver),
        )
    )


def lines() -> list[str]:
    """A table a line a page and language, in the order checked."""
    if not SEEN:
        return []
    row = "{:<26} {:<4} {:<9} {:>10} {:>10} {:>9}  {}"
    out = [
        "axe-core (WCAG 2.1 A and AA) and server response time, page by page:",
        row.format("page", "lang", "as", "violations", "rules held", "server ms", "to review"),
    ]
    for seen in SEEN:
        ms = "—" if seen.server_ms is None else f"{seen.server_ms:.1f}"
        review = ", ".join(seen.incomplete) or "—"
        out.append(row.format(seen.page, seen.lang, seen.role, seen.violations, seen.passes, ms, review))
    return out
