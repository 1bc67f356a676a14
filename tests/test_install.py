"""Each side installs from its own requirements file alone and runs: the coordinator from
``requirements/coordinator.txt`` (it takes a PDF through the API), a volunteer from
``requirements/worker.txt``. The rest of the suite runs in the dev virtualenv, which holds
both, so only these tests see a package missing from one side.

The coordinator imports from ``workers`` only the shared protocol, the package
``workers.protocol`` (SHARED_PROTOCOL); the volunteers never import ``app``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.documents import FRENCH_LINES, text_pdf
from tests.grid import ROOT, UNUSED_ENROLMENT, VENV_BIN, GridProcess, free_port, wait_for

#: The package of ``workers`` the coordinator may import, with its modules: what both sides
#: share (record schemas, signatures, error codes, document and text checks). Never an engine,
#: a task or the Celery app.
SHARED_PROTOCOL = "workers.protocol"
ENGINES = ("llama_cpp", "pytesseract")
COORDINATOR_ONLY = ("flask", "flask_sqlalchemy", "flask_migrate", "sqlalchemy", "alembic", "psycopg2")
# A Redis database no test's worker consumes: the job submitted here is never run.
BROKER_DB = 14
# Without its cache, pip compiles llama-cpp-python (about 5 minutes on 2 cores).
PIP_TIMEOUT = 1800


def _clean_env(venv: Path | None = None, **extra: str) -> dict[str, str]:
    """The session's environment (broker, database, model...), with nothing that would let a
    virtualenv see another one's packages."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env["PYTHONNOUSERSITE"] = "1"
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    env["GRID_BROKER_URL"] = os.environ["GRID_BROKER_URL"].rsplit("/", 1)[0] + f"/{BROKER_DB}"
    env.update(extra)
    return env


