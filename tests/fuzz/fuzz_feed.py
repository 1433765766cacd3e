"""atheris (libFuzzer) target for the feed path: bytes → parse → match → compose.

It checks what tests/test_fuzz_pipeline.py checks with hypothesis (tests/fuzz/pipeline.py), but
coverage-guided and for as long as you let it run. pytest does not collect it (it needs atheris,
which the project does not depend on). From the repository root, with atheris in a venv of
its own and the project's packages taken from .venv:

    python3 -m venv /tmp/fuzz-venv && /tmp/fuzz-venv/bin/pip install atheris
    mkdir -p /tmp/fuzz-corpus
    PYTHONPATH=.:$(echo .venv/lib/python3*/site-packages) /tmp/fuzz-venv/bin/python \\
        tests/fuzz/fuzz_feed.py /tmp/fuzz-corpus \\
        tests/data/feeds/news-ar tests/data/feeds/illformed/feedparser \\
        -max_len=65536 -timeout=10 -rss_limit_mb=1024 -max_total_time=600

(or `.venv/bin/pip install atheris` and run it with .venv/bin/python). It needs the same Python
version as .venv (3.11) and does about 25 inputs a second on one core.

The first directory collects the inputs libFuzzer finds interesting; the others seed it with
real feeds. A crash (an exception other than ParseError, a message Telegram would refuse or
one over 4096 units) stops the run and writes the input to ./crash-*; `-timeout` turns an input
that takes over 10 s into a failure too (feedparser's quadratic corners, see parse.py), and
`-rss_limit_mb` one that needs over 1 GB. Replay a saved input by
giving its path instead of the folders: `... tests/fuzz/fuzz_feed.py ./crash-<hash>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

# Run from anywhere: the repository root holds both `aggregator` and `tests`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from tests.fuzz.pipeline import check_pipeline

CONTENT_TYPES = (
    "application/rss+xml",
    "application/xml; charset=utf-8",
    "text/xml",
    "text/html; charset=windows-1256",
    "",
)


def test_one_input(data: bytes) -> None:
    """One fuzzed input: the first byte picks the Content-Type, the rest is the body."""
    if not data:
        return
    content_type = CONTENT_TYPES[data[0] % len(CONTENT_TYPES)]
    check_pipeline(data[1:], {"Content-Type": content_type} if content_type else {})


def main() -> None:
    """Hand the target to libFuzzer with the command line's options and corpus folders."""
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
