"""The ONTAP SnapMirror provider, through the real netapp-ontap library, against the local
HTTPS contract server (tests/replication/ontap_contract_server.py), never a live cluster."""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme
from hypothesis import given
from hypothesis import strategies as st

from nfs_failover.config import Volume
from nfs_failover.errors import PreconditionError, ProviderError, ProviderTimeout
from nfs_failover.lab import Lab
from nfs_failover.replication import MirrorState, RelationshipStatus
from nfs_failover.replication.nfs_divergence import CLOCK_MARGIN
from nfs_failover.replication.ontap import OntapProvider, parse_lag_time
from nfs_failover.replication.ontap.client import PASSWORD_ENV, USERNAME_ENV
from tests.replication.helpers import folders
from tests.replication.ontap_contract_server import (
    JOBS,
    RELATIONSHIPS,
    ContractServer,
    ExportRuleRecord,
    Relationship,
)

T = TypeVar("T")
SOURCE, DESTINATION = "svm1:crr_src", "svm2:crr_dst"
POLL = 0.002  # seconds between polls: the server counts polls, not time
TIMEOUT = 10.0
# The seed's addresses, for configuration only: no test reaches them (divergence, the one
# operation that talks NFS, is tested against the lab's exports).
SEED_EXPORTS = ("10.1.13.5:/crr_src", "10.2.13.5:/crr_dst")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ContractServer]:
    with ContractServer(tmp_path) as contract:
        yield contract


@pytest.fixture
def relationship(server: ContractServer) -> Relationship:
    return server.add_relationship(SOURCE, DESTINATION)


def credentials_file(server: ContractServer, tmp_path: Path, *, mode: int = 0o600) -> Path:
    path = tmp_path / "ontap-credentials"
    path.write_text(f"{server.username}\n{server.password}\n")
    path.chmod(mode)
    return path


def volume(
    server: ContractServer,
    tmp_path: Path,
    *,
    relationship: str = DESTINATION,
    credentials: Path | bool | None = True,
    ca_file: Path | None = None,
    tls: dict[str, Any] | None = None,
    exports: tuple[str, str] = SEED_EXPORTS,
) -> Volume:
    replication: dict[str, Any] = {
        "provider": "ontap",
        "cluster": "127.0.0.1",
        "port": server.port,
        "relationship": relationship,
        "ca_file": str(ca_file or server.ca_file),
        **(tls or {}),
    }
    if credentials is True:
        replication["credentials_file"] = str(credentials_file(server, tmp_path))
    elif isinstance(credentials, Path):
        replication["credentials_file"] = str(credentials)
    return Volume.model_validate(
        {
            "name": "crr",
            "mode": "read-write",
            "replicas": [
                {"name": "site1", "export": exports[0]},
                {"name": "dest1", "export": exports[1]},
            ],
            "replication": replication,
        }
    )


@pytest.fixture
def provider(server: ContractServer, relationship: Relationship, tmp_path: Path) -> OntapProvider:
    del relationship
    return OntapProvider(volume(server, tmp_path), poll_interval=POLL)


def using(provider: OntapProvider, step: Callable[[OntapProvider], Coroutine[Any, Any, T]]) -> T:
    async def go() -> T:
        try:
            return await step(provider)
        finally:
            await provider.close()

    return run(go())


