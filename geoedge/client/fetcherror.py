"""The errors of ``geoedge fetch`` and its stub resolver (:mod:`geoedge.client.stubdns`): each is
reported on one line and ends the command with its exit code."""

from __future__ import annotations

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class FetchError(Exception):
    """A failure to report on one line and exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> FetchError:
    return FetchError(message, EXIT_USAGE)


__all__ = ["EXIT_FAIL", "EXIT_OK", "EXIT_USAGE", "FetchError", "usage_error"]
