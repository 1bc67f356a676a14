"""``python manage.py mcp``: the grid's MCP server for assistants, over stdio or streamable HTTP
(app/mcp_server.py, docs/assistants.md)."""

from __future__ import annotations

import dataclasses

import click
from flask import current_app


@click.command("mcp")
@click.option("--http", "http", is_flag=True, help="Serve streamable HTTP (at /mcp) instead of stdio.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --http: the address to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="With --http: the port.")
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    help="With --http: a Host a reverse proxy passes on (name, or name:* for any port); "
    "also GRID_MCP_ALLOWED_HOSTS.",
)
@click.option("--api-url", default=None, help="The grid's API (default GRID_API_URL, else PUBLIC_URL).")
@click.option(
    "--wait-seconds",
    type=float,
    default=None,
    help="How long a job tool waits for its job (default GRID_MCP_WAIT_SECONDS, 120).",
)
def mcp_command(
    http: bool,
    host: str,
    port: int,
    allowed_hosts: tuple[str, ...],
    api_url: str | None,
    wait_seconds: float | None,
) -> None:
    """The MCP server: tools ocr_document, summarise, translate, extract_invoice, job_status,
    grid_stats. Over stdio it acts with GRID_API_TOKEN; over HTTP with each client's bearer token."""
    from app import mcp_server

    settings = mcp_server.Settings.from_environment(
        current_app.config["PUBLIC_URL"],
        api_url=api_url,
        wait_seconds=wait_seconds,
        local_files=not http,
        allowed_hosts=allowed_hosts or None,
    )
    if http:
        import uvicorn

        # No shared token over HTTP: every client brings its own.
        settings = dataclasses.replace(settings, token=None)
        click.echo(f"MCP server for {settings.api_url} at http://{host}:{port}/mcp", err=True)
        uvicorn.run(mcp_server.http_app(settings, host), host=host, port=port, log_level="info")
        return
    if not settings.token:
        raise click.ClickException(
            "GRID_API_TOKEN is not set: create a token (python manage.py tokens create --owner YOU) "
            "and put it in the assistant's configuration for this server (docs/assistants.md)."
        )
    api = mcp_server.GridAPI(settings.api_url, timeout=10)
    try:
        api.call(settings.token, "GET", "/api/v1/models")
    except mcp_server.GridError as exc:
        if exc.code != mcp_server.GRID_UNREACHABLE:
            raise click.ClickException(
                f"the grid at {settings.api_url} refuses GRID_API_TOKEN: {exc}"
            ) from None
        # The assistant may start before the grid: its tools say so until it answers.
        click.echo(f"warning: {exc.message}", err=True)
    mcp_server.build_server(settings).run("stdio")
