"""HTTP views on each worker: health, readiness, customer inspection and admin actions.

/metrics comes from the Prometheus sensor set up in streams/app.py.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import aiohttp.web
import orjson
from aiohttp.http_exceptions import BadHttpMessage
from faust import web

from hitrun.agents import retention
from hitrun.agents.customer import (
    CLOCK_KEY_PREFIX,
    IDENTITY_KEY_PREFIX,
    consume_loop,
    customers_table,
    link_policy,
    policies,
    retention_policy,
    stream_clock,
)
from hitrun.agents.state import CustomerState, as_of, decode_state
from hitrun.agents.unpaid import describe
from hitrun.agents.why import explain
from hitrun.streams import faust_bridge
from hitrun.streams.app import admin_topic, app, settings
from hitrun.streams.auth import OPERATOR, SUPPORT, Identity, InvalidCommand, Tokens, new_command
from hitrun.streams.brokertime import broker_time
from hitrun.streams.codec import encode

log = logging.getLogger(__name__)
tokens = Tokens(settings.token_entries)

View = Callable[..., Awaitable[web.Response]]


class _MalformedRequests(logging.Filter):
    """aiohttp logs a request its parser refuses with a traceback that quotes the raw
    header line, which may hold a token: keep one line, without the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        refused = record.exc_info[1] if record.exc_info else None
        if isinstance(refused, BadHttpMessage):
            record.msg, record.args = (
                "refused a malformed HTTP request (400): %s",
                (type(refused).__name__,),
            )
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())


