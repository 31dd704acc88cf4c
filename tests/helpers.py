"""Helpers shared by the tests: the checkout's folders, the command line as a child process,
the API's token and a free port, the lab a test builds, and the rule for when it may skip.

Lab tests skip with the reason on a machine without root or the lab's packages, except
when NFS_FAILOVER_REQUIRE_LAB=1 (scripts/test, CI): there a lab that cannot be built fails.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from nfs_failover.lab import Lab
from nfs_failover.lab.clients import missing_client_tools
from nfs_failover.lab.system import missing_tools

# The checkout, found from this file: tests run from any working directory.
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
DOCS = REPO / "docs"

# Python for a child process: -P keeps the working directory off the child's sys.path (as
# the installed nfs-failover script does), so that a module lying there (a timeit.py, say)
# shadows none the child imports.
PYTHON = (sys.executable, "-P")
CLI = (*PYTHON, "-m", "nfs_failover")

# The bearer token of the API the tests build.
TOKEN = "s3cret-token-0123456789abcdef"

# Test labs take their own tags and subnets, so a lab left running is never touched.
TEST_LAB_TAG = "t"
TEST_LAB_SLOT = 40


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment it is asked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, NFS-Ganesha)"
    missing = missing_tools() + missing_client_tools()
    if missing:
        return "lab tests need the lab's packages (run scripts/setup): missing " + ", ".join(
            missing
        )
    return None


def require_lab() -> None:
    reason = lab_unavailable()
    if reason is None:
        return
    if os.environ.get("NFS_FAILOVER_REQUIRE_LAB") == "1":
        pytest.fail(f"NFS_FAILOVER_REQUIRE_LAB=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def fresh_lab(state_dir: Path, tag: str, slot: int) -> Lab:
    """A lab object for a test, after removing what a crashed earlier run left behind."""
    lab = Lab(state_dir, tag=tag, slot=slot)
    lab.down()
    return lab
