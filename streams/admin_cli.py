"""`hitrun admin` (signed admin commands for operators who script) and `hitrun token`."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from hitrun.streams.auth import ROLES, InvalidCommand, new_command, new_token
from hitrun.streams.codec import encode
from hitrun.streams.config import Settings
from hitrun.streams.kafka_auth import client_options, started
from hitrun.streams.partitioning import partition_for_key
from hitrun.streams.topics import TopicLayoutError, ensure_topics


def signed_command(settings: Settings, action: str, signer: str, **fields: Any) -> dict[str, Any]:
    """The command, signed as `signer` with HITRUN_ADMIN_KEY, checked against the contract."""
    if settings.admin_key is None:
        raise click.ClickException(
            "HITRUN_ADMIN_KEY is not set: the workers apply only commands signed with their key"
        )
    try:
        return new_command(
            settings.admin_key.encode(), action, signer, fields, settings.admin_command_ttl
        )
    except InvalidCommand as exc:
        raise click.ClickException(f"invalid command: {exc}") from None


async def send_command(settings: Settings, command: dict[str, Any]) -> None:
    """Write the command to the admin topic, in its customer's partition (murmur2)."""
    await ensure_topics(settings, only={settings.topic_admin})
    producer = await started(
        lambda: AIOKafkaProducer(**client_options(settings), acks="all"), settings
    )
    try:
        key = command["customer_id"].encode()
        await producer.send_and_wait(
            settings.topic_admin,
            encode(command),
            key=key,
            partition=partition_for_key(key, settings.partitions),
        )
    finally:
        await producer.stop()


def _issue(action: str, signer: str, **fields: Any) -> None:
    settings = Settings.from_env()
    command = signed_command(settings, action, signer, **fields)
    try:
        asyncio.run(send_command(settings, command))
    except (KafkaError, TopicLayoutError) as exc:
        raise click.ClickException(
            f"cannot write to {settings.topic_admin}: {type(exc).__name__}: {exc}"
        ) from None
    click.echo(
        f"admin: {action} of {command['customer_id']} sent as {signer} "
        f"(event {command['event_id']}, valid until {command['expires_at']})"
    )


_signer = click.option(
    "--as",
    "signer",
    required=True,
    help="Your operator name: the signer, recorded as the actor.",
)
_reason = click.option("--reason", required=True, help="Why (recorded with the action).")
_note = click.option("--note", default=None, help="Free text, recorded as given.")
_scope = click.option(
    "--scope", type=click.Choice(["shop", "platform"]), default="shop", show_default=True
)


@click.group()
def admin() -> None:
    """Sign a command with HITRUN_ADMIN_KEY and write it to the admin topic.

    For operators who script; the HTTP API (/admin/...) signs for token holders.
    """


@admin.command()
@click.argument("customer")
@click.option("--shop", required=True, help="The shop whose blacklist it is.")
@_scope
@click.option("--days", type=int, default=None, help="How long; default: the shop's policy.")
@_reason
@_note
@_signer
def blacklist(
    customer: str,
    shop: str,
    scope: str,
    days: int | None,
    reason: str,
    note: str | None,
    signer: str,
) -> None:
    """Put CUSTOMER on a shop's (or the platform's) blacklist."""
    _issue(
        "blacklist",
        signer,
        customer_id=customer,
        shop_id=shop,
        scope=scope,
        duration_days=days,
        reason=reason,
        note=note,
    )


@admin.command()
@click.argument("customer")
@click.option("--shop", required=True, help="The shop whose blacklist it is.")
@_scope
@_reason
@_note
@_signer
def unblacklist(
    customer: str, shop: str, scope: str, reason: str, note: str | None, signer: str
) -> None:
    """Take CUSTOMER off a shop's (or the platform's) blacklist."""
    _issue(
        "unblacklist",
        signer,
        customer_id=customer,
        shop_id=shop,
        scope=scope,
        reason=reason,
        note=note,
    )


@admin.command()
@click.argument("customer")
@_reason
@_note
@_signer
def erase(customer: str, reason: str, note: str | None, signer: str) -> None:
    """Erase everything hitrun keeps of CUSTOMER (a data-protection request)."""
    _issue("erase", signer, customer_id=customer, shop_id="platform", reason=reason, note=note)


@click.command()
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
def token(name: str, role: str) -> None:
    """Make a random token for NAME with ROLE.

    Prints the token (give it to its holder; it is not stored) and, on
    stderr, the line for HITRUN_TOKENS_FILE, which holds only its hash.
    """
    try:
        secret, line = new_token(name, role)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(secret)
    click.echo(f"add to HITRUN_TOKENS_FILE: {line}", err=True)
