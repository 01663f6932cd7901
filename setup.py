"""Builds the optional C extensions; all other metadata is in pyproject.toml.

- ``geodns._fastudp``: the GeoDNS UDP fast path (else geodns/server.py's pure-Python loop);
- ``edge._fasthttp``: the edge's one-call request-head parser (else llhttp for every head);
- ``edge._nghttp2``: the edge's HTTP/2 layer on libnghttp2 (else the ``h2`` library), built
  only when libnghttp2's headers are installed (Debian: libnghttp2-dev).

Every one is optional: without a C compiler or the Python headers the install goes on
without it. A build first removes any library left in the source tree by an earlier
(editable) install, so a build that fails leaves the Python path, never a stale compiled one.
"""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent


class BuildExt(build_ext):
    def run(self) -> None:
        for stale in (HERE / "geodns").glob("_fastudp*.so"):
            stale.unlink()
        for pattern in ("_fasthttp*.so", "_nghttp2*.so"):  # the edge's parser, its HTTP/2
            for stale in (HERE / "edge").glob(pattern):
                stale.unlink()
        super().run()


def nghttp2_extension() -> list[Extension]:
    """edge._nghttp2 (the HTTP/2 layer of edge/h2ng.py), only when libnghttp2's headers are
    there (Debian: libnghttp2-dev); without them edge/h2server.py's h2-based layer serves."""
    if not any((Path(d) / "nghttp2" / "nghttp2.h").exists()
               for d in ("/usr/include", "/usr/local/include")):
        return []
    return [Extension("edge._nghttp2", sources=["edge/_nghttp2.c"], libraries=["nghttp2"],
                      extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
                      optional=True)]


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
        ),
        *nghttp2_extension(),
    ],
)
