"""Lab mode sends to loopback and to the lab's own namespaces, and to nothing else."""

from __future__ import annotations

import asyncio
import time

import pytest

from nfs_failover import netguard
from nfs_failover.errors import RpcConnectionError
from nfs_failover.lab import Lab
from nfs_failover.probe import probe_export


@pytest.fixture
def lab_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(netguard.ENV, "1")


def test_an_address_no_lab_namespace_holds_is_refused(lab_mode: None) -> None:
    with pytest.raises(RpcConnectionError, match="no lab namespace holds this address"):
        netguard.check("198.18.250.5")
    netguard.check("127.0.0.1")


def test_a_probe_in_lab_mode_sends_nothing_to_an_address_outside_the_lab(lab_mode: None) -> None:
    started = time.monotonic()
    result = asyncio.run(probe_export("198.18.250.5:/a", timeout=5))
    assert not result.up
    assert "no lab namespace holds this address" in result.summary()
    assert time.monotonic() - started < 2  # refused, not timed out


@pytest.mark.lab
def test_the_labs_own_servers_are_allowed(lab: Lab, lab_mode: None) -> None:
    for zone in lab.zones:
        netguard.check(zone.address)


def test_outside_lab_mode_nothing_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(netguard.ENV, raising=False)
    netguard.check("198.18.250.9")  # checked by nobody; nothing is sent by this call
