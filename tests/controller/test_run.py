"""`nfs-failover run` end to end: the controller, its agent and its API, as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from nfs_failover.config import Volume
from nfs_failover.lab import Lab
from nfs_failover.replication.local import LocalProvider
from tests.controller.helpers import FAST, config_for
from tests.helpers import CLI
from tests.replication.helpers import T, folders

pytestmark = pytest.mark.lab


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def test_run_fails_over_on_an_outage_and_the_api_needs_its_token_for_actions(
    replication_lab: Lab, volume: Volume, tmp_path: Path
) -> None:

    (folders(volume)[0] / "base").write_text("replicated")
    config = config_for(replication_lab, volume, tmp_path, **FAST)
    engine = LocalProvider(config.volumes[0])
    asyncio.run(engine.transfer_now(timeout=T))
    asyncio.run(engine.close())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_none=True)))
    base = f"http://{config.api.listen}"
    token = config.api.token_file.read_text().strip()

    controller = subprocess.Popen(
        [*CLI, "run", "--config", str(path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: httpx.get(f"{base}/health").status_code == 200, 20, "health 200")
        refused = httpx.post(f"{base}/volumes/crr/failover")
        assert refused.status_code == 401
        assert httpx.get(f"{base}/status").json()[0]["state"] == "normal"  # nothing happened

        replication_lab.outage("az1")
        try:
            wait_until(
                lambda: httpx.get(f"{base}/status").json()[0]["state"] == "failed-over",
                20,
                "failed over",
            )
        finally:
            replication_lab.restore("az1")
        status = json.loads(
            subprocess.run(
                [*CLI, "status", "--config", str(path), "--json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
        assert (status[0]["active"], status[0]["fenced"]) == ("dest1", ["site1"])

        back = httpx.post(
            f"{base}/volumes/crr/failback",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )
        assert back.status_code == 200, back.text
        after = httpx.get(f"{base}/status").json()[0]
        assert after["state"] == "normal"
        assert [p["from"] for p in after["preserved"]] == ["site1", "dest1"]  # listed in status
        metrics = httpx.get(f"{base}/metrics").text
        assert 'nfs_failover_failovers_total{volume="crr"} 1.0' in metrics
    finally:
        controller.send_signal(signal.SIGTERM)
        try:
            output = controller.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            controller.kill()
            output = controller.communicate()[0].decode(errors="replace")
    assert controller.returncode == 0, output
    history = subprocess.run(
        [*CLI, "history", "--config", str(path), "--volume", "crr"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "failover fence-source after" in history
    assert "failback steer-back after" in history
    assert os.path.exists(tmp_path / "state.db")