class Said:
    """A progress callback that keeps what it was told."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str, fraction: float | None) -> None:
        assert fraction is None or 0.0 <= fraction <= 1.0
        self.messages.append(message)


# -- lag_time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT8H35M42S", timedelta(hours=8, minutes=35, seconds=42)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT0S", timedelta(0)),
        ("P2W", timedelta(weeks=2)),
        ("PT1.5S", timedelta(seconds=1.5)),
        ("PT90M", timedelta(minutes=90)),
    ],
)
def test_lag_time_reads_iso_8601_durations(text: str, expected: timedelta) -> None:
    assert parse_lag_time(text) == expected


@pytest.mark.parametrize(
    "text", [None, "", "garbage", "8h35m", "P", "PT", "P1DT", "P1Y", "P1M", "-PT5S", "PT5", "pt5s"]
)
def test_lag_time_that_is_not_a_plain_duration_reads_as_none(text: str | None) -> None:
    assert parse_lag_time(text) is None


def test_an_absurd_lag_time_reads_as_none_instead_of_overflowing() -> None:
    assert parse_lag_time("P999999999W") is None


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=9999)))
def test_lag_time_written_as_days_hours_minutes_seconds_reads_back(lag: timedelta) -> None:
    hours, rest = divmod(lag.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = f".{lag.microseconds:06d}" if lag.microseconds else ""
    text = f"P{lag.days}DT{hours}H{minutes}M{seconds}{fraction}S"
    assert parse_lag_time(text) == lag


# -- status --------------------------------------------------------------------------


def test_status_reports_common_terms_lag_and_the_configured_replicas(
    provider: OntapProvider, server: ContractServer
) -> None:
    status = using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert status.mirror_state is MirrorState.MIRRORED
    assert status.relationship_status is RelationshipStatus.IDLE
    assert status.healthy
    assert (status.source, status.destination) == ("site1", "dest1")
    assert status.lag == timedelta(hours=8, minutes=35, seconds=42)
    assert status.lag_source == "lag_time"
    assert status.last_transfer_end == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert status.last_transfer_bytes == 4096
    assert status.error is None
    assert status.raw["state"] == "snapmirrored"
    assert status.raw["destination.path"] == DESTINATION
    lookup = server.calls("GET", "/snapmirror/relationships")[0]
    assert lookup.query["destination.path"] == DESTINATION
    assert "lag_time" in lookup.query["fields"]


@pytest.mark.parametrize(
    ("state", "transfer", "mirror", "status"),
    [
        ("snapmirrored", "success", MirrorState.MIRRORED, RelationshipStatus.IDLE),
        ("snapmirrored", "transferring", MirrorState.MIRRORED, RelationshipStatus.TRANSFERRING),
        ("in_sync", "queued", MirrorState.MIRRORED, RelationshipStatus.TRANSFERRING),
        ("broken_off", "aborted", MirrorState.BROKEN, RelationshipStatus.IDLE),
        ("uninitialized", None, MirrorState.UNINITIALIZED, RelationshipStatus.IDLE),
        ("paused", "failed", MirrorState.UNKNOWN, RelationshipStatus.IDLE),
        ("warp_drive_engaged", "folding_space", MirrorState.UNKNOWN, RelationshipStatus.UNKNOWN),
    ],
)
def test_status_normalises_ontap_states_and_never_fails_on_unknown_ones(
    server: ContractServer,
    tmp_path: Path,
    state: str,
    transfer: str | None,
    mirror: MirrorState,
    status: RelationshipStatus,
) -> None:
    server.add_relationship(SOURCE, DESTINATION, state=state, transfer_state=transfer)
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    seen = using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert (seen.mirror_state, seen.relationship_status) == (mirror, status)
    assert seen.raw["state"] == state
    assert seen.raw.get("transfer.state") == transfer


def test_an_unhealthy_relationship_reports_ontaps_reasons(
    server: ContractServer, tmp_path: Path
) -> None:
    reasons = [
        {"message": "Transfer failed.", "code": "6621444", "arguments": []},
        {"message": "Destination volume is offline.", "code": "13303827", "arguments": []},
    ]
    server.add_relationship(
        SOURCE, DESTINATION, healthy=False, unhealthy_reason=reasons, lag_time="garbage"
    )
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    status = using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert not status.healthy
    assert status.error == "Transfer failed.; Destination volume is offline."
    assert status.lag is None
    assert status.lag_source is None
    assert status.raw["lag_time"] == "garbage"


def test_a_relationship_named_by_uuid_is_read_directly_without_a_path_lookup(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    provider = OntapProvider(
        volume(server, tmp_path, relationship=relationship.uuid), poll_interval=POLL
    )
    status = using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert (status.source, status.destination) == ("site1", "dest1")
    assert status.raw["uuid"] == relationship.uuid
    assert [call.query.get("uuid") for call in server.calls("GET")] == [relationship.uuid]


def test_a_relationship_that_does_not_exist_is_a_provider_error(
    server: ContractServer, tmp_path: Path
) -> None:
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    with pytest.raises(ProviderError, match="no SnapMirror relationship") as caught:
        using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert caught.value.code == "not_found"


def test_a_relationship_found_reversed_by_its_path_names_the_replicas_the_other_way(
    server: ContractServer, tmp_path: Path
) -> None:
    server.add_relationship(DESTINATION, SOURCE)  # reversed before this process started
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    status = using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert (status.source, status.destination) == ("dest1", "site1")


# -- break ---------------------------------------------------------------------------


def test_break_patches_broken_off_follows_the_job_and_polls_until_broken(
    provider: OntapProvider, server: ContractServer
) -> None:
    result = using(provider, lambda p: p.break_(timeout=TIMEOUT))
    assert result.operation == "break"
    assert result.changed
    assert result.status.mirror_state is MirrorState.BROKEN
    (patch,) = server.calls("PATCH")
    assert patch.body == {"state": "broken_off"}
    assert "force" not in patch.query
    assert len(server.calls("GET", "/cluster/jobs")) == server.job_polls + 1


def test_a_forced_break_sends_the_string_true_and_aborts_the_running_transfer(
    server: ContractServer, tmp_path: Path
) -> None:
    server.add_relationship(SOURCE, DESTINATION, transfer_state="transferring")
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    result = using(provider, lambda p: p.break_(force=True, timeout=TIMEOUT))
    assert result.status.mirror_state is MirrorState.BROKEN
    assert result.status.raw["transfer.state"] == "aborted"
    (patch,) = server.calls("PATCH")
    assert patch.query["force"] == "true"


def test_breaking_an_uninitialized_relationship_is_refused_without_a_patch(
    server: ContractServer, tmp_path: Path
) -> None:
    server.add_relationship(SOURCE, DESTINATION, state="uninitialized", transfer_state=None)
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    with pytest.raises(PreconditionError, match="uninitialized"):
        using(provider, lambda p: p.break_(force=True, timeout=TIMEOUT))
    assert server.calls("PATCH") == []


def test_break_while_a_transfer_runs_waits_for_it_to_end_then_breaks(
    server: ContractServer, tmp_path: Path
) -> None:
    rel = server.add_relationship(SOURCE, DESTINATION, transfer_state="transferring")

    def ended(r: Relationship) -> None:
        r.transfer_state = "success"

    rel.steps.extend([lambda r: None, lambda r: None, ended])
    said = Said()
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    result = using(provider, lambda p: p.break_(timeout=TIMEOUT, progress=said))
    assert result.changed
    assert result.status.mirror_state is MirrorState.BROKEN
    (patch,) = server.calls("PATCH")
    assert "force" not in patch.query
    reads_before_patch = server.requests.index(patch)
    assert reads_before_patch == 3  # two readings still transferring, the third idle
    assert any("running transfer to end" in message for message in said.messages)


def test_break_while_a_transfer_runs_past_the_deadline_times_out_and_changes_nothing(
    server: ContractServer, tmp_path: Path
) -> None:
    server.add_relationship(SOURCE, DESTINATION, transfer_state="transferring")
    provider = OntapProvider(volume(server, tmp_path), poll_interval=0.05)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="nothing was changed"):
        using(provider, lambda p: p.break_(timeout=0.5))
    assert time.monotonic() - started < 1.5
    assert server.calls("PATCH") == []


def test_breaking_a_broken_relationship_again_changes_nothing(
    provider: OntapProvider, server: ContractServer
) -> None:
    async def twice(p: OntapProvider) -> tuple[bool, bool]:
        first = await p.break_(timeout=TIMEOUT)
        second = await p.break_(timeout=TIMEOUT)
        return first.changed, second.changed

    assert using(provider, twice) == (True, False)
    assert len(server.calls("PATCH")) == 1


# -- resync and reverse resync -------------------------------------------------------


def test_resync_after_a_break_waits_through_the_transfer_until_snapmirrored(
    provider: OntapProvider, server: ContractServer
) -> None:
    said = Said()

    async def cycle(p: OntapProvider) -> Any:
        await p.break_(timeout=TIMEOUT)
        return await p.resync(timeout=TIMEOUT, progress=said)

    result = using(provider, cycle)
    assert result.operation == "resync"
    assert result.changed
    assert result.status.mirror_state is MirrorState.MIRRORED
    assert result.status.relationship_status is RelationshipStatus.IDLE
    assert (result.status.source, result.status.destination) == ("site1", "dest1")
    assert result.bytes_transferred == 1_200_000_000
    assert result.overwritten == ()
    assert server.calls("PATCH")[-1].body == {"state": "snapmirrored"}
    assert "waiting for snapmirrored (transferring, 1.2 GB)" in said.messages


def test_resync_of_a_mirrored_relationship_changes_nothing_and_sends_no_patch(
    provider: OntapProvider, server: ContractServer
) -> None:
    result = using(provider, lambda p: p.resync(timeout=TIMEOUT))
    assert not result.changed
    assert server.calls("PATCH") == []


def test_resync_of_an_uninitialized_relationship_is_refused_without_a_patch(
    server: ContractServer, tmp_path: Path
) -> None:
    server.add_relationship(SOURCE, DESTINATION, state="uninitialized", transfer_state=None)
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    with pytest.raises(PreconditionError, match="needs a broken relationship"):
        using(provider, lambda p: p.resync(timeout=TIMEOUT))
    assert server.calls("PATCH") == []


def test_reverse_resync_swaps_the_paths_and_the_reported_source_and_destination(
    provider: OntapProvider, server: ContractServer
) -> None:
    async def failover(p: OntapProvider) -> tuple[Any, Any, Any]:
        await p.break_(timeout=TIMEOUT)
        reversed_ = await p.reverse_resync(timeout=TIMEOUT)
        again = await p.reverse_resync(timeout=TIMEOUT)
        return reversed_, again, await p.status(timeout=TIMEOUT)

    result, again, status = using(provider, failover)
    assert result.operation == "reverse resync"
    assert result.changed
    assert result.status.mirror_state is MirrorState.MIRRORED
    assert (result.status.source, result.status.destination) == ("dest1", "site1")
    assert (status.source, status.destination) == ("dest1", "site1")
    assert status.raw["source.path"] == DESTINATION
    assert not again.changed
    patches = server.calls("PATCH")
    assert len(patches) == 2
    assert patches[-1].body == {
        "state": "snapmirrored",
        "source": {"path": DESTINATION},
        "destination": {"path": SOURCE},
    }


def test_failback_by_a_second_break_and_reverse_resync_restores_the_configured_roles(
    provider: OntapProvider,
) -> None:
    async def round_trip(p: OntapProvider) -> Any:
        await p.break_(timeout=TIMEOUT)
        await p.reverse_resync(timeout=TIMEOUT)
        await p.break_(timeout=TIMEOUT)
        return await p.reverse_resync(timeout=TIMEOUT)

    result = using(provider, round_trip)
    assert result.changed
    assert (result.status.source, result.status.destination) == ("site1", "dest1")


def test_reverse_resync_of_a_relationship_never_broken_is_refused_without_a_patch(
    provider: OntapProvider, server: ContractServer
) -> None:
    with pytest.raises(PreconditionError, match="reverse resync needs a broken relationship"):
        using(provider, lambda p: p.reverse_resync(timeout=TIMEOUT))
    assert server.calls("PATCH") == []


def test_a_resync_whose_transfer_fails_is_a_provider_error_with_ontaps_words(
    provider: OntapProvider, server: ContractServer
) -> None:
    async def cycle(p: OntapProvider) -> Any:
        await p.break_(timeout=TIMEOUT)
        server.fail_next_transfer("Destination volume is out of space.", "13303821")
        return await p.resync(timeout=TIMEOUT)

    with pytest.raises(ProviderError, match="out of space") as caught:
        using(provider, cycle)
    assert caught.value.code == "13303821"


# -- transfer_now --------------------------------------------------------------------


def test_transfer_now_posts_a_transfer_and_waits_until_it_has_ended(
    provider: OntapProvider, server: ContractServer
) -> None:
    said = Said()
    result = using(provider, lambda p: p.transfer_now(timeout=TIMEOUT, progress=said))
    assert result.operation == "transfer"
    assert result.changed
    assert result.status.relationship_status is RelationshipStatus.IDLE
    assert result.status.last_transfer_end == datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
    assert result.status.lag == timedelta(0)
    assert result.bytes_transferred == 1_200_000_000
    (post,) = server.calls("POST")
    assert post.path.endswith("/transfers")
    assert post.body == {}
    assert any(message.startswith("waiting for the transfer to end") for message in said.messages)


def test_transfer_now_on_a_broken_relationship_is_refused_without_a_post(
    server: ContractServer, tmp_path: Path
) -> None:
    server.add_relationship(SOURCE, DESTINATION, state="broken_off")
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    with pytest.raises(PreconditionError, match="mirrored"):
        using(provider, lambda p: p.transfer_now(timeout=TIMEOUT))
    assert server.calls("POST") == []


def test_serve_returns_at_once_as_ontap_keeps_its_own_schedule(
    provider: OntapProvider, server: ContractServer
) -> None:
    using(provider, lambda p: asyncio.wait_for(p.serve(asyncio.Event()), 1.0))
    assert server.requests == []


# -- failures ------------------------------------------------------------------------


def test_a_failed_job_is_a_provider_error_with_ontaps_message_and_code(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail_next_job("Failed to break the relationship: volume is busy.", "13303812")
    with pytest.raises(ProviderError) as caught:
        using(provider, lambda p: p.break_(timeout=TIMEOUT))
    assert caught.value.code == "13303812"
    assert caught.value.provider_message == "Failed to break the relationship: volume is busy."
    assert "volume is busy" in str(caught.value)
    assert not isinstance(caught.value, ProviderTimeout)


def test_a_refused_request_is_a_provider_error_with_ontaps_message_and_code(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.reject_next("POST", 400, "SnapMirror update is not allowed now.", "13303820")
    with pytest.raises(ProviderError, match="not allowed now") as caught:
        using(provider, lambda p: p.transfer_now(timeout=TIMEOUT))
    assert caught.value.code == "13303820"
    assert caught.value.provider_message == "SnapMirror update is not allowed now."


@pytest.fixture
def volume_on_lab(request: pytest.FixtureRequest) -> Volume:
    """The replication lab's volume (conftest's ``volume``; that name is a helper here)."""
    found: Volume = request.getfixturevalue("volume")
    return found


def test_divergence_needs_a_lag_time_as_the_common_point(
    provider: OntapProvider, relationship: Relationship
) -> None:
    relationship.lag_time = None
    with pytest.raises(PreconditionError, match="no lag_time"):
        using(provider, lambda p: p.divergence(timeout=TIMEOUT))


@pytest.mark.lab
def test_divergence_walks_both_replicas_over_nfs_from_the_last_transfer(
    server: ContractServer,
    relationship: Relationship,
    replication_lab: Lab,
    volume_on_lab: Volume,
    tmp_path: Path,
) -> None:
    source, destination = folders(volume_on_lab)
    (source / "old").write_text("replicated long ago")
    (destination / "old").write_text("replicated long ago")
    time.sleep(CLOCK_MARGIN.total_seconds() + 1.2)
    (source / "after-the-transfer").write_text("only on the source")
    (destination / "old").write_text("changed on the destination after the break")
    relationship.lag_time = "PT1S"  # the last transfer ended a second ago
    exports = (str(volume_on_lab.replicas[0].export), str(volume_on_lab.replicas[1].export))
    provider = OntapProvider(volume(server, tmp_path, exports=exports), poll_interval=POLL)
    found = using(provider, lambda p: p.divergence(timeout=TIMEOUT))
    assert found.source_only == ("after-the-transfer",)
    assert found.destination_only == ("old",)


def test_a_server_that_stops_answering_times_out_within_the_deadline(
    provider: OntapProvider, server: ContractServer
) -> None:
    async def hang(p: OntapProvider) -> float:
        await p.status(timeout=TIMEOUT)  # a live keep-alive connection, then silence
        server.stop_answering()
        started = time.monotonic()
        try:
            await p.status(timeout=1.0)
        finally:
            elapsed = time.monotonic() - started
        return elapsed

    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="GET /api/snapmirror/relationships") as caught:
        using(provider, hang)
    # asyncio.run also waits for the worker thread: its request timed out with the deadline.
    assert time.monotonic() - started < 2.0
    assert server.password not in str(caught.value)


def test_an_operation_on_a_hung_server_times_out_within_the_deadline(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.stop_answering()
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        using(provider, lambda p: p.break_(timeout=1.0))
    assert time.monotonic() - started < 2.0


def test_a_refused_connection_is_asked_again_until_the_deadline_then_a_provider_error(
    tmp_path: Path,
) -> None:
    with ContractServer(tmp_path) as closed:
        settings = volume(closed, tmp_path)
    provider = OntapProvider(settings, poll_interval=POLL)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="cannot reach ONTAP") as caught:
        using(provider, lambda p: p.status(timeout=1.0))
    assert 0.9 < time.monotonic() - started < 2.0
    assert caught.value.code == "connection"
    assert "until the deadline" in str(caught.value)


# -- credentials and TLS -------------------------------------------------------------


def test_wrong_credentials_are_an_authentication_error_that_never_shows_the_password(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    del relationship
    wrong = tmp_path / "wrong"
    wrong.write_text(f"{server.username}\nWr0ng-Pa55word\n")
    wrong.chmod(0o600)
    provider = OntapProvider(volume(server, tmp_path, credentials=wrong), poll_interval=POLL)
    with pytest.raises(ProviderError, match="authentication failed") as caught:
        using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert caught.value.code == "6"
    shown = "".join(traceback.format_exception(caught.value)) + caught.value.provider_message
    assert "Wr0ng-Pa55word" not in shown
    assert server.password not in shown
    assert server.calls("GET")[0].authorized is False


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o602, 0o620])
def test_a_credentials_file_others_can_read_or_write_is_refused(
    server: ContractServer, tmp_path: Path, mode: int
) -> None:
    path = credentials_file(server, tmp_path, mode=mode)
    with pytest.raises(ProviderError, match="accessible by group or others") as caught:
        OntapProvider(volume(server, tmp_path, credentials=path))
    assert caught.value.code == "credentials"
    assert server.password not in str(caught.value)
    assert server.requests == []


def test_a_credentials_file_without_a_password_line_is_refused_without_showing_it(
    server: ContractServer, tmp_path: Path
) -> None:
    path = tmp_path / "one-line"
    path.write_text("only-a-secret-looking-line\n")
    path.chmod(0o600)
    with pytest.raises(ProviderError, match="content not shown") as caught:
        OntapProvider(volume(server, tmp_path, credentials=path))
    assert "only-a-secret" not in str(caught.value)


def test_credentials_come_from_the_environment_without_a_credentials_file(
    server: ContractServer,
    relationship: Relationship,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del relationship
    monkeypatch.setenv(USERNAME_ENV, server.username)
    monkeypatch.setenv(PASSWORD_ENV, server.password)
    provider = OntapProvider(volume(server, tmp_path, credentials=None), poll_interval=POLL)
    assert using(provider, lambda p: p.status(timeout=TIMEOUT)).healthy
    assert server.calls("GET")[0].authorized


def test_missing_credentials_are_refused_before_any_request(
    server: ContractServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(USERNAME_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(ProviderError, match=USERNAME_ENV) as caught:
        OntapProvider(volume(server, tmp_path, credentials=None))
    assert caught.value.code == "credentials"


def test_a_certificate_from_another_ca_is_refused(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    del relationship
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    provider = OntapProvider(volume(server, tmp_path, ca_file=other), poll_interval=POLL)
    with pytest.raises(ProviderError, match="TLS") as caught:
        using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert caught.value.code == "tls"
    assert server.requests == []


def test_the_configured_ca_file_wins_over_requests_ca_bundle_in_the_environment(
    server: ContractServer,
    relationship: Relationship,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del relationship
    unrelated = tmp_path / "unrelated-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(unrelated))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(unrelated))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(unrelated))
    provider = OntapProvider(volume(server, tmp_path), poll_interval=POLL)
    assert using(provider, lambda p: p.status(timeout=TIMEOUT)).healthy


def test_connections_dropped_while_waiting_are_polled_through_until_done(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.settle_polls = 3
    dropped: list[str] = []

    def drop_once(message: str, fraction: float | None) -> None:
        if message.startswith("waiting for broken_off") and not dropped:
            dropped.append(message)
            server.drop_next(2)

    result = using(provider, lambda p: p.break_(timeout=TIMEOUT, progress=drop_once))
    assert dropped
    assert result.status.mirror_state is MirrorState.BROKEN


def test_a_dropped_connection_on_a_single_read_is_asked_again(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.drop_next(1)
    assert using(provider, lambda p: p.status(timeout=TIMEOUT)).healthy


def test_tls_verification_can_be_turned_off(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    del relationship
    settings = volume(server, tmp_path, tls={"verify_tls": False, "ca_file": None})
    provider = OntapProvider(settings, poll_interval=POLL)
    assert using(provider, lambda p: p.status(timeout=TIMEOUT)).healthy


# -- transient failures: GETs are asked again, PATCH and POST are not -------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_on_a_status_read_is_retried_within_the_deadline(
    provider: OntapProvider, server: ContractServer, status: int
) -> None:
    server.fail("GET", RELATIONSHIPS, status, "Internal error. Retry the request.", "1")
    assert using(provider, lambda p: p.status(timeout=TIMEOUT)).healthy
    assert len(server.calls("GET", RELATIONSHIPS)) == 2


@pytest.mark.parametrize("path", [RELATIONSHIPS, JOBS])
def test_a_500_on_any_read_of_a_break_is_retried_and_the_break_completes(
    provider: OntapProvider, server: ContractServer, path: str
) -> None:
    server.fail("GET", path, 500)
    result = using(provider, lambda p: p.break_(timeout=TIMEOUT))
    assert result.changed
    assert result.status.mirror_state is MirrorState.BROKEN
    assert len(server.calls("PATCH")) == 1


def test_a_500_while_a_resync_is_followed_is_retried_and_the_resync_completes(
    provider: OntapProvider, server: ContractServer
) -> None:
    armed: list[str] = []

    def fail_once(message: str, fraction: float | None) -> None:
        if message.startswith("waiting for snapmirrored") and not armed:
            armed.append(message)
            server.fail("GET", RELATIONSHIPS, 500)

    async def cycle(p: OntapProvider) -> Any:
        await p.break_(timeout=TIMEOUT)
        return await p.resync(timeout=TIMEOUT, progress=fail_once)

    result = using(provider, cycle)
    assert armed
    assert result.status.mirror_state is MirrorState.MIRRORED


def test_a_503_with_retry_after_is_asked_again_after_the_pause_it_asks_for(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("GET", RELATIONSHIPS, 503, "Service busy.", "2", headers={"Retry-After": "1"})
    started = time.monotonic()
    assert using(provider, lambda p: p.status(timeout=TIMEOUT)).healthy
    assert time.monotonic() - started >= 1.0
    assert len(server.calls("GET", RELATIONSHIPS)) == 2


def test_a_retry_after_past_the_deadline_is_not_waited_for(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("GET", RELATIONSHIPS, 503, "Service busy.", "2", headers={"Retry-After": "30"})
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="Retry-After 30s, past the deadline") as caught:
        using(provider, lambda p: p.status(timeout=2.0))
    assert time.monotonic() - started < 1.0
    assert "GET /api/snapmirror/relationships" in str(caught.value)
    assert len(server.calls("GET", RELATIONSHIPS)) == 1


def test_a_server_error_that_lasts_past_the_deadline_is_a_provider_error_with_ontaps_code(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("GET", RELATIONSHIPS, 500, "Internal error.", "8", times=None)
    started = time.monotonic()
    with pytest.raises(ProviderError, match="HTTP 500") as caught:
        using(provider, lambda p: p.status(timeout=1.0))
    assert time.monotonic() - started < 1.5
    assert caught.value.code == "8"
    assert "until the deadline" in str(caught.value)
    assert len(server.calls("GET", RELATIONSHIPS)) > 1


@pytest.mark.parametrize(
    ("method", "step"),
    [
        ("PATCH", lambda p: p.break_(timeout=TIMEOUT)),
        ("POST", lambda p: p.transfer_now(timeout=TIMEOUT)),
    ],
)
def test_a_server_error_on_a_patch_or_post_is_not_sent_again(
    provider: OntapProvider,
    server: ContractServer,
    method: str,
    step: Callable[[OntapProvider], Coroutine[Any, Any, Any]],
) -> None:
    server.fail(method, RELATIONSHIPS, 503, "Service busy.", "2", headers={"Retry-After": "0"})
    with pytest.raises(ProviderError, match="HTTP 503"):
        using(provider, step)
    assert len(server.calls(method)) == 1


# -- an accepted change is not assumed failed when a read confirming it fails -----------


def test_a_break_whose_job_cannot_be_read_is_decided_by_the_relationships_state(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("GET", JOBS, 403, "not authorized for that command", "6", times=None)
    said = Said()
    result = using(provider, lambda p: p.break_(timeout=TIMEOUT, progress=said))
    assert result.changed
    assert result.status.mirror_state is MirrorState.BROKEN
    assert any(
        "could not be read (HTTP 403); the relationship reads broken_off: the break is done"
        in message
        for message in said.messages
    )


def test_a_break_whose_job_reads_keep_failing_with_500_is_decided_by_the_relationship(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("GET", JOBS, 500, times=None)
    started = time.monotonic()
    result = using(provider, lambda p: p.break_(timeout=1.5))
    assert time.monotonic() - started < 1.5
    assert result.status.mirror_state is MirrorState.BROKEN


def test_a_break_whose_job_read_hangs_is_decided_by_the_relationships_state(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.hang_next("GET", JOBS)
    said = Said()
    started = time.monotonic()
    result = using(provider, lambda p: p.break_(timeout=2.0, progress=said))
    assert time.monotonic() - started < 2.0
    assert result.status.mirror_state is MirrorState.BROKEN
    assert any("no answer to GET /api/cluster/jobs" in message for message in said.messages)


def test_a_resync_whose_relationship_read_hangs_after_the_patch_reads_it_again(
    provider: OntapProvider, server: ContractServer
) -> None:
    armed: list[str] = []

    def hang_once(message: str, fraction: float | None) -> None:
        if message.startswith("waiting for ONTAP job") and not armed:
            armed.append(message)
            server.hang_next("GET", RELATIONSHIPS)

    async def cycle(p: OntapProvider) -> tuple[Any, float]:
        await p.break_(timeout=TIMEOUT)
        started = time.monotonic()
        result = await p.resync(timeout=2.0, progress=hang_once)
        return result, time.monotonic() - started

    result, elapsed = using(provider, cycle)
    assert armed
    assert elapsed < 2.0
    assert result.status.mirror_state is MirrorState.MIRRORED


def test_a_break_the_relationship_never_confirms_says_what_is_known_and_that_it_may_complete(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("GET", JOBS, 403, "not authorized for that command", "6", times=None)
    server.settle_polls = 10**6  # ONTAP took the break, and has not shown it yet
    with pytest.raises(ProviderTimeout) as caught:
        using(provider, lambda p: p.break_(timeout=1.0))
    message = str(caught.value)
    assert "could not be read (HTTP 403)" in message
    assert "the relationship reads snapmirrored (waiting for broken_off)" in message
    assert "may still complete on the cluster" in message


def test_a_job_that_outlives_the_deadline_is_named_with_its_last_state(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    del relationship
    server.job_polls = 10**6
    provider = OntapProvider(volume(server, tmp_path), poll_interval=0.02)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        using(provider, lambda p: p.break_(timeout=3.0))
    assert time.monotonic() - started < 4.0
    (job,) = server.jobs
    message = str(caught.value)
    # Its last state as read; on a loaded machine the last read may itself be cut short.
    assert (
        f"ONTAP job {job} was still running (In progress)" in message
        or f"ONTAP job {job} could not be read" in message
    ), message
    assert "may still complete on the cluster" in message
    assert "deadline passed" not in message


# -- which replica is which, learned from the record's paths ------------------------


def test_a_relationship_named_by_uuid_found_reversed_names_the_replicas_from_its_paths(
    server: ContractServer, tmp_path: Path
) -> None:
    reversed_ = server.add_relationship(DESTINATION, SOURCE)  # reversed before this process
    provider = OntapProvider(
        volume(server, tmp_path, relationship=reversed_.uuid), poll_interval=POLL
    )
    status = using(provider, lambda p: p.status(timeout=TIMEOUT))
    assert (status.source, status.destination) == ("dest1", "site1")


def test_a_new_process_reports_the_direction_a_reverse_resync_left_for_a_uuid(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    settings = volume(server, tmp_path, relationship=relationship.uuid)

    async def failover(p: OntapProvider) -> None:
        await p.break_(timeout=TIMEOUT)
        await p.reverse_resync(timeout=TIMEOUT)

    using(OntapProvider(settings, poll_interval=POLL), failover)
    later = OntapProvider(settings, poll_interval=POLL)  # as after a restart
    status = using(later, lambda p: p.status(timeout=TIMEOUT))
    assert (status.source, status.destination) == ("dest1", "site1")


def test_a_uuid_whose_paths_no_export_names_is_refused_rather_than_guessed(
    server: ContractServer, relationship: Relationship, tmp_path: Path
) -> None:
    exports = ("10.1.13.5:/data", "10.2.13.5:/data")
    settings = volume(server, tmp_path, relationship=relationship.uuid, exports=exports)
    with pytest.raises(ProviderError, match="cannot tell which replica holds") as caught:
        using(OntapProvider(settings, poll_interval=POLL), lambda p: p.status(timeout=TIMEOUT))
    assert caught.value.code == "direction"


# -- a timeout names the request that did not answer --------------------------------


def test_a_hung_status_read_names_the_request_that_did_not_answer(
    provider: OntapProvider, server: ContractServer, relationship: Relationship
) -> None:
    server.stop_answering()
    with pytest.raises(ProviderTimeout) as caught:
        using(provider, lambda p: p.status(timeout=0.5))
    assert f"GET /api/snapmirror/relationships?destination.path={DESTINATION}" in str(caught.value)
    assert server.password not in str(caught.value)
    del relationship


def test_a_hung_break_patch_names_the_patch_and_says_ontap_may_have_acted(
    provider: OntapProvider, server: ContractServer, relationship: Relationship
) -> None:
    server.hang_next("PATCH")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as caught:
        using(provider, lambda p: p.break_(timeout=1.0))
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert f"PATCH /api/snapmirror/relationships/{relationship.uuid}" in message
    assert "may have acted on it" in message
    assert len(server.calls("PATCH")) == 1


# -- the storage fence -------------------------------------------------------------------

RULES = "/api/protocols/nfs/export-policies"


@pytest.mark.parametrize(("replica", "path"), [("site1", SOURCE), ("dest1", DESTINATION)])
def test_fence_sets_rw_rule_never_on_every_rule_of_the_volumes_export_policy(
    provider: OntapProvider, server: ContractServer, replica: str, path: str
) -> None:
    result = using(provider, lambda p: p.fence(replica, timeout=TIMEOUT))
    assert (result.replica, result.changed) == (replica, True)
    assert result.saved["volume"] == path
    assert result.saved["rules"] == [
        {"index": 1, "rw_rule": ["sys"]},
        {"index": 2, "rw_rule": ["never"]},
    ]
    assert server.rw_rules(path) == [["never"], ["never"]]
    other = DESTINATION if path == SOURCE else SOURCE
    assert server.rw_rules(other) == [["sys"], ["never"]]  # the other replica is untouched
    # Only the rule that granted writes is sent, with nothing but its rw_rule.
    (patch,) = server.calls("PATCH", RULES)
    assert patch.path.endswith("/rules/1") and patch.body == {"rw_rule": ["never"]}


def test_unfence_gives_each_rule_its_saved_rw_rule_back(
    provider: OntapProvider, server: ContractServer
) -> None:
    async def cycle(p: OntapProvider) -> tuple[bool, bool]:
        fenced = await p.fence("site1", timeout=TIMEOUT)
        first = await p.unfence("site1", fenced.saved, timeout=TIMEOUT)
        again = await p.unfence("site1", fenced.saved, timeout=TIMEOUT)
        return first.changed, again.changed

    assert using(provider, cycle) == (True, False)
    assert server.rw_rules(SOURCE) == [["sys"], ["never"]]
    assert len(server.calls("PATCH", RULES)) == 2


def test_fencing_a_fenced_replica_sends_nothing(
    provider: OntapProvider, server: ContractServer
) -> None:
    async def twice(p: OntapProvider) -> bool:
        await p.fence("site1", timeout=TIMEOUT)
        return (await p.fence("site1", timeout=TIMEOUT)).changed

    assert using(provider, twice) is False
    assert len(server.calls("PATCH", RULES)) == 1


def test_fence_tells_before_change_what_it_replaces_before_the_first_patch(
    provider: OntapProvider, server: ContractServer
) -> None:
    told: list[tuple[object, int]] = []

    async def record(saved: dict[str, object]) -> None:
        told.append((saved, len(server.calls("PATCH", RULES))))

    result = using(provider, lambda p: p.fence("site1", timeout=TIMEOUT, before_change=record))
    assert told == [(result.saved, 0)]


def test_a_fence_cut_short_after_one_rule_completes_on_the_next_try(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.policies[1].rules[3] = ExportRuleRecord(3, ["10.2.0.0/16"])
    server.fail("PATCH", "/rules/3", 500, "Internal error.", "1")

    async def interrupted_then_again(p: OntapProvider) -> tuple[object, bool]:
        first: list[object] = []

        async def record(saved: dict[str, object]) -> None:
            first.append(saved["rules"])

        with pytest.raises(ProviderError, match="HTTP 500"):
            await p.fence("site1", timeout=TIMEOUT, before_change=record)
        again = await p.fence("site1", timeout=TIMEOUT)
        return first[0], again.changed

    saved_first, changed = using(provider, interrupted_then_again)
    assert server.rw_rules(SOURCE) == [["never"], ["never"], ["never"]]
    assert changed is True
    # What the first try saved is the state before any change: it is what unfence needs.
    assert saved_first == [
        {"index": 1, "rw_rule": ["sys"]},
        {"index": 2, "rw_rule": ["never"]},
        {"index": 3, "rw_rule": ["sys"]},
    ]


def test_an_export_policy_other_volumes_use_is_not_fenced(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.add_volume("svm1:home", policy=1)
    with pytest.raises(ProviderError, match="used by svm1:home too") as caught:
        using(provider, lambda p: p.fence("site1", timeout=TIMEOUT))
    assert caught.value.code == "shared_policy"
    assert server.calls("PATCH", RULES) == []


def test_a_refused_rule_change_is_a_provider_error_with_ontaps_words(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.fail("PATCH", RULES, 403, "not authorized for that command", "6")
    with pytest.raises(ProviderError, match="lacks a privilege") as caught:
        using(provider, lambda p: p.fence("site1", timeout=TIMEOUT))
    assert caught.value.code == "6"
    assert server.rw_rules(SOURCE) == [["sys"], ["never"]]
    assert len(server.calls("PATCH", RULES)) == 1  # never sent again


def test_a_rule_change_without_an_answer_gives_provider_timeout_at_the_deadline(
    provider: OntapProvider, server: ContractServer
) -> None:
    server.hang_next("PATCH", RULES)
    with pytest.raises(ProviderTimeout, match="ONTAP may have acted on it"):
        using(provider, lambda p: p.fence("site1", timeout=1.0))
    assert len(server.calls("PATCH", RULES)) == 1


def test_a_replica_the_volume_does_not_have_cannot_be_fenced(provider: OntapProvider) -> None:
    with pytest.raises(ProviderError, match="no replica site9") as caught:
        using(provider, lambda p: p.fence("site9", timeout=TIMEOUT))
    assert caught.value.code == "config"
