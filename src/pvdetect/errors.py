"""Exception types that the command line turns into one-line messages and exit codes."""

from __future__ import annotations


class PVDetectError(Exception):
    """Base class of the project's expected errors (exit code 1 unless overridden)."""

    exit_code = 1


class DataError(PVDetectError):
    """Bad input data: the message names the file and the problem (exit code 2)."""

    exit_code = 2


class ConfigError(PVDetectError):
    """Bad configuration or command-line usage (exit code 2)."""

    exit_code = 2


class BundleError(PVDetectError):
    """A model bundle that cannot be read or does not fit the input (exit code 2)."""

    exit_code = 2


class OutputError(PVDetectError):
    """An output location that cannot be written (exit code 2)."""

    exit_code = 2
