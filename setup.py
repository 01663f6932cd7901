"""Builds the optional C fast path ``geodns._fastudp``; all other metadata is in pyproject.toml.

The extension is optional: without a C compiler or the Python headers the install goes on
without it, and geodns/server.py serves UDP with its pure-Python loop.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "geodns._fastudp",
            sources=["geodns/_fastudp.c"],
            extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
