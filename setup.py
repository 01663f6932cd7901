"""Builds the optional C fast path ``geodns._fastudp``; all other metadata is in pyproject.toml.

The extension is optional: without a C compiler or the Python headers the install goes on
without it, and geodns/server.py serves UDP with its pure-Python loop. A build first removes
any ``_fastudp`` library left in the source tree by an earlier (editable) install, so a build
that fails leaves the pure-Python loop, never a stale compiled one.
"""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


class BuildExt(build_ext):
    def run(self) -> None:
        for stale in (HERE / "geodns").glob("_fastudp*.so"):
            stale.unlink()
        for stale in (HERE / "edge").glob("_fasthttp*.so"):  # edge/httpserver.py's parser
            stale.unlink()
        super().run()


setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=[
        # the edge's one-call request-head parser; without it edge/httpserver.py uses llhttp
        Extension(
            "edge._fasthttp",
            sources=["edge/_fasthttp.c"],
            extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
        Extension(
            "geodns._fastudp",
            sources=["geodns/_fastudp.c"],
            depends=["geodns/_coldpath.h", "geodns/_fastidx.h", "geodns/_rrl.h", "geodns/_obs.h"],
            # -O3 last: it wins over the -O2/-O3 in Python's own CFLAGS (the last -O counts)
            extra_compile_args=["-std=c99", "-Wall", "-Wextra", "-O3"],
            optional=True,
        )
    ],
)
