"""Build the C extensions; the project's metadata is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ringwall.state._native",
            ["ringwall/state/_native.c"],
            # No fused multiply-add: results must round as the Python version does.
            extra_compile_args=["-O2", "-ffp-contract=off"],
        ),
        # Runs a whole WAF transaction without the GIL. It needs the
        # libmodsecurity headers (Debian: libmodsecurity-dev); where they are
        # missing the build goes on without it, and the WAF calls
        # libmodsecurity through ctypes instead.
        Extension(
            "ringwall.edge.waf._transaction",
            ["ringwall/edge/waf/_transaction.c"],
            libraries=["modsecurity"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        # Strict JSON parsing for the validation layer in one pass. Where it
        # does not build, parse_strict_json runs its slower Python parser.
        Extension(
            "ringwall.gateway.validation._strict_json",
            ["ringwall/gateway/validation/_strict_json.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
