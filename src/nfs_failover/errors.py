"""The error taxonomy: one base class and a few families, caught by family at the edges.

Anything raised that is not an ``NfsFailoverError`` is a bug.
"""

from __future__ import annotations


class NfsFailoverError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(NfsFailoverError):
    """A configuration file is unreadable or invalid.

    ``problems`` holds one line per problem, each naming the file and the field.
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class RpcError(NfsFailoverError):
    """An ONC RPC call did not give a usable answer."""


class RpcTimeout(RpcError):
    """No answer within the call's deadline (a dropped-packets server looks like this)."""


class RpcConnectionError(RpcError):
    """The connection was refused, reset or closed before the reply was complete."""


class XdrError(RpcError):
    """A reply (or record) is malformed, truncated, oversized or otherwise hostile."""


class RpcRejected(RpcError):
    """The server rejected the call (MSG_DENIED: RPC_MISMATCH or AUTH_ERROR)."""


class RpcAcceptError(RpcError):
    """The server accepted the call but did not run it (PROG_UNAVAIL, PROC_UNAVAIL, ...)."""

    def __init__(self, message: str, accept_stat: int) -> None:
        super().__init__(message)
        self.accept_stat = accept_stat


class ProtocolStatusError(RpcError):
    """A procedure ran and returned a non-OK status of its own program (NFS3ERR_*, MNT3ERR_*).

    ``status`` is the number, ``name`` its symbolic name such as ``NFS3ERR_ROFS``.
    """

    def __init__(self, name: str, status: int, procedure: str) -> None:
        super().__init__(f"{procedure}: {name}")
        self.name = name
        self.status = status
        self.procedure = procedure


class ProviderError(NfsFailoverError):
    """A replication provider refused or failed an operation.

    ``code`` and ``provider_message`` carry the provider's own words where it gave any
    (an ANF error code, an ONTAP error, an rsync exit status).
    """

    def __init__(
        self, message: str, *, code: str | None = None, provider_message: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code
        self.provider_message = provider_message


class PreconditionError(ProviderError):
    """The relationship does not allow the operation now (break while uninitialized,
    resync while not broken, ...). Nothing was changed."""


class ProviderTimeout(ProviderError):
    """The provider did not report the operation's result within its deadline."""


class SteeringError(NfsFailoverError):
    """A managed autofs file could not be written, or automount could not be reloaded."""


class LabError(NfsFailoverError):
    """The lab cannot be built, changed or torn down (not root, missing package, ...)."""
