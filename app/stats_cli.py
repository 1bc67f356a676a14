"""``manage.py stats`` and ``manage.py models``: what ``GET /api/v1/stats`` (with the money) and
``GET /api/v1/models`` answer, for operators, as a table or as JSON."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import current_app

from app import catalog, stats


@click.command("stats")
@click.option(
    "--period",
    type=click.Choice(list(stats.PERIODS)),
    default=None,
    help=f"The last day, week (7 days) or month (30 days); default {stats.DEFAULT_PERIOD}.",
)
@click.option(
    "--from", "start", default=None, help="Start of the span (ISO 8601, UTC unless an offset is given)."
)
@click.option("--to", "end", default=None, help="End of the span (default: now).")
@click.option("--json", "as_json", is_flag=True, help="The API's JSON answer instead of a table.")
def stats_command(period: str | None, start: str | None, end: str | None, as_json: bool) -> None:
    """Requests, tokens, latency, jobs, compute hours, euros, nodes and CO₂ over a span."""
    try:
        span = stats.window(period, start, end, int(current_app.config["STATS_MAX_DAYS"]))
    except stats.BadPeriod as exc:
        raise click.ClickException(str(exc)) from None
    found = stats.summary(span, money=True)
    click.echo(json.dumps(found, indent=2, ensure_ascii=False) if as_json else render_stats(found))


def render_stats(found: dict[str, Any]) -> str:
    """The figures as an operator reads them."""
    period, jobs, co2 = found["period"], found["jobs"], found["co2"]
    lines = [
        f"{period['name']}: {period['from'][:19]} → {period['to'][:19]} UTC",
        "",
        f"{'capability':<12}{'executions':>11}{'succeeded':>11}{'units':>16}{'compute hours':>16}",
    ]
    for capability, line in found["capabilities"].items():
        units = f"{line['units']} {line['unit']}s"
        lines.append(
            f"{capability:<12}{line['executions']:>11}{line['succeeded']:>11}{units:>16}{line['compute_hours']:>16}"
        )
    latency = jobs["latency_seconds"]
    outcomes = ", ".join(f"{state} {count}" for state, count in jobs["by_outcome"].items())
    lines += [
        "",
        f"requests    {found['requests']} steps done, {found['tokens']} tokens",
        f"jobs        {jobs['submitted']} submitted: {outcomes}",
        f"latency     {_seconds(latency['average'])} on average, {_seconds(latency['p95'])} at p95 "
        f"({latency['jobs']} succeeded jobs)",
        f"nodes       {found['nodes']['online']} online ("
        + ", ".join(f"{state} {n}" for state, n in found["nodes"]["by_state"].items() if state != "online")
        + ")",
        f"CO₂         {co2['co2_grams']} g emitted ({co2['energy_wh']} Wh); {co2['co2_saved_grams']} g saved "
        f"against {co2['cloud_reference_grams']} g for the same requests on a cloud GPU",
    ]
    for name, part in co2["by_hardware_class"].items():
        lines.append(
            f"            {name}: {part['seconds']} s, {part['energy_wh']} Wh, {part['co2_grams']} g"
        )
    assumed = co2["assumptions"]
    watts = ", ".join(f"{name} {w} W" for name, w in assumed["watts_by_hardware_class"].items())
    lines.append(
        f"            assumed: {assumed['grid_g_per_kwh']} g/kWh; {watts}; "
        f"unknown {assumed['unknown_hardware_watts']} W; {assumed['cloud_g_per_request']} g per cloud request"
    )
    money = found.get("money")
    if money:
        earned = ", ".join(f"{capability} {eur}" for capability, eur in money["earned_eur"].items())
        lines.append(
            f"money       earned {money['earned_exact_eur']} € ({earned or 'nothing'}); distributed "
            f"{money['distributed_eur']} € in {money['rewards_paid']} rewards paid"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="The API's JSON answer instead of a table.")
def models_command(as_json: bool) -> None:
    """The models the grid's nodes registered, and how many online nodes serve each now."""
    found = catalog.models()
    if as_json:
        click.echo(json.dumps({"models": found}, indent=2, ensure_ascii=False))
        return
    if not found:
        click.echo("No node has registered a model.")
        return
    click.echo(
        f"{'model':<40}{'online':>8}{'available':>11}{'edge':>6}{'size':>11}{'parameters':>14}"
        f"{'context':>9}  quantisation"
    )
    for model in found:
        size = "-" if model["bytes"] is None else f"{model['bytes'] / 2**20:.1f} MiB"
        click.echo(
            f"{model['id'][:39]:<40}{model['nodes_online']:>4}/{model['nodes']:<3}"
            f"{'yes' if model['available'] else 'no':>11}{'yes' if model['edge_compatible'] else 'no':>6}"
            f"{size:>11}{model['parameters'] or '-':>14}{model['context_length'] or '-':>9}  "
            f"{model['quantisation'] or '-'}"
        )
