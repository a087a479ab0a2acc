"""How every Kafka client hitrun creates reaches the cluster: bootstrap, TLS and SASL.

Managed clusters want SASL (PLAIN or SCRAM) over TLS. The settings come from
HITRUN_KAFKA_* (streams/config.py); `client_options` gives the keyword
arguments for aiokafka's producer, consumer and admin client, and
`faust_credentials` the same for Faust's own consumer and producer. No
client is built anywhere without them.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import faust
from aiokafka.errors import KafkaConnectionError
from faust.types.auth import CredentialsT

from hitrun.streams.config import Settings


class BrokerUnreachable(ConnectionError):
    """The broker did not answer within the time allowed; the message says where and how long."""

    def __init__(self, servers: list[str], waited_s: float, cause: BaseException) -> None:
        super().__init__(
            f"cannot reach the broker at {','.join(servers)} (tried for {waited_s:.0f} s; "
            f"last error: {cause}); is it running, and is HITRUN_KAFKA_BOOTSTRAP right?"
        )


class _Client(Protocol):
    async def start(self) -> None: ...


C = TypeVar("C", bound=_Client)


async def started(make: Callable[[], C], settings: Settings) -> C:
    """A client from `make`, started; a new one is tried until HITRUN_CONNECT_TIMEOUT.

    Each refused client is stopped (no connection is left behind); after the
    timeout, BrokerUnreachable says where it tried and for how long.
    """
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline, delay = began + settings.connect_timeout_s, 0.25
    while True:
        client = make()
        try:
            await client.start()
            return client
        except KafkaConnectionError as exc:
            await _stop(client)
            if loop.time() + delay > deadline:
                raise BrokerUnreachable(
                    bootstrap_servers(settings), loop.time() - began, exc
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def _stop(client: Any) -> None:
    """aiokafka's producer and consumer stop; its admin client closes."""
    stop = getattr(client, "stop", None) or client.close
    await stop()


def bootstrap_servers(settings: Settings) -> list[str]:
    """`host:port` entries of HITRUN_KAFKA_BOOTSTRAP (comma separated)."""
    return [s.strip() for s in settings.kafka_bootstrap.split(",") if s.strip()]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL: the system's CAs or the CA file, hostnames checked."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    context.check_hostname = settings.kafka_ssl_check_hostname
    if not settings.kafka_ssl_check_hostname:
        # Still verify the chain: only the name check is off.
        context.verify_mode = ssl.CERT_REQUIRED
    if settings.kafka_ssl_certfile is not None:
        context.load_cert_chain(
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
            password=settings.kafka_ssl_key_password,
        )
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client: servers, protocol, TLS and SASL."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same connection for Faust's consumer and producer (its `broker_credentials`)."""
    context = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
