"""Ports for local brokers and workers lie below the kernel's ephemeral range."""

from __future__ import annotations

import socket

from hitrun.streams.processes import ephemeral_ports, free_port


def test_free_ports_are_outside_the_ephemeral_range_and_bindable() -> None:
    low, high = ephemeral_ports()
    for _ in range(50):
        port = free_port()
        assert not low <= port <= high
        assert 1024 < port < 65536
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
