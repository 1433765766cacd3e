"""sd_notify: one datagram per call, never blocking the event loop."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from aggregator.systemd import notify


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's, named in $NOTIFY_SOCKET, never read."""
    name = f"@aggregator-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name[1:])
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        yield sock


def test_a_full_notify_socket_drops_the_message_instead_of_blocking(
    notify_socket: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aggregator.systemd")
    started = time.monotonic()
    # Linux queues at most net.unix.max_dgram_qlen (default 10) datagrams; a blocking send
    # would hang on the next one, as systemd would hang the event loop by not reading.
    for i in range(200):
        assert notify(f"STATUS=ping {i}") is True
        if caplog.records:
            break
    assert time.monotonic() - started < 5
    assert [r.getMessage() for r in caplog.records] == ["notify socket full; dropped"]
    notify_socket.setblocking(False)
    assert notify_socket.recv(4096) == b"STATUS=ping 0", "what fitted was sent"
