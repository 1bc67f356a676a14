"""The MCP server (app/mcp_server.py) driven by the official SDK's own client, over both
transports, against the session's real grid: ``python manage.py mcp`` over stdio with a token
from the environment, and ``python manage.py mcp --http`` as its own ASGI process, each request
with its bearer token. Every tool gives a real result from the grid's nodes (the tiny model's
summaries and translations are noise, but real); bad input is a tool error with the API's code."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import anyio
import httpx2
import pytest
import requests
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.documents import FRENCH_LINES, blank_pdf, text_pdf
from tests.grid import ROOT, Client, GridProcess, free_port, manage

TOOLS = {"ocr_document", "summarise", "translate", "extract_invoice", "job_status", "grid_stats"}
TEXT = "Le conseil approuve le budget des travaux de la toiture et la réfection des gouttières."
INVOICE = [
    "Syndic Lemaire SRL",
    "TVA BE 0403.170.701",
    "FACTURE N° 2025-0117",
    "Date de facture : 12/03/2025",
    "Total à payer :       4 350,00 EUR",
    "IBAN : BE71 0961 2345 6769",
]


# ---------------------------------------------------------------------------------------------
# The SDK's client over each transport.
# ---------------------------------------------------------------------------------------------


@asynccontextmanager
async def stdio_session(api_url: str, token: str | None):
    env = {key: value for key, value in os.environ.items() if key.startswith("GRID_")}
    env.update({"GRID_API_URL": api_url, "GRID_API_TOKEN": token or "", "GRID_MCP_POLL_SECONDS": "0.2"})
    params = StdioServerParameters(command=sys.executable, args=["manage.py", "mcp"], env=env, cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(url: str, token: str, statuses: list[int] | None = None):
    """A client session at ``url`` with the token; ``statuses`` collects the HTTP answers' codes."""
    headers = {"Authorization": f"Bearer {token}"}

    async def record(response: httpx2.Response) -> None:
        if statuses is not None:
            statuses.append(response.status_code)

    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=httpx2.Timeout(30, read=300), event_hooks={"response": [record]}
        ) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(scenario)


@pytest.fixture(scope="module")
def member_token(make_token) -> str:
    return make_token("mcp-member@koprogo.test")


@pytest.fixture(scope="module")
def mcp_http(grid, workdir):
    """``python manage.py mcp --http`` on a free port, beside the grid's API; its /mcp URL."""
    port = free_port()
    env = {**grid.env, "GRID_API_URL": grid.api_url, "GRID_MCP_POLL_SECONDS": "0.2"}
    process = GridProcess(
        "mcp-http",
        [
            sys.executable,
            "manage.py",
            "mcp",
            "--http",
            "--port",
            str(port),
            "--allowed-host",
            "mcp.koprogo.test",
        ],
        env,
        workdir / "logs",
    ).start()
    try:
        process.wait_ready("Uvicorn running on", timeout=60)
        yield f"http://127.0.0.1:{port}/mcp"
    except BaseException:
        print(process.output()[-4000:])
        raise
    finally:
        process.stop()


# ---------------------------------------------------------------------------------------------
# Helpers on answers.
# ---------------------------------------------------------------------------------------------


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


def assert_succeeded(result, kind: str, node_prefix: str) -> dict:
    assert not result.is_error, text_of(result)
    content = result.structured_content
    assert content["state"] == "succeeded" and content["kind"] == kind, content
    assert content["job_id"] and content["result"], content
    assert content["nodes"] and all(node.startswith(node_prefix) for node in content["nodes"]), content
    assert content["usage"]["wall_seconds"] > 0, content
    assert "exact_eur" in content["cost"], content  # metered through the ledger like any job
    return content


def assert_tool_error(result, code: str) -> dict:
    assert result.is_error, text_of(result)
    assert text_of(result).startswith(f"{code}: "), text_of(result)
    error = result.structured_content["error"]
    assert error["code"] == code, error
    return error


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------------------------
# Over stdio.
# ---------------------------------------------------------------------------------------------