def requires(role: str) -> Callable[[View], View]:
    """Answer 401 without a valid bearer token and 403 without `role`, before anything else.

    The handler gets the caller's identity as `identity`. A customer view
    forwarded to the worker that owns the customer carries the same header
    and is checked there again.
    """

    def decorate(handler: View) -> View:
        @functools.wraps(handler)
        async def checked(self: web.View, request: web.Request, **kwargs: Any) -> web.Response:
            if not tokens:
                return self.json(
                    {"error": "no tokens are configured (HITRUN_TOKENS_FILE or HITRUN_TOKENS)"},
                    status=401,
                )
            identity = tokens.authenticate(_authorization(request))
            if identity is None:
                return self.json(
                    {"error": "a valid bearer token is required"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="hitrun"'},
                )
            if not identity.may(role):
                return self.json(
                    {"error": f"the token {identity.name!r} has no {role} role"}, status=403
                )
            return await handler(self, request, identity=identity, **kwargs)

        return checked

    return decorate


def _authorization(request: web.Request) -> bytes | None:
    """The raw Authorization header, whatever bytes it holds (None: absent or repeated)."""
    # Faust's Request type is abstract; the object is aiohttp's, whose headers are a multidict.
    values = cast(aiohttp.web.Request, request).headers.getall("Authorization", [])
    if len(values) != 1:
        return None
    # aiohttp decodes header bytes as UTF-8 with surrogate escapes; give the bytes back.
    try:
        return values[0].encode("utf-8", "surrogateescape")
    except UnicodeError:
        return None


def readiness() -> tuple[bool, str]:
    """Whether this worker has its partitions, recovered tables and deadline index, and why
    not."""
    if consume_loop.status.broker_error is not None:
        return False, f"broker unavailable ({consume_loop.status.broker_error}); retrying"
    if app.rebalancing:
        return False, "rebalancing"
    if not faust_bridge.tables_recovered(app):
        return False, "recovering tables"
    assigned = app.consumer.assignment() if app.consumer else set()
    if not assigned:
        return False, "no partitions assigned"
    if not consume_loop.status.prepared:
        return False, "rebuilding the deadline index"
    return True, f"{len(assigned)} partitions assigned"


@app.page("/healthz")
async def healthz(self: web.View, request: web.Request) -> web.Response:
    """Answers while the process is alive."""
    return self.json({"status": "alive"})


@app.page("/readyz")
async def readyz(self: web.View, request: web.Request) -> web.Response:
    """200 once partitions are assigned, tables recovered and the deadline index rebuilt,
    503 with the reason before."""
    ready, reason = readiness()
    return self.json({"ready": ready, "reason": reason}, status=200 if ready else 503)


def _customer_state(customer_id: str) -> CustomerState | None:
    """The customer's stored state as of their partition's clock (None: no state)."""
    key = customer_id.encode()
    # The table's per-partition clock records and identifier states are not customers.
    internal = key.startswith((CLOCK_KEY_PREFIX, IDENTITY_KEY_PREFIX))
    stored = None if internal else customers_table.get(key)
    if stored is None:
        return None
    state = decode_state(stored, customer_id)
    # Silent steps wait for the customer's next event or timer; show the state as of the clock.
    now = stream_clock(customer_id)
    if now is not None:
        as_of(state, customer_id, now, policies, retention_policy, settings.allowed_lateness)
    return state


def _customer_reply(
    view: web.View,
    identity: Identity,
    customer_id: str,
    what: str,
    build: Callable[[CustomerState], dict[str, Any]],
) -> web.Response:
    """Log who reads what of the customer, then answer `build(state)`, or 404 for a customer
    hitrun holds no state of."""
    log.info(
        "%s read by %s: customer %s",
        what,
        identity.name,
        customer_id,
        extra={"actor": identity.name, "customer_id": customer_id},
    )
    state = _customer_state(customer_id)
    if state is None:
        return view.json({"error": "unknown customer", "customer_id": customer_id}, status=404)
    return view.json(build(state))


@app.page("/customers/{customer_id}")
class CustomerView(web.View):
    """GET: the customer's open orders, strikes and blacklist status (support or operator)."""

    @requires(SUPPORT)
    # Faust types the routed view as (View, Request); match_info and identity come as keywords.
    @app.table_route(table=customers_table, match_info="customer_id")  # type: ignore[arg-type]
    async def get(self, request: web.Request, customer_id: str, identity: Identity) -> web.Response:
        return _customer_reply(
            self,
            identity,
            customer_id,
            "customer view",
            lambda state: {
                "customer_id": customer_id,
                **describe(state.unpaid, policies),
                "retention": retention.describe(state.retention, retention_policy),
            },
        )


@app.page("/customers/{customer_id}/why")
class CustomerWhy(web.View):
    """GET: the customer's decision trail in time order, each decision with its evidence and
    a sentence for a person, and the policy values that applied (support or operator)."""

    @requires(SUPPORT)
    @app.table_route(table=customers_table, match_info="customer_id")  # type: ignore[arg-type]
    async def get(self, request: web.Request, customer_id: str, identity: Identity) -> web.Response:
        return _customer_reply(
            self,
            identity,
            customer_id,
            "decision trail",
            lambda state: explain(customer_id, state.unpaid, policies, state.identity, link_policy),
        )


# Fields an operator may send for each action; the actor is always the token's name.
_ACTION_FIELDS = {
    "blacklist": ("customer_id", "shop_id", "scope", "reason", "duration_days", "note"),
    "unblacklist": ("customer_id", "shop_id", "scope", "reason", "note"),
    "erase": ("customer_id", "shop_id", "reason", "note"),
}
# An erasure concerns the customer everywhere; its command still names a shop.
_ERASE_SHOP = "platform"


async def _admin_action(
    self: web.View, request: web.Request, action: str, identity: Identity
) -> web.Response:
    """Validate the operator's request, sign it as theirs, and write it to the admin topic."""
    if settings.admin_key is None:
        return self.json(
            {"error": "admin actions are disabled: HITRUN_ADMIN_KEY is not set"}, status=503
        )
    try:
        body: dict[str, Any] = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return self.json({"error": f"invalid JSON: {exc}"}, status=400)
    if not isinstance(body, dict):
        return self.json({"error": "expected a JSON object"}, status=400)
    allowed = _ACTION_FIELDS[action]
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        hint = " (the actor is your token's name; put free text in note)" if "actor" in body else ""
        return self.json(
            {"error": f"unknown fields {unknown}; allowed: {list(allowed)}{hint}"}, status=400
        )
    fields = ({"shop_id": _ERASE_SHOP} if action == "erase" else {}) | body
    try:
        # Dated by the worker's clock (the broker's), which its expiry is checked against.
        signed = new_command(
            settings.admin_key.encode(),
            action,
            identity.name,
            fields,
            settings.admin_command_ttl,
            broker_time.now(),
        )
    except InvalidCommand as exc:
        return self.json({"error": f"invalid request: {exc}"}, status=400)
    await admin_topic.send(
        key=signed["customer_id"].encode(),
        value=encode(signed),
        timestamp=broker_time.now_s(),
    )
    log.info(
        "admin %s of customer %s requested by %s",
        action,
        signed["customer_id"],
        identity.name,
        extra={"actor": identity.name, "customer_id": signed["customer_id"]},
    )
    return self.json(
        {"accepted": True, "event_id": signed["event_id"], "actor": identity.name}, status=202
    )


@app.page("/admin/blacklist")
class AdminBlacklist(web.View):
    """POST {customer_id, shop_id, reason[, scope, duration_days, note]} (operator)."""

    @requires(OPERATOR)
    async def post(self, request: web.Request, identity: Identity) -> web.Response:
        return await _admin_action(self, request, "blacklist", identity)


@app.page("/admin/unblacklist")
class AdminUnblacklist(web.View):
    """POST {customer_id, shop_id, reason[, scope, note]} (operator)."""

    @requires(OPERATOR)
    async def post(self, request: web.Request, identity: Identity) -> web.Response:
        return await _admin_action(self, request, "unblacklist", identity)


@app.page("/admin/erase")
class AdminErase(web.View):
    """POST {customer_id, reason[, note]} (operator): remove everything hitrun keeps of them."""

    @requires(OPERATOR)
    async def post(self, request: web.Request, identity: Identity) -> web.Response:
        return await _admin_action(self, request, "erase", identity)
