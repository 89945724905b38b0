"""Build the C extension; the project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ringwall.state._native",
            ["ringwall/state/_native.c"],
            # No fused multiply-add: results must round as the Python version does.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        )
    ]
)
