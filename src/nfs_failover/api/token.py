"""The API's bearer token, read from its file: owner-only, one line of printable ASCII.

The token's content is never shown in an error, a log or a reply.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from nfs_failover.errors import ConfigError

MAX_TOKEN_BYTES = 4096


def read_token(path: Path) -> str:
    """The bearer token in ``path``, without surrounding whitespace.

    The file must be a regular file, readable by its owner only (mode & 0o077 == 0),
    and hold one token of printable ASCII without spaces. Raises ``ConfigError`` with
    one line ``PATH: problem``; the content is never shown.
    """
    try:
        # O_NONBLOCK: a FIFO put in the token's place must not hang the start-up.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"{path}: cannot read the API token file: {reason}"]) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError([f"{path}: the API token file is not a regular file"])
        if mode & 0o077:
            raise ConfigError(
                [
                    f"{path}: the API token file is accessible by group or others (mode"
                    f" {stat.S_IMODE(mode):04o}); refusing it: chmod 600 {path}"
                ]
            )
        data = os.read(fd, MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise ConfigError([f"{path}: cannot read the API token file: {reason}"]) from None
    finally:
        os.close(fd)
    return _check_token(path, data)


def _check_token(path: Path, data: bytes) -> str:
    if len(data) > MAX_TOKEN_BYTES:
        raise ConfigError([f"{path}: the API token file is larger than {MAX_TOKEN_BYTES} bytes"])
    token = data.strip()
    if not token:
        raise ConfigError(
            [
                f"{path}: the API token file is empty; write a token into it, such as the"
                " output of: openssl rand -hex 32"
            ]
        )
    if any(byte <= 0x20 or byte >= 0x7F for byte in token):
        raise ConfigError(
            [
                f"{path}: the API token must be one line of printable ASCII without spaces"
                " (content not shown)"
            ]
        )
    return token.decode("ascii")
