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
        for stale in (HERE / "edge").glob("_nghttp2*.so"):
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
        Extension(
            "geodns._fastudp",
            sources=["geodns/_fastudp.c"],
            depends=["geodns/_coldpath.h", "geodns/_rrl.h", "geodns/_obs.h"],
            extra_compile_args=["-std=c99", "-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
        *nghttp2_extension(),
    ],
)
