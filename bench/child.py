"""A benchmark's feed servers in a child process, driven one line at a time.

Serving then costs nothing in the process being measured, and the servers' records of the
requests they answered are not its memory. The child reads one command per line on stdin and
answers each with one line on stdout (bench_polling.py and soak.py each define theirs).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


class LineChild:
    """``python SCRIPT ARGS...`` with line-based pipes, stopped by closing its stdin."""

    def __init__(
        self,
        script: Path,
        args: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=cwd,
            env=None if env is None else dict(env),
        )

    def read(self) -> str:
        """The child's next line, stripped ("" once it has ended)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, command: str) -> str:
        """Send one command line; return the child's answer line."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        """Close its stdin, which ends its command loop; kill it if it lingers."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
