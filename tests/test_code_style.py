"""The code is formatted and linted by ruff, as the project's style asks; CI runs it through this test."""

from __future__ import annotations

import subprocess

from tests.grid import ROOT, VENV_BIN


def ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "ruff"), *args], cwd=ROOT, capture_output=True, text=True)


def test_code_passes_ruff_lint():
    result = ruff("check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_ruff_formatted():
    result = ruff("format", "--no-cache", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr
