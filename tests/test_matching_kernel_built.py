"""Where pip could build the matcher's C kernel, it was built.

setup.py marks the extension optional, so that an install without a C compiler still works;
the price is that a compile error would also just skip it, and the kernel's own tests with it.
Here a machine that has a C compiler and Python's headers must have the kernel.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

import pytest

from aggregator.matching import native


def _can_compile() -> bool:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return shutil.which(compiler) is not None and headers.is_file()


@pytest.mark.skipif(not _can_compile(), reason="no C compiler or Python headers here")
def test_the_kernel_was_built_where_it_could_be() -> None:
    try:
        from aggregator.matching import _kernel  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"a C compiler is here but the kernel was not built: {exc}")
    if not os.environ.get("AGGREGATOR_PURE_PYTHON"):
        assert native.KERNEL is not None
