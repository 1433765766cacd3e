"""sd_notify: tell systemd we are ready, stopping, or alive (Type=notify, WatchdogSec=).

The protocol is one datagram to the socket named in $NOTIFY_SOCKET; a few lines, so no library.
Outside systemd (no $NOTIFY_SOCKET) every call is a no-op. It is called from the event loop, so
the socket is non-blocking: if systemd's queue is ever full, the message is dropped rather than
the loop stalled (systemd drains it continuously; WATCHDOG=1 and STATUS= are re-sent each
second).
"""

from __future__ import annotations

import logging
import os
import socket

from .logs import event

log = logging.getLogger("aggregator.systemd")


def notify(*states: str) -> bool:
    """Send "KEY=value" states to systemd; return whether a notify socket was there."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not states:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract socket namespace
    flags = socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
    with socket.socket(socket.AF_UNIX, flags) as sock:
        try:
            sock.connect(address)
            sock.send("\n".join(states).encode())
        except BlockingIOError:
            event(log, logging.DEBUG, "notify socket full; dropped", states=",".join(states))
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd set for us (ping at least that often), or None."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
