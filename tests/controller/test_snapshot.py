"""What the real controller shows of itself, as the API sends it: the snapshot models,
with every key the API has always sent, from a controller over a real store (no lab)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from nfs_failover.config import Config, load_config
from nfs_failover.controller import fence
from nfs_failover.controller.loop import Controller
from nfs_failover.controller.snapshot import (
    AbortResult,
    JournalEntry,
    PauseResult,
    PreservedCopy,
    StorageFenceStatus,
    VolumeState,
    VolumeStatus,
    WorkflowResult,
)
from nfs_failover.desired import failed_over
from nfs_failover.replication import Provider
from nfs_failover.store import Event, SqliteStore
from tests.helpers import DOCS, EXAMPLES

EXAMPLE = EXAMPLES / "crr.yaml"
STATUS_KEYS = [
    "name",
    "mode",
    "state",
    "group",
    "active",
    "offered",
    "fenced",
    "storage_fence",
    "replication",
    "lag_s",
    "health",
    "last_action",
    "since",
    "decision",
    "preserved",
    "paused",
    "leader",
    "store_error",
]


class Unused:
    """A provider nothing here calls: status, history and actions that run no workflow
    read the store only."""

    async def close(self) -> None:
        return


@pytest.fixture
def config() -> Config:
    return load_config(EXAMPLE)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "state.db")
    yield opened
    opened.close()


@pytest.fixture
def controller(config: Config, store: SqliteStore) -> Controller:
    providers: dict[str, Provider] = {"crr": Unused()}  # type: ignore[dict-item]
    return Controller(config, store, name="ctl-test", providers=providers)


def dumped(status: VolumeStatus) -> dict[str, object]:
    """As the API sends it."""
    loaded: dict[str, object] = json.loads(status.model_dump_json())
    return loaded


def test_a_volume_with_no_desired_state_yet_is_normal_with_every_key(
    controller: Controller,
) -> None:
    (status,) = controller.status()

    assert dumped(status) == {
        "name": "crr",
        "mode": "read-write",
        "state": "normal",
        "group": None,
        "active": "site1",
        "offered": None,
        "fenced": [],
        "storage_fence": None,
        "replication": "unknown",
        "lag_s": None,
        "health": {},
        "last_action": None,
        "since": None,
        "decision": None,
        "preserved": [],
        "paused": False,
        "leader": None,
        "store_error": None,
    }
    assert list(dumped(status)) == STATUS_KEYS


def test_a_failed_over_volume_lists_its_fence_and_what_its_failback_preserved(
    controller: Controller, config: Config, store: SqliteStore
) -> None:
    store.set_desired(failed_over(config.volumes[0], 1), expected_generation=None)
    saved = {"from": "dest1", "folder": "/p/crr/1/late-writes", "files": ["a"], "deleted": ["b"]}
    workflow = store.start_workflow("crr", "failback", {"preserved_late-writes": saved})
    store.finish_workflow(workflow.id, "failed")

    (status,) = controller.status()

    assert status.state is VolumeState.FAILED_OVER
    assert (status.active, status.offered, status.fenced) == ("dest1", ("dest1",), ("site1",))
    assert status.last_action == "failback: failed"
    assert dumped(status)["preserved"] == [saved]


def test_a_preserved_entry_that_cannot_be_read_is_left_out_not_an_error(
    controller: Controller, store: SqliteStore
) -> None:
    workflow = store.start_workflow("crr", "failback", {"preserved_old-source": {"from": 1}})
    store.finish_workflow(workflow.id, "done")

    (status,) = controller.status()

    assert status.preserved == ()


def test_pause_answers_for_every_volume_and_shows_in_status_and_history(
    controller: Controller,
) -> None:
    result = asyncio.run(controller.request("pause", None))

    assert result == PauseResult(action="pause", volume="*", done=True)
    assert result.model_dump(mode="json") == {"action": "pause", "volume": "*", "done": True}
    assert controller.status()[0].paused
    (entry,) = controller.history(None, 0, 10)
    assert isinstance(entry, JournalEntry)
    assert list(entry.model_dump(mode="json")) == [
        "volume",
        "kind",
        "detail",
        "workflow",
        "step",
        "phase",
        "at",
        "id",
    ]
    assert (entry.volume, entry.kind, entry.detail) == ("*", "pause", {"by": "operator"})


def test_abort_answers_where_it_ended_the_workflow_and_the_state_it_left(
    controller: Controller, store: SqliteStore
) -> None:
    stuck = store.start_workflow("crr", "failover", {"force": False})

    result = asyncio.run(controller.request("abort", "crr"))

    assert isinstance(result, AbortResult)
    assert result.model_dump(mode="json") == {
        "action": "abort",
        "volume": "crr",
        "workflow": stuck.id,
        "kind": "failover",
        "at": "check-replication",
        "state": "normal",
        "group": None,
        "states": {},
    }
    (event,) = [e for e in store.events("crr") if e.kind == "abort"]
    assert event.detail["state"] == "normal"


def test_status_names_the_leader_once_it_holds_the_lease(
    controller: Controller, config: Config, store: SqliteStore
) -> None:
    asyncio.run(controller.request("pause", "crr"))  # an action takes the lease first

    (status,) = controller.status()

    assert status.leader == "ctl-test"
    providers: dict[str, Provider] = {"crr": Unused()}  # type: ignore[dict-item]
    reader = SqliteStore(store.path)
    other = Controller(config, reader, name="ctl-other", providers=providers)
    assert other.status()[0].leader == "ctl-test"  # read from the store
    reader.close()


def test_status_and_metrics_answer_with_the_store_error_while_it_does_not_answer(
    controller: Controller, config: Config, store: SqliteStore
) -> None:
    store.set_desired(failed_over(config.volumes[0], 1), expected_generation=None)
    controller.status()  # what the store says now
    store.close()  # every call raises from now on, as a store that does not answer

    (status,) = controller.status()
    (metrics,) = controller.metrics_state()

    assert status.store_error is not None and "closed database" in status.store_error
    assert (status.state, status.active, status.fenced) == (
        VolumeState.FAILED_OVER,
        "dest1",
        ("site1",),
    )  # what it last said
    assert (metrics.failovers_total, metrics.store_error) == (None, status.store_error)


def test_metrics_state_follows_status(controller: Controller, store: SqliteStore) -> None:
    store.append(Event("crr", "failover", {}, step="fence-source", phase="after"))

    (metrics,) = controller.metrics_state()

    assert (metrics.volume, metrics.state, metrics.failovers_total) == (
        "crr",
        VolumeState.NORMAL,
        1,
    )
    assert metrics.replication_lag_seconds is None
    assert metrics.probe_latency_seconds == ()


# -- the docs say what the models are -------------------------------------------------------


def table_rows(text: str, header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with ``header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def keys_of(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def test_the_api_docs_list_every_key_of_every_reply() -> None:
    rows = table_rows((DOCS / "production.md").read_text(), "reply")
    documented = {reply: re.findall(r"`([a-z_]+)`(?: \(|,|$)", keys) for reply, keys in rows}

    assert list(documented.values()) == [
        keys_of(VolumeStatus),
        keys_of(PreservedCopy),
        keys_of(StorageFenceStatus),
        keys_of(JournalEntry),
        keys_of(WorkflowResult),
        keys_of(AbortResult),
        keys_of(PauseResult),
    ]


def test_the_controller_docs_list_the_volume_states() -> None:
    rows = table_rows((DOCS / "controller.md").read_text(), "state | meaning | left by")

    assert len(rows) == len(VolumeState)
    assert {row[0] for row in rows} == {state.value for state in VolumeState}


def test_a_storage_fence_shows_in_status_until_the_failback_lifts_it_and_in_history(
    controller: Controller, config: Config, store: SqliteStore
) -> None:
    store.set_desired(failed_over(config.volumes[0], 1), expected_generation=None)
    record = asyncio.run(fence.want(store, "crr", "site1", 3))

    (status,) = controller.status()
    assert dumped(status)["storage_fence"] == {
        "replica": "site1",
        "state": "pending",
        "since": record.since,
        "replaced": None,
        "reason": "storage fence of site1 wanted: the failover fenced its maps",
        "error": None,
    }
    saved = {"rules": [{"index": 1, "rw_rule": ["sys"]}]}
    done = record.after(fence.Happened.SAVING, saved=saved).after(fence.Happened.DONE)
    store.append(Event("crr", fence.KIND, done.detail()))
    (status,) = controller.status()
    assert status.storage_fence is not None
    assert (status.storage_fence.state, status.storage_fence.replaced) == ("fenced", saved)

    lifted = done.after(fence.Happened.RESTORED)
    store.append(Event("crr", fence.KIND, lifted.detail()))
    assert controller.status()[0].storage_fence is None
    kinds = [(e.kind, e.detail["state"]) for e in controller.history("crr", 0, 100)]
    assert kinds == [
        ("storage-fence", "pending"),
        ("storage-fence", "fenced"),
        ("storage-fence", "unfenced"),
    ]
