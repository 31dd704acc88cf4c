"""The lab's etcd cluster: three real members in namespaces of their own, reached from the
host and from a client host, one of them cut off with nftables as a zone is."""

from __future__ import annotations

import base64
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nfs_failover import aio
from nfs_failover.lab import Lab, etcd
from nfs_failover.lab.clients import exec_in

pytestmark = pytest.mark.lab


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _call(member: etcd.Member, path: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        member.client_url + path, data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=3) as reply:
        answer: dict[str, object] = json.loads(reply.read())
        return answer


def put(member: etcd.Member, key: str, value: str) -> None:
    _call(member, "/v3/kv/put", {"key": _b64(key), "value": _b64(value)})


def get(member: etcd.Member, key: str) -> str | None:
    kvs = _call(member, "/v3/kv/range", {"key": _b64(key)}).get("kvs")
    if not isinstance(kvs, list) or not kvs:
        return None
    return base64.b64decode(kvs[0]["value"]).decode()


def put_within(member: etcd.Member, key: str, value: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            put(member, key, value)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def wait_for_value(member: etcd.Member, key: str, value: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    seen: str | None = None
    while time.monotonic() < deadline:
        try:
            seen = get(member, key)
        except (OSError, urllib.error.URLError):
            seen = None
        if seen == value:
            return
        time.sleep(0.1)
    raise AssertionError(f"{member.name} holds {seen!r} for {key}, not {value!r}")


def test_every_member_is_up_and_a_write_on_one_is_read_on_another(lab: Lab) -> None:
    members = lab.running_etcd()
    assert [(m.name, m.state) for m in lab.status().etcd] == [
        ("etcd1", "up"),
        ("etcd2", "up"),
        ("etcd3", "up"),
    ]
    assert all(etcd.healthy(m) for m in members)
    put(members[0], "lab-test/one", "from etcd1")
    wait_for_value(members[2], "lab-test/one", "from etcd1")


def test_a_member_cut_off_leaves_the_other_two_serving_and_catches_up_after(
    lab: Lab,
) -> None:
    first, _, third = lab.running_etcd()
    assert lab.outage("etcd3")
    try:
        assert [m.state for m in lab.status().etcd] == ["up", "up", "cut-off"]
        assert not etcd.healthy(third)  # unreachable: its link drops everything
        # A quorum of two: if etcd3 led, the other two elect a leader first.
        put_within(first, "lab-test/cut", "written while etcd3 was cut off", timeout=20.0)
        assert get(first, "lab-test/cut") == "written while etcd3 was cut off"
        assert not lab.outage("etcd3")  # already cut off
    finally:
        assert lab.restore("etcd3")
    wait_for_value(third, "lab-test/cut", "written while etcd3 was cut off")
    assert not lab.restore("etcd3")


def test_a_client_host_reaches_every_member(lab: Lab) -> None:
    client = lab.running_clients()[0]
    urls = [m.client_url + "/health" for m in lab.running_etcd()]
    script = (
        "import sys, urllib.request\n"
        "for url in sys.argv[1:]:\n"
        "    print(urllib.request.urlopen(url, timeout=5).read().decode())\n"
    )
    python = str(Path(sys.executable).resolve())
    result = aio.run(exec_in(client, [python, "-I", "-S", "-c", script, *urls], timeout=30))
    assert result.ok, result.why()
    answers = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [a["health"] for a in answers] == ["true", "true", "true"]
