"""Who may do what: named HTTP tokens with roles, and signed admin commands.

Tokens. An operator (blacklist, unblacklist, erase, read customers) or a
support agent (read customers) presents `Authorization: Bearer TOKEN`. The
worker keeps only SHA-256 hashes of the tokens, one `name:role:sha256-hex` line
each (HITRUN_TOKENS_FILE or HITRUN_TOKENS); `hitrun token NAME ROLE` makes a
random token and its line. A token is 32 random bytes, so a fast hash is
enough: nothing can be guessed from it. The recorded actor of an action is the
token's name, never a name the client sent.

Signed commands. The admin topic is writable by whoever the cluster lets
write it, so a worker applies a command only when it carries an HMAC-SHA256
signature, made with the key the workers share (HITRUN_ADMIN_KEY), over the
command's canonical bytes: its JSON fields but `signature`, keys sorted,
UTF-8. The signed fields name the signer (who is also the recorded actor) and
an expiry; an expired or already applied command is refused
(agents/customer.py checks both against the partition's stream clock and the
customer's state).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from hitrun.schemas import compiled_validator

OPERATOR = "operator"
SUPPORT = "support"
ROLES = (OPERATOR, SUPPORT)
# What each role may do; an operator may also read what support staff read.
PERMISSIONS: Mapping[str, frozenset[str]] = {
    OPERATOR: frozenset({OPERATOR, SUPPORT}),
    SUPPORT: frozenset({SUPPORT}),
}

_COMMAND_CONTEXT = b"hitrun-admin-command/v1\n"
_HEX = frozenset("0123456789abcdef")


class TokenFileError(ValueError):
    """A token line is malformed; the message names the line."""


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated caller: the token's name and role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        return role in PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class TokenEntry:
    name: str
    role: str
    digest: bytes

    def __repr__(self) -> str:
        return f"TokenEntry(name={self.name!r}, role={self.role!r})"


def token_digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


def parse_tokens(text: str, where: str = "tokens") -> tuple[TokenEntry, ...]:
    """`name:role:sha256-hex` per line or comma-separated entry; `#` starts a comment."""
    entries: list[TokenEntry] = []
    names: set[str] = set()
    for number, raw in enumerate(text.replace(",", "\n").splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(":")]
        if len(parts) != 3:
            raise TokenFileError(f"{where}, entry {number}: expected name:role:sha256-hex")
        name, role, digest = parts
        if not name or not name.isascii() or not name.isprintable() or " " in name:
            raise TokenFileError(f"{where}, entry {number}: a name is printable ASCII, no spaces")
        if role not in ROLES:
            raise TokenFileError(
                f"{where}, entry {number}: role must be one of {', '.join(ROLES)}, got {role!r}"
            )
        digest = digest.lower()
        if len(digest) != 64 or not set(digest) <= _HEX:
            raise TokenFileError(
                f"{where}, entry {number}: expected the token's SHA-256 as 64 hex digits "
                "(`hitrun token NAME ROLE` prints the line), not the token itself"
            )
        if name in names:
            raise TokenFileError(f"{where}, entry {number}: the name {name!r} is used twice")
        names.add(name)
        entries.append(TokenEntry(name, role, bytes.fromhex(digest)))
    return tuple(entries)


def new_token(name: str, role: str) -> tuple[str, str]:
    """A fresh random token and the `name:role:sha256` line that admits it."""
    token = secrets.token_urlsafe(32)
    line = f"{name}:{role}:{token_digest(token.encode()).hex()}"
    parse_tokens(line)  # the same checks as the worker's
    return token, line


class Tokens:
    """The configured tokens; `authenticate` answers for an Authorization header."""

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries = tuple(entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def authenticate(self, header: str | bytes | None) -> Identity | None:
        """The identity of a `Bearer TOKEN` header, or None for anything else.

        Any bytes are answered: a header that is not ASCII, not a bearer
        token or not a known token is None. Every entry is compared, in
        constant time, whatever matches.
        """
        token = _bearer_token(header)
        if token is None:
            return None
        digest = token_digest(token)
        found: TokenEntry | None = None
        for entry in self._entries:
            if hmac.compare_digest(digest, entry.digest):
                found = entry
        return None if found is None else Identity(found.name, found.role)


def _bearer_token(header: str | bytes | None) -> bytes | None:
    if header is None:
        return None
    try:
        raw = header.encode("ascii") if isinstance(header, str) else bytes(header)
        text = raw.decode("ascii")
    except (UnicodeError, TypeError):
        return None
    scheme, _, token = text.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not token.isprintable() or " " in token:
        return None
    return token.encode("ascii")


# Signed admin commands.


def canonical_bytes(command: Mapping[str, Any]) -> bytes:
    """What a command's signature covers: every field but `signature`, keys sorted."""
    fields = {k: v for k, v in command.items() if k != "signature"}
    return _COMMAND_CONTEXT + orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def command_signature(key: bytes, command: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical_bytes(command), hashlib.sha256).hexdigest()


