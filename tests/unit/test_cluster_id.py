"""The local broker's cluster ids are ones the storage tool accepts."""

from __future__ import annotations

import base64
import uuid

import pytest

from hitrun.dev import localkafka
from hitrun.dev.localkafka import new_cluster_id


def test_a_cluster_id_never_starts_with_a_dash_the_storage_tool_would_read_as_an_option(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The first draw encodes to "-..." (0xf8 is 111110 in the first six bits: "-").
    draws = iter([uuid.UUID(bytes=b"\xf8" + b"\x00" * 15), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(localkafka.uuid, "uuid4", lambda: next(draws))
    cluster_id = new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")


def test_a_cluster_id_is_sixteen_bytes_of_url_safe_base64() -> None:
    for _ in range(500):
        cluster_id = new_cluster_id()
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
        assert not cluster_id.startswith("-")
