"""The C versions of the matcher's per-item loops (_kernel.c), if they were built.

pip builds them when the machine has a C compiler; without one it skips them with a warning and
the matcher runs the same loops in Python (index.py, matcher.py), several times slower with many
terms. AGGREGATOR_PURE_PYTHON=1 turns them off, e.g. to rule them out when chasing a bug.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

# Its functions take and return what their Python versions do (index.py, matcher.py); the
# tests hold them to that, so no stub repeats the signatures.
KERNEL: ModuleType | None
try:
    _kernel = importlib.import_module("aggregator.matching._kernel")
except ImportError:  # installed without a C compiler
    KERNEL = None
else:
    KERNEL = None if os.environ.get("AGGREGATOR_PURE_PYTHON") else _kernel
