"""Attack 1: stop the ledger for everyone with one message. Whatever a node pushes on the
``ledger`` queue, of any size or shape, is refused with its reason and the batch goes on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.documents import ENGLISH_LINES, FRENCH_LINES
from tests.grid import wait_for


def test_garbage_on_the_ledger_queue_is_refused_while_100_honest_jobs_complete(
    grid, client, hostile, rejections
):
    def submit(n: int) -> str:
        lines = FRENCH_LINES if n % 2 else ENGLISH_LINES
        text = " ".join(lines[n % 4 :] + lines[: n % 4])
        return client.submit_text("summarise", text=text, language="fr" if n % 2 else "en", max_words=20)[
            "id"
        ]

    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(submit, range(50)))
        attack = hostile.start("garbage")
        ids = first + list(pool.map(submit, range(50, 100)))
    output, _ = attack.communicate(timeout=300)
    assert attack.returncode == 0, output
    pushed = output.count("pushed ")
    assert pushed >= 20

    done = [client.wait(job_id, timeout=300) for job_id in ids]

    assert [job["state"] for job in done] == ["succeeded"] * 100

    def all_refused() -> list | None:
        rows = rejections.new()
        return rows if len(rows) >= pushed else None

    try:
        refused = wait_for(all_refused, 60, "every garbage message refused")
    except AssertionError:
        seen = [(row.reason, row.detail) for row in rejections.new()]
        raise AssertionError(f"{pushed} pushed, refused: {seen}") from None
    reasons = {row.reason for row in refused}
    expected = {
        "oversized",
        "too_deep",
        "malformed",
        "unknown_task",
        "unsupported_version",
        "wrong_channel",
        "never_dispatched",
    }
    assert expected <= reasons, reasons
    assert "internal_error" not in reasons  # each was refused for what it is, not by accident
    assert all(row.detail for row in refused)
