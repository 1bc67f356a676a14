#!/usr/bin/env python
"""Operator command line: python manage.py --help

db upgrade                 create or upgrade the database (Alembic, via Flask-Migrate)
tokens create --owner ME   an API token, shown once
participants invite EMAIL  a one-time link to set a password for the web pages (--operator)
submit FILE --wait         submit a document through the pipeline and follow it
ledger show                the latest ledger entries
stats --period week        requests, compute hours, euros, nodes and CO₂ (--json)
models                     the models the grid serves now (--json)
mcp                        the MCP server for assistants, over stdio (--http: streamable HTTP)
demo                       the whole grid on this machine, with a sample document
"""

from flask.cli import FlaskGroup

from app import create_app


def main() -> None:
    FlaskGroup(create_app=create_app, help=__doc__, add_version_option=False)()


if __name__ == "__main__":
    main()
