"""The two ways a ``quantumctl`` command fails, each printed as one line on stderr."""

from __future__ import annotations


class CtlError(Exception):
    """The command could not do its job (Redis unreachable, drift found): exit code 1."""

    exit_code = 1


class ArgumentError(CtlError):
    """The operator asked for something invalid (a bad date, an unknown name): exit code 2,
    the same as the parser's own usage errors, so scripts can tell the two kinds apart."""

    exit_code = 2


def redact_url(url: str) -> str:
    """The URL without its credentials: safe to print, log or write to a state file."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
