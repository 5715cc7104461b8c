"""Error hierarchy.

Every error says whose fault it was, in the manner of h11's LocalProtocolError and
RemoteProtocolError: a bug or misuse on our side, bad input from a remote peer, or a
problem the operator must fix (configuration, files on disk).
"""

from __future__ import annotations


class CoalitiondError(Exception):
    """Base of every error this package raises on purpose."""


class LocalError(CoalitiondError):
    """We did something wrong: a programming error or an illegal local request."""


class RemoteError(CoalitiondError):
    """A remote peer or client sent something invalid. Never a reason to crash."""


class OperatorError(CoalitiondError):
    """The operator must fix something: configuration, key files, the data directory.

    The message is one line meant to be shown as is.
    """


class ConfigError(OperatorError):
    """A configuration file is wrong. `str(err)` names the file, the key and the problem."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class KeyFileError(OperatorError):
    """An identity key file is missing, malformed or too widely readable."""


class EncodingError(RemoteError):
    """Bytes that are not valid deterministic CBOR (or exceed a limit)."""


class SignatureError(RemoteError):
    """A signature does not verify."""
