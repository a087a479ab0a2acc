"""`hitrun why CUSTOMER`: the customer's decision trail, read from a worker's HTTP server."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import click

from hitrun.streams.cli import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE


@click.command()
@click.argument("customer_id")
@click.option(
    "--url",
    default=None,
    help="A worker's HTTP server (default: http://HITRUN_WEB_HOST:HITRUN_WEB_PORT).",
)
@click.option(
    "--token",
    envvar="HITRUN_TOKEN",
    required=True,
    help="A support or operator token (`hitrun token`); default: $HITRUN_TOKEN.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the trail's raw JSON.")
@click.pass_context
def why(ctx: click.Context, customer_id: str, url: str | None, token: str, as_json: bool) -> None:
    """Why CUSTOMER_ID stands where they stand: strikes, blacklistings, open orders and the
    policy values that applied, in time order (GET /customers/{id}/why)."""
    if url is None:
        from hitrun.streams.config import Settings

        settings = Settings.from_env()
        url = f"http://{settings.web_host}:{settings.web_port}"
    address = f"{url.rstrip('/')}/customers/{urllib.parse.quote(customer_id, safe='')}/why"
    request = urllib.request.Request(address, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            trail: dict[str, Any] = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            click.echo(f"hitrun why: no state for customer {customer_id}", err=True)
            ctx.exit(EXIT_FAILED)
        click.echo(f"hitrun why: the worker answered {exc.code} {exc.reason}", err=True)
        ctx.exit(EXIT_USAGE if exc.code in (401, 403) else EXIT_FAILED)
    except (urllib.error.URLError, OSError) as exc:
        click.echo(f"hitrun why: no worker answered at {url}: {exc}", err=True)
        ctx.exit(EXIT_UNREACHABLE)
    if as_json:
        click.echo(json.dumps(trail, indent=2))
        return
    click.echo(render(trail))


def render(trail: dict[str, Any]) -> str:
    """The trail as lines for a person: one per decision, then the policies."""
    listed = trail["blacklisted_on"]
    scopes = ", ".join("the platform" if s == "*" else f"shop {s}" for s in listed)
    lines = [
        f"customer {trail['customer_id']}: "
        + (f"blacklisted on {scopes}" if listed else "not blacklisted")
    ]
    lines += [f"  {decision['at']}  {decision['text']}" for decision in trail["decisions"]]
    if not trail["decisions"]:
        lines.append("  no decision held (nothing open, no strike in the window)")
    for shop, policy in trail["policies"].items():
        windows = ", ".join(
            f"{method} {window or 'none'}" for method, window in policy["payment_windows"].items()
        )
        lines.append(
            f"policy of {shop}: {policy['strike_threshold']} strikes within "
            f"{policy['strike_window']} blacklist for {policy['blacklist_duration']} "
            f"({policy['blacklist_scope']} list); late-payment grace "
            f"{policy['late_payment_grace']}; payment windows: {windows}"
        )
    rules = trail.get("link_policy")
    if rules is not None:
        lines.append(
            f"link policy: one shared {', '.join(rules['strong_kinds'])} links, or "
            f"{rules['min_kinds']} kinds together; an identifier on more than "
            f"{rules['common_after']} customers links nothing; evidence counts for "
            f"{rules['window']}"
        )
    return "\n".join(lines)