def _build_venv(path: Path, requirements: str) -> Path:
    """A fresh virtualenv with ``pip install -r requirements`` and nothing else."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    done = subprocess.run(
        [str(path / "bin" / "python"), "-m", "pip", "install", "-q", "-r", str(ROOT / requirements)],
        cwd=ROOT,
        env=_clean_env(path),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
    )
    assert done.returncode == 0, f"pip install -r {requirements} failed:\n{done.stdout}\n{done.stderr}"
    return path


def _run(venv: Path, *args: str, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    """``python ARGS`` with the virtualenv's interpreter, from the repository root."""
    return subprocess.run(
        [str(venv / "bin" / "python"), *args],
        cwd=ROOT,
        env=_clean_env(venv, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Run in the virtualenv after the imports under test: what got imported, what is installed,
# and where imports come from.
_REPORT = """
import importlib.util, json, sys
print(json.dumps({
    "prefix": sys.prefix,
    "path": sys.path,
    "modules": sorted(sys.modules),
    "installed": {name: importlib.util.find_spec(name) is not None for name in %r},
}))
"""


def _imports(venv: Path, statements: str) -> dict:
    done = _run(venv, "-c", statements + _REPORT % ((*ENGINES, *COORDINATOR_ONLY),))
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(found["prefix"]).resolve() == venv.resolve()
    dev_venv = str(VENV_BIN.parent)
    assert not [entry for entry in found["path"] if entry.startswith(dev_venv)], found["path"]
    return found


def _roots(modules: list[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.fixture(scope="module")
def coordinator_venv(tmp_path_factory) -> Path:
    return _build_venv(tmp_path_factory.mktemp("install") / "coordinator", "requirements/coordinator.txt")


@pytest.fixture(scope="module")
def worker_venv(tmp_path_factory) -> Path:
    return _build_venv(tmp_path_factory.mktemp("install") / "worker", "requirements/worker.txt")


@pytest.fixture
def api(coordinator_venv: Path, tmp_path: Path) -> Iterator[tuple[str, GridProcess]]:
    """The API as the systemd unit runs it: gunicorn from the coordinator's virtualenv."""
    port = free_port()
    process = GridProcess(
        "api",
        [
            str(coordinator_venv / "bin" / "gunicorn"),
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "app:create_app()",
        ],
        _clean_env(coordinator_venv),
        tmp_path,
    ).start()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.alive(), f"the API exited:\n{process.output()[-3000:]}"
        try:
            return requests.get(f"{url}/healthz", timeout=1).ok
        except requests.RequestException:  # not listening yet
            return False

    try:
        wait_for(healthy, 60, "the API from the coordinator's virtualenv")
        yield url, process
    finally:
        process.stop()


# --- the coordinator from requirements/coordinator.txt --------------------------------------


def test_the_coordinator_s_entry_points_load_without_the_engines(coordinator_venv: Path):
    found = _imports(
        coordinator_venv,
        "from app import create_app\ncreate_app()\nimport app.ledger_worker\nimport app.flower\n",
    )

    assert not _roots(found["modules"]) & set(ENGINES)
    assert not {name for name, present in found["installed"].items() if present and name in ENGINES}
    workers_modules = {name for name in found["modules"] if _roots([name]) == {"workers"}}
    assert {name for name in workers_modules if not _shared(name)} == set()
    cli = _run(coordinator_venv, "manage.py", "--help")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert {"db", "tokens", "ledger", "nodes"} <= set(cli.stdout.split()), cli.stdout


def test_the_coordinator_s_api_takes_a_pdf(api: tuple[str, GridProcess], make_token):
    url, process = api
    token = make_token("install-check@koprogo.test")
    pdf = text_pdf([FRENCH_LINES, FRENCH_LINES[:3]])

    response = requests.post(
        f"{url}/api/v1/jobs/ocr",
        headers={"Authorization": f"Bearer {token}"},
        files={"file": ("minutes.pdf", pdf)},
        data={"languages": "fra"},
        timeout=60,
    )

    assert response.status_code == 202, f"{response.text}\n{process.output()[-3000:]}"
    job = response.json()
    assert job["state"] == "queued"
    # pdfinfo counted the pages: the document was inspected, as every upload is.
    assert job["input"] == {
        "filename": "minutes.pdf",
        "type": "application/pdf",
        "bytes": len(pdf),
        "pages": 2,
    }


# --- a volunteer from requirements/worker.txt -----------------------------------------------


def test_a_volunteer_s_worker_loads_without_the_coordinator(worker_venv: Path):
    found = _imports(
        worker_venv,
        "from workers.celery import app\n"
        "app.loader.import_default_modules()\n"  # the task modules, as `celery worker` imports them
        "import workers.tasks.ocr, workers.tasks.llm, workers.probe, workers.preflight\n",
    )

    assert {"workers.tasks.ocr", "workers.tasks.llm", "pytesseract", "pdf2image"} <= set(found["modules"])
    assert "app" not in _roots(found["modules"])
    assert not _roots(found["modules"]) & set(COORDINATOR_ONLY)
    assert not {name for name, present in found["installed"].items() if present and name in COORDINATOR_ONLY}

    # The probe loads llama.cpp and the model, and finds tesseract and poppler, from this venv.
    probe = _run(
        worker_venv,
        "-m",
        "workers",
        "probe",
        "--json",
        **UNUSED_ENROLMENT,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    verdicts = json.loads(probe.stdout)["queues"]
    assert {queue: verdict["can_serve"] for queue, verdict in verdicts.items()} == {"ocr": True, "llm": True}


# --- the import boundary, in the source -----------------------------------------------------


def _imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every absolute import in a file, lazy ones included. For ``from X
    import a, b`` both ``X.a`` and ``X.b`` (each may be a module); for ``import_module("X")``, X."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def _shared(module: str) -> bool:
    """True for ``workers`` itself (``from workers import protocol``) and the shared protocol."""
    return module in ("workers", SHARED_PROTOCOL) or module.startswith(f"{SHARED_PROTOCOL}.")


def _workers_module(name: str) -> str | None:
    """The ``workers`` module an imported name lives in (``workers.protocol.errors.BadInput`` is
    in ``workers.protocol.errors``), or None when it is not one of ours."""
    if name.split(".")[0] != "workers":
        return None
    parts = name.split(".")
    for length in range(len(parts), 0, -1):
        candidate = ROOT.joinpath(*parts[:length])
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts[:length])
    return name


def _coordinator_files() -> list[Path]:
    return sorted((ROOT / "app").rglob("*.py")) + [ROOT / "manage.py", ROOT / "celeryconfig.py"]


def _shared_files() -> list[Path]:
    return sorted(ROOT.joinpath(*SHARED_PROTOCOL.split(".")).rglob("*.py"))


def test_the_coordinator_imports_only_the_shared_protocol_from_workers():
    """``app/``, manage.py and celeryconfig.py import from ``workers`` only ``workers.protocol``
    and its modules, which themselves import nothing else of ``workers`` and no engine."""
    shared = _shared_files()
    files = _coordinator_files() + shared
    assert len(files) > 20 and all(path.is_file() for path in files)
    modules = {path.stem for path in shared}
    assert {"__init__", "records", "signing", "errors", "documents", "texts"} <= modules

    crossings = set()
    for path in files:
        for line, name in _imported_modules(path):
            module = _workers_module(name)
            if module is not None and not _shared(module):
                crossings.add(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if name.split(".")[0] in ENGINES:
                crossings.add(f"{path.relative_to(ROOT)}:{line} imports the engine {name}")
            if path in shared and name.split(".")[0] in ("app", "celery", "flask", *COORDINATOR_ONLY):
                crossings.add(f"{path.relative_to(ROOT)}:{line} imports {name} into the shared protocol")
            if path in shared and name.startswith("pdf2image.convert"):  # pdfinfo only: no rendering
                crossings.add(f"{path.relative_to(ROOT)}:{line} renders pages with {name}")

    assert sorted(crossings) == [], f"the coordinator's side may import from workers only {SHARED_PROTOCOL}"


def test_the_volunteers_never_import_the_coordinator():
    files = sorted((ROOT / "workers").rglob("*.py"))
    assert len(files) > 10

    crossings = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        for line, name in _imported_modules(path)
        if name.split(".")[0] == "app"
    ]

    assert crossings == []
