"""Named tokens with roles: any header bytes get an answer, and only a known token an identity."""

from __future__ import annotations

import pytest

from hitrun.streams.auth import OPERATOR, SUPPORT, Identity, Tokens, new_token, parse_tokens

ALICE, ALICE_LINE = new_token("alice", OPERATOR)
BOB, BOB_LINE = new_token("bob", SUPPORT)
TOKENS = Tokens(parse_tokens(f"{ALICE_LINE}\n{BOB_LINE}"))


def test_a_known_token_gives_its_name_and_role() -> None:
    assert TOKENS.authenticate(f"Bearer {ALICE}") == Identity("alice", OPERATOR)
    assert TOKENS.authenticate(f"bearer {BOB}".encode()) == Identity("bob", SUPPORT)


def test_an_operator_may_read_customers_and_support_may_not_act() -> None:
    assert Identity("alice", OPERATOR).may(SUPPORT) and Identity("alice", OPERATOR).may(OPERATOR)
    assert Identity("bob", SUPPORT).may(SUPPORT) and not Identity("bob", SUPPORT).may(OPERATOR)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        f"Basic {ALICE}",
        f"Bearer {ALICE}x",
        f"Bearer {ALICE[:-1]}",
        f"Bearer {ALICE} {ALICE}",
        "Bearer tökén",
        "Bearer \udcff\udcfe",
        b"Bearer \xff\xfe\x00",
        b"\x00\x01\x02",
        "Bearer " + "A" * 100_000,
        "Bearer \x00",
        ALICE,
    ],
)
def test_anything_else_is_no_identity(header: str | bytes | None) -> None:
    assert TOKENS.authenticate(header) is None


def test_the_token_file_holds_hashes_never_tokens() -> None:
    assert ALICE not in ALICE_LINE
    entry = parse_tokens(ALICE_LINE)[0]
    assert ALICE not in repr(entry) and entry.digest.hex() not in repr(entry)


def test_no_tokens_admit_nobody() -> None:
    assert not Tokens(())
    assert Tokens(()).authenticate(f"Bearer {ALICE}") is None


def test_a_signed_command_verifies_after_the_contract_fills_in_defaults() -> None:
    from datetime import UTC, datetime, timedelta

    import orjson

    from hitrun.schemas import compiled_validator
    from hitrun.schemas.records import parse_timestamp
    from hitrun.streams.auth import sign_command, verify_command

    key, ttl = b"k", timedelta(minutes=15)
    command = {
        "type": "admin_action_requested",
        "event_id": "adm-1",
        "customer_id": "cust-1",
        "shop_id": "shop-1",
        "action": "blacklist",
        "reason": "fraud",
        "note": "ünïcödé ✓",
    }
    signed = sign_command(key, command, "alice", datetime.now(UTC), ttl)
    compiled_validator("admin_action_requested.v1")(dict(signed))
    raw = orjson.dumps(signed)
    assert verify_command(key, raw, ttl, parse_timestamp) is None
    spaced = orjson.dumps(signed, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    assert verify_command(key, spaced, ttl, parse_timestamp) is None  # canonical, not as sent
    with_default = orjson.dumps(signed | {"scope": "shop"})
    assert "bad signature" in str(verify_command(key, with_default, ttl, parse_timestamp))
