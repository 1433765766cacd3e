"""Runs the real ``aggregator`` console script as a subprocess and watches its output."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

AGGREGATOR = str(Path(sys.executable).with_name("aggregator"))


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment with no proxy and no token unless given, loopback never proxied."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.upper()
        not in {
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "TELEGRAM_BOT_TOKEN",
            "AGGREGATOR_CONFIG",
            "NOTIFY_SOCKET",
            "CREDENTIALS_DIRECTORY",
        }
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    args: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one aggregator command to completion."""
    return subprocess.run(
        [AGGREGATOR, *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
        check=False,
    )


class DaemonProcess:
    """``aggregator run`` in the background, with its output collected line by line."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [AGGREGATOR, *args],
            env=env or clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def output(self) -> str:
        """Everything printed so far."""
        with self._cond:
            return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20, count: int = 1) -> bool:
        """Wait until ``count`` output lines match the regex (or the process ends)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if sum(1 for line in self.lines if regex.search(line)) >= count:
                    return True
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    return False
                self._cond.wait(min(left, 0.5))

    def terminate(self, timeout: float = 10) -> int:
        """SIGTERM and wait for the exit code.

        Not before the daemon says it started (or ends): until it has set its handler, a
        SIGTERM kills it outright, and a test whose condition an earlier run already met can
        get here that early on a loaded machine.
        """
        self.wait_for(r'"daemon started"', timeout)
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)

    def close(self) -> None:
        """Make sure the process is gone."""
        if self.proc.poll() is None:
            self.kill()