def sign_command(
    key: bytes, command: Mapping[str, Any], signer: str, issued: datetime, ttl: timedelta
) -> dict[str, Any]:
    """The command as its signer sends it: actor and signer are the signer, with an expiry."""
    signed = {k: v for k, v in command.items() if k not in ("signature",)}
    signed["actor"] = signer
    signed["signer"] = signer
    signed["occurred_at"] = issued.isoformat()
    signed["expires_at"] = (issued + ttl).isoformat()
    signed["signature"] = command_signature(key, signed)
    return signed


class InvalidCommand(ValueError):
    """The command breaks the contract; the message names the field."""


def new_command(
    key: bytes,
    action: str,
    signer: str,
    fields: Mapping[str, Any],
    ttl: timedelta,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A fresh admin command for `action`, signed by `signer` at `now` (default: the system
    clock's) and checked against the contract.

    Raises InvalidCommand when a field breaks the contract.
    """
    command = {
        "type": "admin_action_requested",
        "event_id": f"admin-{uuid.uuid4().hex}",
        "action": action,
        **{k: v for k, v in fields.items() if v is not None},
    }
    signed = sign_command(key, command, signer, now or datetime.now(UTC), ttl)
    try:
        # On a copy: the validator fills in defaults, which the signature does not cover.
        compiled_validator("admin_action_requested.v1")(dict(signed))
    except Exception as exc:  # fastjsonschema's error names the offending field
        raise InvalidCommand(str(exc)) from None
    return signed


def verify_command(key: bytes | None, raw: bytes, max_ttl: timedelta, parse: Any) -> str | None:
    """None when the command's signature is good; otherwise why it is refused.

    `parse` turns a timestamp string into an aware datetime (the contract's).
    The expiry against the stream clock is checked where the clock is known.
    """
    if key is None:
        return "this worker has no HITRUN_ADMIN_KEY, so it accepts no admin command"
    command = orjson.loads(raw)
    signed = command.get("signature")
    if not signed or not command.get("signer") or not command.get("expires_at"):
        return "an unsigned admin command (sign it with `hitrun admin` or send it through the API)"
    if not isinstance(signed, str):
        return "an admin command with a bad signature"
    expected = command_signature(key, command)
    if not hmac.compare_digest(expected.encode(), signed.encode("ascii", "replace")):
        return "an admin command with a bad signature"
    if command["signer"] != command.get("actor"):
        return "an admin command whose actor is not its signer"
    issued, expires = parse(command["occurred_at"]), parse(command["expires_at"])
    if not issued < expires <= issued + max_ttl:
        return (
            f"an admin command valid from {issued.isoformat()} to {expires.isoformat()}; "
            f"a command expires after its time and within HITRUN_ADMIN_COMMAND_TTL ({max_ttl})"
        )
    return None


# --- records of the internal topics ----------------------------------------------

# The header that carries a record's signature on the identity topics.
SIGNATURE_HEADER = "hitrun-signature"
_RECORD_CONTEXT = b"hitrun internal record v1\n"


def record_signature(key: bytes, topic: str, record_key: bytes, value: bytes) -> bytes:
    """What the workers put in SIGNATURE_HEADER: an HMAC-SHA256 over the topic, the key
    and the value (each length-prefixed), so that no record passes for another."""
    mac = hmac.new(key, _RECORD_CONTEXT, hashlib.sha256)
    for part in (topic.encode(), record_key, value):
        mac.update(len(part).to_bytes(4, "big"))
        mac.update(part)
    return mac.hexdigest().encode()


def verify_record(
    key: bytes,
    topic: str,
    record_key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]],
) -> bool:
    """Whether an internal record carries a good signature made with `key`."""
    signed = [v for k, v in headers or () if k == SIGNATURE_HEADER]
    if len(signed) != 1 or not isinstance(signed[0], bytes):
        return False
    expected = record_signature(key, topic, record_key or b"", value or b"")
    return hmac.compare_digest(expected, signed[0])