def test_over_stdio_every_tool_gives_the_grids_real_result(grid, member_token, workdir):
    pdf = workdir / "mcp-minutes.pdf"
    pdf.write_bytes(text_pdf([FRENCH_LINES[:6]]))
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def scenario():
        async with stdio_session(grid.api_url, member_token) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            ocr = await session.call_tool(
                "ocr_document",
                {"path": str(pdf), "languages": "fra", "force_ocr": True},
                progress_callback=on_progress,
            )
            summary = await session.call_tool("summarise", {"text": TEXT, "language": "en", "max_words": 20})
            translation = await session.call_tool("translate", {"text": TEXT, "target": "nl"})
            invoice = await session.call_tool(
                "extract_invoice", {"content_base64": b64(text_pdf([INVOICE])), "filename": "facture.pdf"}
            )
            status = await session.call_tool("job_status", {"job_id": ocr.structured_content["job_id"]})
            stats = await session.call_tool("grid_stats", {"period": "day"})
            return tools, ocr, summary, translation, invoice, status, stats

    tools, ocr, summary, translation, invoice, status, stats = run(scenario)

    assert set(tools) == TOOLS
    assert {"path", "content_base64", "filename", "languages"} <= set(
        tools["ocr_document"].input_schema["properties"]
    )
    assert tools["translate"].input_schema["required"] == ["text", "target"]

    content = assert_succeeded(ocr, "ocr", "ocr-node@")
    assert "quorum est atteint" in text_of(ocr)
    assert content["usage"]["pages"] == 1
    assert content["result"]["page_readings"][0]["method"] == "ocr"  # force_ocr reached the node
    assert progress and progress[-1][0] == progress[-1][1] == 100.0, progress  # asked for, reported

    content = assert_succeeded(summary, "summarise", "llm-node@")
    assert text_of(summary) == content["result"]["summary"] and content["usage"]["tokens"]["summary"] > 0
    content = assert_succeeded(translation, "translate", "llm-node@")
    assert text_of(translation) == content["result"]["translation"]
    assert content["result"]["translation_language"] == "nl"

    content = assert_succeeded(invoice, "invoice", "ocr-node@")
    fields = content["result"]["fields"]
    assert fields["invoice_number"]["value"] == "2025-0117" and fields["iban"]["valid"] is True
    assert "invoice_number: 2025-0117" in text_of(invoice) and "iban: BE71096123456769 (valid)" in text_of(
        invoice
    )

    assert_succeeded(status, "ocr", "ocr-node@")
    assert status.structured_content["job_id"] == ocr.structured_content["job_id"]
    assert text_of(status) == text_of(ocr)

    assert not stats.is_error, text_of(stats)
    assert stats.structured_content["period"]["name"] == "day"
    assert stats.structured_content["jobs"]["submitted"] >= 4
    assert "money" not in stats.structured_content  # a member's token, not an operator's


def test_over_stdio_a_missing_or_refused_token_is_a_clear_error_at_start(grid):
    missing = manage("mcp", timeout=60)
    assert missing.returncode != 0 and "GRID_API_TOKEN is not set" in missing.stderr, missing.stderr
    assert missing.stdout == ""  # stdout is the protocol's: nothing else is written there

    env = {**os.environ, "GRID_API_URL": grid.api_url, "GRID_API_TOKEN": "kg_not-a-token"}
    refused = subprocess.run(
        [sys.executable, "manage.py", "mcp"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "refuses GRID_API_TOKEN: invalid_token" in refused.stderr, (
        refused.stderr
    )


# ---------------------------------------------------------------------------------------------
# Over streamable HTTP.
# ---------------------------------------------------------------------------------------------


def test_over_http_every_tool_gives_the_grids_real_result(mcp_http, member_token):
    document = b64(text_pdf([FRENCH_LINES[:6]]))

    async def scenario():
        async with http_session(mcp_http, member_token) as session:
            tools = {tool.name for tool in (await session.list_tools()).tools}
            progress = []

            async def on_progress(done, total, message):
                progress.append((done, total, message))

            ocr = await session.call_tool(
                "ocr_document",
                {"content_base64": document, "filename": "pv.pdf", "languages": "fra", "force_ocr": True},
                progress_callback=on_progress,
            )
            pipeline = await session.call_tool(
                "summarise",
                {"content_base64": document, "filename": "pv.pdf", "language": "fr", "max_words": 20},
            )
            translation = await session.call_tool("translate", {"text": TEXT, "target": "en"})
            invoice = await session.call_tool(
                "extract_invoice", {"content_base64": b64(text_pdf([INVOICE])), "filename": "facture.pdf"}
            )
            status = await session.call_tool(
                "job_status", {"job_id": translation.structured_content["job_id"]}
            )
            stats = await session.call_tool("grid_stats", {})
            return tools, progress, ocr, pipeline, translation, invoice, status, stats

    tools, progress, ocr, pipeline, translation, invoice, status, stats = run(scenario)

    assert tools == TOOLS
    assert_succeeded(ocr, "ocr", "ocr-node@")
    assert "quorum est atteint" in text_of(ocr)
    assert progress and progress[-1][0] == progress[-1][1], progress
    content = assert_succeeded(pipeline, "pipeline", "")
    assert {step["name"] for step in content["steps"]} == {"ocr", "summarise"}
    assert text_of(pipeline) == content["result"]["summary"]
    assert_succeeded(translation, "translate", "llm-node@")
    fields = assert_succeeded(invoice, "invoice", "ocr-node@")["result"]["fields"]
    assert fields["total"]["value"] == "4350.00" and fields["supplier_vat"]["valid"] is True
    assert status.structured_content == translation.structured_content
    assert not stats.is_error and stats.structured_content["jobs"]["submitted"] >= 4


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "0"},
    },
}


