"""The one C extension: the matcher's per-item loops (aggregator/matching/_kernel.c).

Optional: without a C compiler the build skips it with a warning and the matcher runs the same
loops in Python (aggregator/matching/index.py), slower. Everything else is in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aggregator.matching._kernel",
            ["aggregator/matching/_kernel.c"],
            optional=True,
        )
    ]
)