def initialize(url: str, token: str | None, **headers: str) -> requests.Response:
    """An MCP ``initialize`` request by hand, to see the HTTP answer the SDK's client hides."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json", **headers}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url, data=json.dumps(INITIALIZE), headers=headers, timeout=30)


def test_over_http_an_unknown_or_revoked_token_is_refused_before_any_tool_runs(
    mcp_http, flask_app, make_token
):
    post = partial(initialize, mcp_http)
    assert post(None).status_code == 401
    assert post("kg_not-a-token").status_code == 401
    token = make_token("mcp-revoked@koprogo.test")
    assert post(token).status_code == 200
    with flask_app.app_context():
        from sqlalchemy import select

        from app.auth import revoke
        from app.extensions import db
        from app.models import ApiToken

        row = db.session.scalars(select(ApiToken).where(ApiToken.owner == "mcp-revoked@koprogo.test")).one()
        revoke(row)
        db.session.commit()
    refused = post(token)
    assert refused.status_code == 401 and "invalid_token" in refused.headers["WWW-Authenticate"]

    statuses: list[int] = []

    async def with_the_sdk():
        async with http_session(mcp_http, "kg_not-a-token", statuses) as session:
            await session.list_tools()

    with pytest.raises(ExceptionGroup) as caught:  # the SDK's client cannot even initialise
        run(with_the_sdk)
    assert caught.group_contains(MCPError), repr(caught.value)
    assert statuses == [401], statuses


def test_over_http_the_local_hosts_and_the_allowed_ones_are_served_no_other(mcp_http, member_token):
    """A proxy passes its Host on (--allowed-host); a page elsewhere cannot aim a browser at it."""
    post = partial(initialize, mcp_http, member_token)
    assert post().status_code == 200  # 127.0.0.1:port
    assert post(Host="mcp.koprogo.test").status_code == 200
    assert post(Host="mcp.koprogo.test", Origin="https://mcp.koprogo.test").status_code == 200
    assert post(Host="evil.example").status_code == 421
    assert post(Host="mcp.koprogo.test", Origin="https://evil.example").status_code == 403
    assert initialize(mcp_http, "kg_not-a-token", Host="evil.example").status_code == 401  # token first


def test_over_http_each_client_acts_with_its_own_token(mcp_http, member_token, make_token):
    other = make_token("mcp-other@koprogo.test")

    async def scenario():
        async with http_session(mcp_http, member_token) as mine:
            job = await mine.call_tool("translate", {"text": TEXT, "target": "fr", "wait_seconds": 0})
        async with http_session(mcp_http, other) as theirs:
            seen = await theirs.call_tool("job_status", {"job_id": job.structured_content["job_id"]})
        return job, seen

    job, seen = run(scenario)
    assert not job.is_error, text_of(job)
    assert job.structured_content["state"] in ("queued", "running", "succeeded")
    assert_tool_error(seen, "not_found")  # the other member's token cannot see it
    assert seen.structured_content["error"]["status"] == 404


def test_over_http_a_path_on_the_servers_machine_is_refused(mcp_http, member_token):
    async def scenario():
        async with http_session(mcp_http, member_token) as session:
            return await session.call_tool("ocr_document", {"path": "/etc/passwd"})

    assert_tool_error(run(scenario), "invalid_parameter")


# ---------------------------------------------------------------------------------------------
# Errors and waiting.
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_a_tool_error_with_the_apis_code_and_the_server_goes_on(mcp_http, member_token):
    document = b64(text_pdf([FRENCH_LINES[:2]]))

    async def scenario():
        async with http_session(mcp_http, member_token) as session:
            return [
                await session.call_tool("ocr_document", {"content_base64": document, "languages": "deu"}),
                await session.call_tool(
                    "ocr_document", {"content_base64": "not base64!", "filename": "x.pdf"}
                ),
                await session.call_tool("ocr_document", {"content_base64": b64(b"plain words")}),
                await session.call_tool("translate", {"text": TEXT, "target": "de"}),
                await session.call_tool("summarise", {"text": TEXT, "max_words": 5}),
                await session.call_tool("summarise", {"text": "   "}),
                await session.call_tool("job_status", {"job_id": "not-a-job"}),
                await session.call_tool("grid_stats", {"period": "year"}),
                await session.call_tool("summarise", {"text": TEXT, "max_words": "twenty"}),
                await session.call_tool("translate", {"text": TEXT}),
                await session.call_tool("grid_stats", {"period": "week"}),
            ]

    (
        language,
        not_base64,
        not_a_document,
        target,
        words,
        empty,
        unknown,
        period,
        not_a_number,
        no_target,
        week,
    ) = run(scenario)
    assert_tool_error(language, "unknown_language")
    assert language.structured_content["error"]["status"] == 422
    assert_tool_error(not_base64, "invalid_parameter")
    assert_tool_error(not_a_document, "unsupported_type")
    assert_tool_error(target, "unknown_language")
    assert_tool_error(words, "invalid_parameter")
    assert_tool_error(empty, "empty_text")
    assert_tool_error(unknown, "not_found")
    assert_tool_error(period, "invalid_period")
    assert "max_words" in assert_tool_error(not_a_number, "invalid_parameter")["message"]  # the schema's
    assert "target" in assert_tool_error(no_target, "invalid_parameter")["message"]
    assert not week.is_error and week.structured_content["period"]["name"] == "week"


def test_a_job_longer_than_the_wait_is_given_as_still_running_then_followed_with_job_status(
    mcp_http, member_token
):
    async def scenario():
        async with http_session(mcp_http, member_token) as session:
            started = time.monotonic()
            early = await session.call_tool("summarise", {"text": TEXT, "max_words": 20, "wait_seconds": 0})
            answered_in = time.monotonic() - started
            job_id = early.structured_content["job_id"]
            done = await session.call_tool("job_status", {"job_id": job_id, "wait_seconds": 60})
            return early, answered_in, done

    early, answered_in, done = run(scenario)
    assert not early.is_error and early.structured_content["state"] in ("queued", "running"), early
    job_id = early.structured_content["job_id"]
    assert f"still {early.structured_content['state']}" in text_of(early) and job_id in text_of(early)
    assert "job_status" in text_of(early) and answered_in < 5
    assert_succeeded(done, "summarise", "llm-node@")
    assert done.structured_content["job_id"] == job_id


def test_a_job_that_fails_on_the_grid_is_a_tool_error_with_the_jobs_code(mcp_http, member_token):
    async def scenario():
        async with http_session(mcp_http, member_token) as session:
            # A blank scan is a sound document: the API takes it; only OCR finds it has no text.
            document = {"content_base64": b64(blank_pdf(1)), "filename": "scan.pdf", "max_words": 20}
            return await session.call_tool("summarise", document)

    failed = run(scenario)
    assert_tool_error(failed, "empty_text")
    content = failed.structured_content
    assert (
        content["state"] == "failed"
        and content["kind"] == "pipeline"
        and content["job_id"] in text_of(failed)
    )
    assert [(step["name"], step["state"]) for step in content["steps"]] == [
        ("ocr", "succeeded"),
        ("summarise", "failed"),
    ]


@pytest.mark.parametrize("fresh_grid", [14], indirect=True)  # a Redis database no other test uses
def test_an_api_gone_while_a_tool_waits_is_a_tool_error_naming_the_job_and_the_server_goes_on(
    fresh_grid, grid, make_token
):
    token = make_token("mcp-outage@koprogo.test")
    fresh_grid.api()  # an API of its own, and no node: the job stays queued
    api = fresh_grid.processes[-1]

    async def scenario():
        async with stdio_session(fresh_grid.api_url, token) as session:

            async def stop_the_api() -> None:
                await anyio.sleep(1.5)
                api.kill()  # at once (SIGKILL), as a crashed or restarted server's connections go

            async with anyio.create_task_group() as tasks:
                tasks.start_soon(stop_the_api)
                waiting = await session.call_tool(
                    "translate", {"text": TEXT, "target": "en", "wait_seconds": 60}
                )
            after = await session.call_tool("grid_stats", {})
            return waiting, after

    started = time.monotonic()
    waiting, after = run(scenario)

    assert time.monotonic() - started < 45
    assert_tool_error(waiting, "grid_unreachable")
    job_id = waiting.structured_content["job_id"]
    assert f"Job {job_id} was submitted: follow it with job_status" in text_of(waiting)
    assert_tool_error(after, "grid_unreachable")  # the server still answers, and says why
    # The job was recorded (the same database as the session's grid): it is there, and cancelled.
    member = Client(grid.api_url, token)
    assert member.job(job_id)["state"] == "queued"
    assert member.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
