"""The ANF provider, with the real azure-mgmt-netapp SDK against the local contract server.

Nothing here reaches Azure: the server in ``anf_contract_server`` models one relationship
over HTTPS on 127.0.0.1, and a fixed-token credential stands in for Microsoft Entra ID.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from azure.core.exceptions import ClientAuthenticationError
from azure.mgmt.netapp import NetAppManagementClient

from nfs_failover.config import AnfVolumeId, Volume
from nfs_failover.errors import PreconditionError, ProviderError, ProviderTimeout
from nfs_failover.lab import Lab
from nfs_failover.replication import MirrorState, RelationshipStatus
from nfs_failover.replication.anf import AnfProvider
from nfs_failover.replication.nfs_divergence import CLOCK_MARGIN
from tests.helpers import REPO
from tests.replication.anf_contract_server import (
    TOKEN,
    ContractServer,
    Reply,
    Snapshot,
    StaticTokenCredential,
    contract_server,
    volume_id,
)
from tests.replication.anf_helpers import (
    DESTINATION_VOLUME,
    SOURCE_VOLUME,
    make_volume,
    sdk_client,
)
from tests.replication.helpers import folders

T = 5.0  # the deadline of operations that are expected to finish

run = asyncio.run


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    authority = trustme.CA()
    path = tmp_path_factory.mktemp("anf-ca") / "ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
def server(ca: tuple[trustme.CA, Path]) -> Iterator[ContractServer]:
    authority, path = ca
    with contract_server(
        authority, path, volume_id(SOURCE_VOLUME), volume_id(DESTINATION_VOLUME)
    ) as started:
        yield started


@pytest.fixture
def provider(server: ContractServer) -> Iterator[AnfProvider]:
    client = sdk_client(server.url, server.ca_path)
    made = AnfProvider(make_volume(server.url), client=client, polling_interval=0)
    yield made
    run(made.close())
    client.close()


def destination_path_called(call_path: str, action: str) -> bool:
    return call_path == f"{volume_id(DESTINATION_VOLUME)}/{action}"


# -- status ------------------------------------------------------------------------------


def test_status_reports_a_mirrored_idle_relationship_with_replica_names_and_bytes(
    provider: AnfProvider,
) -> None:
    status = run(provider.status(timeout=T))
    assert status.mirror_state is MirrorState.MIRRORED
    assert status.relationship_status is RelationshipStatus.IDLE
    assert status.healthy is True
    assert (status.source, status.destination) == ("site1", "dest1")
    assert status.last_transfer_bytes == 1048576
    assert status.error is None
    assert status.raw["mirrorState"] == "Mirrored"


def test_status_is_read_from_the_destination_volume(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(provider.status(timeout=T))
    reads = server.requests_to("replicationStatus")
    assert [call.path for call in reads] == [f"{volume_id(DESTINATION_VOLUME)}/replicationStatus"]
    assert all(call.query["api-version"] == "2026-08-01" for call in server.calls)


@pytest.mark.parametrize(
    ("anf_word", "expected"),
    [
        ("Mirrored", MirrorState.MIRRORED),
        ("Broken", MirrorState.BROKEN),
        ("Uninitialized", MirrorState.UNINITIALIZED),
        ("Failed", MirrorState.UNKNOWN),
    ],
)
def test_status_normalises_anf_mirror_states_and_unknown_words_become_unknown(
    server: ContractServer, provider: AnfProvider, anf_word: str, expected: MirrorState
) -> None:
    server.model.mirror_state = anf_word
    status = run(provider.status(timeout=T))
    assert status.mirror_state is expected
    assert status.raw["mirrorState"] == anf_word


def test_status_reports_a_transfer_and_an_unknown_relationship_status_without_crashing(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.transferring = True
    assert run(provider.status(timeout=T)).relationship_status is RelationshipStatus.TRANSFERRING
    server.model.relationship_status = "Failed"
    assert run(provider.status(timeout=T)).relationship_status is RelationshipStatus.UNKNOWN


def test_status_passes_on_anf_error_message_and_health(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.healthy = False
    server.model.error_message = "Replication is unhealthy: peer unreachable"
    status = run(provider.status(timeout=T))
    assert status.healthy is False
    assert status.error == "Replication is unhealthy: peer unreachable"


def test_total_progress_that_is_not_a_number_gives_no_byte_count(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.total_progress = "n/a"
    assert run(provider.status(timeout=T)).last_transfer_bytes is None
    server.model.total_progress = None
    assert run(provider.status(timeout=T)).last_transfer_bytes is None


def test_lag_comes_from_the_newest_snapmirror_snapshot_on_the_destination(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.add_snapmirror_snapshot(age=timedelta(minutes=3))
    # A newer user snapshot says nothing about what replication delivered.
    user_snapshot = Snapshot("daily-2026", datetime.now(UTC) - timedelta(seconds=30))
    server.model.snapshots[volume_id(DESTINATION_VOLUME)].append(user_snapshot)
    status = run(provider.status(timeout=T))
    assert status.lag_source == "snapshot"
    assert status.lag is not None
    assert timedelta(minutes=3) <= status.lag < timedelta(minutes=3, seconds=30)
    assert server.requests_to("snapshots")[0].volume == DESTINATION_VOLUME


def test_lag_is_unknown_without_snapmirror_snapshots(
    server: ContractServer, provider: AnfProvider
) -> None:
    for snapshots in server.model.snapshots.values():
        snapshots.clear()
    status = run(provider.status(timeout=T))
    assert status.lag is None
    assert status.lag_source is None


def test_status_when_neither_volume_is_replicated_raises_provider_error(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.exists = False
    with pytest.raises(ProviderError) as caught:
        run(provider.status(timeout=T))
    assert caught.value.code == "not_replicated"
    assert "site1" in str(caught.value)
    assert "dest1" in str(caught.value)


# -- break -------------------------------------------------------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_break_posts_to_the_destination_volume_with_the_force_flag(
    server: ContractServer, provider: AnfProvider, force: bool
) -> None:
    result = run(provider.break_(force=force, timeout=T))
    posts = server.posts()
    assert len(posts) == 1
    assert destination_path_called(posts[0].path, "breakReplication")
    assert posts[0].body == {"forceBreakReplication": force}
    assert result.changed is True
    assert result.operation == "break"
    assert result.status.mirror_state is MirrorState.BROKEN
    assert (result.status.source, result.status.destination) == ("site1", "dest1")


def test_break_while_uninitialized_raises_precondition_error_and_posts_nothing(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.mirror_state = "Uninitialized"
    with pytest.raises(PreconditionError, match="not initialized"):
        run(provider.break_(force=True, timeout=T))
    assert server.posts() == []


def test_break_in_an_unknown_mirror_state_is_refused_with_anf_word(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.mirror_state = "Failed"
    with pytest.raises(PreconditionError, match='"Failed"'):
        run(provider.break_(timeout=T))
    assert server.posts() == []


def test_break_while_transferring_waits_for_the_transfer_to_end_then_breaks(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.transferring = True
    server.model.transfer_ends_after_status_reads = 3
    result = run(provider.break_(timeout=T))
    assert result.status.mirror_state is MirrorState.BROKEN
    assert len(server.requests_to("replicationStatus")) >= 4
    assert server.posts("breakReplication")[0].body == {"forceBreakReplication": False}


def test_break_while_a_transfer_outlasts_the_deadline_raises_provider_timeout_without_posting(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.transferring = True
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="still running"):
        run(provider.break_(timeout=0.5))
    assert time.monotonic() - started < 1.5
    assert server.posts() == []
    assert server.model.mirror_state == "Mirrored"


def test_forced_break_while_transferring_breaks_at_once(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.transferring = True
    result = run(provider.break_(force=True, timeout=T))
    assert result.status.mirror_state is MirrorState.BROKEN
    assert server.posts("breakReplication")[0].body == {"forceBreakReplication": True}


def test_break_of_a_broken_relationship_changes_nothing_and_posts_nothing(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(provider.break_(timeout=T))
    again = run(provider.break_(timeout=T))
    assert again.changed is False
    assert again.status.mirror_state is MirrorState.BROKEN
    assert len(server.posts()) == 1


# -- resync and reverse resync ---------------------------------------------------------


def test_resync_posts_to_the_destination_and_mirrors_again_in_the_same_direction(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(provider.break_(timeout=T))
    result = run(provider.resync(timeout=T))
    resyncs = server.posts("resyncReplication")
    assert [call.volume for call in resyncs] == [DESTINATION_VOLUME]
    assert result.changed is True
    assert result.overwritten == ()
    assert result.status.mirror_state is MirrorState.MIRRORED
    assert (result.status.source, result.status.destination) == ("site1", "dest1")


def test_resync_of_a_mirrored_relationship_changes_nothing_and_posts_nothing(
    server: ContractServer, provider: AnfProvider
) -> None:
    result = run(provider.resync(timeout=T))
    assert result.changed is False
    assert result.status.mirror_state is MirrorState.MIRRORED
    assert server.posts() == []


def test_resync_of_an_uninitialized_relationship_raises_precondition_error(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.mirror_state = "Uninitialized"
    with pytest.raises(PreconditionError, match="only a broken one"):
        run(provider.resync(timeout=T))
    assert server.posts() == []


def test_reverse_resync_posts_to_the_source_and_status_then_reports_swapped_names(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(provider.break_(timeout=T))
    result = run(provider.reverse_resync(timeout=T))
    assert [call.volume for call in server.posts("resyncReplication")] == [SOURCE_VOLUME]
    assert result.changed is True
    assert result.status.mirror_state is MirrorState.MIRRORED
    assert (result.status.source, result.status.destination) == ("dest1", "site1")
    status = run(provider.status(timeout=T))
    assert (status.source, status.destination) == ("dest1", "site1")
    # Status is now read on the new destination: the old source volume.
    assert server.requests_to("replicationStatus")[-1].volume == SOURCE_VOLUME


def test_repeated_reverse_resync_changes_nothing_and_posts_nothing(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(provider.break_(timeout=T))
    run(provider.reverse_resync(timeout=T))
    again = run(provider.reverse_resync(timeout=T))
    assert again.changed is False
    assert (again.status.source, again.status.destination) == ("dest1", "site1")
    assert len(server.posts("resyncReplication")) == 1


def test_reverse_resync_of_a_mirrored_relationship_without_a_break_is_refused(
    server: ContractServer, provider: AnfProvider
) -> None:
    with pytest.raises(PreconditionError, match="only a broken one"):
        run(provider.reverse_resync(timeout=T))
    assert server.posts() == []


def test_after_a_reverse_resync_break_and_reverse_resync_restore_the_original_direction(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(provider.break_(timeout=T))
    run(provider.reverse_resync(timeout=T))
    run(provider.break_(timeout=T))
    result = run(provider.reverse_resync(timeout=T))
    breaks = [call.volume for call in server.posts("breakReplication")]
    assert breaks == [DESTINATION_VOLUME, SOURCE_VOLUME]
    resyncs = [call.volume for call in server.posts("resyncReplication")]
    assert resyncs == [SOURCE_VOLUME, DESTINATION_VOLUME]
    assert (result.status.source, result.status.destination) == ("site1", "dest1")


# -- errors ------------------------------------------------------------------------------


def test_failed_operation_raises_provider_error_with_the_service_code_and_message(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.fail_next_operation(
        "breakReplication", "ReplicationBreakFailed", "The peer cluster did not answer."
    )
    with pytest.raises(ProviderError) as caught:
        run(provider.break_(timeout=T))
    assert caught.value.code == "ReplicationBreakFailed"
    assert caught.value.provider_message == "The peer cluster did not answer."
    assert "ANF reports the operation Failed: ReplicationBreakFailed" in str(caught.value)
    assert "The peer cluster did not answer." in str(caught.value)
    assert server.model.mirror_state == "Mirrored"


def test_conflict_409_raises_provider_error_with_anf_code_and_message(
    server: ContractServer, provider: AnfProvider
) -> None:
    # A transfer starts between the status read (idle) and the break: ANF refuses it.
    server.start_transfer_at_next("breakReplication")
    with pytest.raises(ProviderError) as caught:
        run(provider.break_(timeout=T))
    assert not isinstance(caught.value, PreconditionError | ProviderTimeout)
    assert caught.value.code == "Conflict"
    assert "transfer is in progress" in caught.value.provider_message
    assert "HTTP 409" in str(caught.value)
    assert server.model.mirror_state == "Mirrored"


def test_throttled_requests_are_retried_after_retry_after_within_the_deadline(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.throttle_next("GET", "replicationStatus", retry_after="0")
    server.throttle_next("POST", "breakReplication", retry_after="0.1")
    result = run(provider.break_(timeout=T))
    assert result.status.mirror_state is MirrorState.BROKEN
    assert len(server.posts("breakReplication")) == 2
    assert server.model.mirror_state == "Broken"


def test_throttling_past_the_deadline_raises_provider_timeout_and_never_posts_later(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.throttle_next("POST", "breakReplication", retry_after="30")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="throttling") as caught:
        run(provider.break_(timeout=1.0))
    assert time.monotonic() - started < 2.0
    assert caught.value.code == "TooManyRequests"
    time.sleep(0.3)
    assert len(server.posts("breakReplication")) == 1


def test_a_server_that_stops_answering_gives_provider_timeout_within_the_deadline(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.stop_answering()
    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        run(provider.status(timeout=1.0))
    assert time.monotonic() - started < 2.0


def test_a_server_that_stops_answering_during_an_operation_gives_provider_timeout_in_time(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.stop_answering("operationsStatus")
    started = time.monotonic()
    with pytest.raises(ProviderTimeout, match="may still complete"):
        run(provider.break_(timeout=1.5))
    assert time.monotonic() - started < 2.5
    assert len(server.posts("breakReplication")) == 1


def test_an_operation_abandoned_at_the_deadline_does_not_hold_up_process_exit(
    server: ContractServer,
) -> None:
    # The SDK's poller thread is asleep for a 60 s Retry-After when the deadline passes.
    server.operation_retry_after = "60"
    script = textwrap.dedent(
        f"""
        import asyncio
        from nfs_failover.errors import ProviderTimeout
        from nfs_failover.replication.anf import AnfProvider
        from tests.replication.anf_helpers import make_volume, sdk_client

        client = sdk_client({server.url!r}, {str(server.ca_path)!r})
        provider = AnfProvider(make_volume({server.url!r}), client=client, polling_interval=0)
        try:
            asyncio.run(provider.break_(timeout=0.5))
        except ProviderTimeout as exc:
            print("timeout:", exc)
        """
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,  # where the child imports tests.replication from
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "may still complete" in done.stdout
    assert elapsed < 10  # interpreter start and SDK import included; the sleep is 60 s
    assert len(server.posts("breakReplication")) == 1


def test_an_unreachable_endpoint_raises_provider_error_not_timeout(
    server: ContractServer,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{closed_port}"
    client = sdk_client(url, server.ca_path)
    unreachable = AnfProvider(make_volume(url), client=client, polling_interval=0)
    with pytest.raises(ProviderError) as caught:
        run(unreachable.status(timeout=T))
    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.code == "connection"
    client.close()


def test_the_bearer_token_never_appears_in_errors_or_logs(
    server: ContractServer, provider: AnfProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.fail_next_operation("breakReplication", "ReplicationBreakFailed", "peer down")
    with pytest.raises(ProviderError) as caught:
        run(provider.break_(timeout=T))
    run(provider.status(timeout=T))
    assert server.calls[0].authorization == f"Bearer {TOKEN}"
    assert TOKEN not in str(caught.value)
    assert TOKEN not in caught.value.provider_message
    assert caplog.text  # azure-core did log requests
    assert TOKEN not in caplog.text


# -- progress, unsupported operations and the thin operations --------------------------


def test_progress_callback_reports_the_operation_and_the_statuses_it_passes_through(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.status_poll_delay = 0.15
    seen: list[tuple[str, float | None]] = []
    run(provider.break_(timeout=T, progress=lambda text, done: seen.append((text, done))))
    messages = [text for text, _ in seen]
    assert "breaking replication on dest1: BreakReplication" in messages
    assert messages[-1] == "breaking replication on dest1: Succeeded"


def test_progress_callback_says_when_a_break_waits_for_a_transfer(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.model.transferring = True
    server.model.transfer_ends_after_status_reads = 1
    seen: list[str] = []
    run(provider.break_(timeout=T, progress=lambda text, _done: seen.append(text)))
    assert seen[0] == "waiting for the transfer to dest1 to end"


def test_transfer_now_says_anf_transfers_only_on_its_schedule(
    server: ContractServer, provider: AnfProvider
) -> None:
    with pytest.raises(ProviderError, match="only on its schedule") as caught:
        run(provider.transfer_now(timeout=T))
    assert caught.value.code == "unsupported"
    assert server.calls == []


def test_serve_returns_at_once_as_anf_keeps_its_own_schedule(
    server: ContractServer, provider: AnfProvider
) -> None:
    run(asyncio.wait_for(provider.serve(asyncio.Event()), 1.0))
    assert server.calls == []


def test_divergence_needs_a_replication_snapshot_as_the_common_point(
    server: ContractServer, provider: AnfProvider
) -> None:
    for volume in server.model.snapshots:
        server.model.snapshots[volume].clear()
    with pytest.raises(PreconditionError, match="no replication snapshot on dest1"):
        run(provider.divergence(timeout=T))


@pytest.mark.lab
def test_divergence_walks_both_replicas_over_nfs_from_the_last_snapshot(
    server: ContractServer, replication_lab: Lab, volume: Volume
) -> None:
    source, destination = folders(volume)
    (source / "old").write_text("replicated long ago")
    (destination / "old").write_text("replicated long ago")
    time.sleep(CLOCK_MARGIN.total_seconds() + 0.2)
    server.model.add_snapmirror_snapshot()
    time.sleep(0.1)
    (source / "after-the-snapshot").write_text("only on the source")
    (destination / "old").write_text("changed on the destination after the break")
    exports = (str(volume.replicas[0].export), str(volume.replicas[1].export))
    client = sdk_client(server.url, server.ca_path)
    provider = AnfProvider(make_volume(server.url, exports), client=client, polling_interval=0)
    try:
        found = run(provider.divergence(timeout=T))
    finally:
        run(provider.close())
        client.close()
    assert found.source_only == ("after-the-snapshot",)
    assert found.destination_only == ("old",)


def test_list_replications_returns_anf_entries_for_the_source_volume(
    server: ContractServer, provider: AnfProvider
) -> None:
    entries = run(provider.list_replications(timeout=T))
    assert server.posts("listReplications")[0].volume == SOURCE_VOLUME
    assert len(entries) == 1
    entry = entries[0]
    assert entry.endpoint_type == "src"
    assert entry.remote_volume == volume_id(DESTINATION_VOLUME)
    assert entry.schedule == "_10minutely"
    assert entry.mirror_state is MirrorState.MIRRORED
    on_destination = run(
        provider.list_replications(timeout=T, on=AnfVolumeId.parse(volume_id(DESTINATION_VOLUME)))
    )
    assert on_destination[0].endpoint_type == "dst"


# -- construction ----------------------------------------------------------------------


def test_without_a_client_the_provider_uses_the_management_endpoint_and_its_scope(
    server: ContractServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_path))
    credential = StaticTokenCredential()
    built = AnfProvider(make_volume(server.url), credential=credential, polling_interval=0)
    try:
        assert run(built.status(timeout=T)).mirror_state is MirrorState.MIRRORED
    finally:
        run(built.close())
    assert set(credential.scopes) == {(f"{server.url}/.default",)}


def test_a_client_for_another_subscription_is_refused(server: ContractServer) -> None:
    client = NetAppManagementClient(
        StaticTokenCredential(), "00000000-0000-0000-0000-000000000000", base_url=server.url
    )
    with pytest.raises(ProviderError, match="subscription") as caught:
        AnfProvider(make_volume(server.url), client=client)
    assert caught.value.code == "config"
    client.close()


# -- transient failures, unreadable answers, credentials ---------------------------------


def test_a_500_on_a_status_read_is_asked_again_within_the_deadline(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.answer_next(
        "GET",
        "replicationStatus",
        Reply(500, {"error": {"code": "InternalServerError", "message": "Something went wrong."}}),
    )
    status = run(provider.status(timeout=T))
    assert status.mirror_state is MirrorState.MIRRORED
    assert len([c for c in server.requests_to("replicationStatus") if c.method == "GET"]) == 2


def test_a_break_anf_completed_is_done_even_when_the_lag_cannot_be_read(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.forbid("GET", "snapshots")  # a custom role without snapshots/read
    result = run(provider.break_(timeout=T))
    assert result.changed and result.status.mirror_state is MirrorState.BROKEN
    assert result.status.lag is None
    assert "HTTP 403" in result.status.raw["lag_unknown"]
    status = run(provider.status(timeout=T))  # status answers too, lag unknown with why
    assert status.mirror_state is MirrorState.BROKEN and "lag_unknown" in status.raw


def test_an_answer_that_is_not_json_is_named_as_such(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.answer_next("GET", "replicationStatus", Reply(200, raw=b"{not json"))
    with pytest.raises(ProviderError) as caught:
        run(provider.status(timeout=T))
    assert "ANF answered HTTP 200 with a body that is not valid JSON" in str(caught.value)
    assert caught.value.code == "malformed"


class FailingCredential:
    """A token request that fails as azure-identity's do: the cause on a later line."""

    def get_token(self, *scopes: str, **kwargs: object) -> object:
        raise ClientAuthenticationError(
            "DefaultAzureCredential failed to retrieve a token from the included credentials."
            "\nAttempted credentials:\n\tEnvironmentCredential: ClientSecretCredential"
            " authentication failed: AADSTS7000215: Invalid client secret provided."
        )


def test_a_token_failure_names_its_cause(server: ContractServer) -> None:
    failing = AnfProvider(
        make_volume(server.url), credential=FailingCredential(), polling_interval=0
    )  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as caught:
        run(failing.status(timeout=T))
    assert "AADSTS7000215: Invalid client secret provided." in str(caught.value)
    assert caught.value.code == "credentials"
    run(failing.close())


@pytest.mark.parametrize(
    ("env", "said"),
    [
        (
            {
                "AZURE_TENANT_ID": "not a tenant!",
                "AZURE_CLIENT_ID": "x",
                "AZURE_CLIENT_SECRET": "y",
            },
            "Invalid tenant ID provided",
        )
    ],
)
def test_a_credential_that_cannot_be_set_up_is_one_provider_error(
    server: ContractServer, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], said: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ProviderError, match=f"cannot set up the Azure credential: {said}"):
        AnfProvider(make_volume(server.url))


def test_a_token_endpoint_that_does_not_answer_is_named(server: ContractServer) -> None:
    released = threading.Event()

    class Hanging:
        def get_token(self, *scopes: str, **kwargs: object) -> object:
            released.wait(30)
            raise ClientAuthenticationError("released")

    hanging = AnfProvider(make_volume(server.url), credential=Hanging(), polling_interval=0)  # type: ignore[arg-type]
    started = time.monotonic()
    try:
        with pytest.raises(ProviderTimeout) as caught:
            run(hanging.status(timeout=1.0))
    finally:
        released.set()
    assert time.monotonic() - started < 2.0
    assert "no answer from the identity endpoint within 1s" in str(caught.value)
    assert server.requests_to("replicationStatus") == []  # nothing reached ARM
    run(hanging.close())


def test_a_break_whose_state_cannot_be_read_back_says_anf_reported_it_done(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.forbid_after("breakReplication", "GET", "replicationStatus")
    with pytest.raises(ProviderError) as caught:
        run(provider.break_(timeout=T))
    assert "break: ANF reported it done, but its state could not be read back" in str(caught.value)
    assert server.model.mirror_state == "Broken"  # it was done


# -- the storage fence -------------------------------------------------------------------


def rules_of(server: ContractServer, name: str) -> list[dict[str, object]]:
    return server.model.export_rules[volume_id(name)]


def grants_writes(rules: list[dict[str, object]]) -> bool:
    return any(rule.get("unixReadWrite") for rule in rules)


@pytest.mark.parametrize(
    ("replica", "name"), [("site1", SOURCE_VOLUME), ("dest1", DESTINATION_VOLUME)]
)
def test_fence_makes_every_export_rule_of_the_replicas_volume_read_only_and_saves_them(
    server: ContractServer, provider: AnfProvider, replica: str, name: str
) -> None:
    before = [dict(rule) for rule in rules_of(server, name)]
    result = run(provider.fence(replica, timeout=T))
    assert (result.replica, result.changed) == (replica, True)
    assert result.saved == {"rules": before}
    after = rules_of(server, name)
    assert [rule["unixReadOnly"] for rule in after] == [True, True]
    assert not grants_writes(after)
    # Everything but the access is kept: the same clients may still read.
    assert [(r["ruleIndex"], r["allowedClients"]) for r in after] == [
        (r["ruleIndex"], r["allowedClients"]) for r in before
    ]
    (patch,) = server.patches()
    assert patch.volume == name
    assert set(patch.body["properties"]) == {"exportPolicy"}
    other = DESTINATION_VOLUME if name == SOURCE_VOLUME else SOURCE_VOLUME
    assert grants_writes(rules_of(server, other))  # the other replica is untouched


def test_unfence_restores_exactly_the_rules_the_fence_saved(
    server: ContractServer, provider: AnfProvider
) -> None:
    before = [dict(rule) for rule in rules_of(server, SOURCE_VOLUME)]
    fenced = run(provider.fence("site1", timeout=T))
    result = run(provider.unfence("site1", fenced.saved, timeout=T))
    assert result.changed is True and result.operation == "unfence"
    assert rules_of(server, SOURCE_VOLUME) == before
    assert len(server.patches()) == 2


def test_fencing_a_fenced_replica_and_unfencing_an_unfenced_one_send_nothing(
    server: ContractServer, provider: AnfProvider
) -> None:
    first = run(provider.fence("site1", timeout=T))
    again = run(provider.fence("site1", timeout=T))
    assert again.changed is False
    assert not grants_writes(rules_of(server, SOURCE_VOLUME))
    restored = run(provider.unfence("site1", first.saved, timeout=T))
    repeated = run(provider.unfence("site1", first.saved, timeout=T))
    assert (restored.changed, repeated.changed) == (True, False)
    assert len(server.patches()) == 2


def test_fence_tells_before_change_what_it_replaces_before_sending_anything(
    server: ContractServer, provider: AnfProvider
) -> None:
    told: list[tuple[object, int]] = []

    async def record(saved: dict[str, object]) -> None:
        told.append((saved, len(server.patches())))

    result = run(provider.fence("site1", timeout=T, before_change=record))
    assert told == [(result.saved, 0)]


def test_a_before_change_that_fails_leaves_the_rules_unchanged(
    server: ContractServer, provider: AnfProvider
) -> None:
    async def fail(saved: dict[str, object]) -> None:
        raise ProviderError("the journal is not writable")

    with pytest.raises(ProviderError, match="journal"):
        run(provider.fence("site1", timeout=T, before_change=fail))
    assert server.patches() == []
    assert grants_writes(rules_of(server, SOURCE_VOLUME))


def test_an_update_while_another_operation_runs_is_refused_with_anfs_409(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.hold_operations()
    with pytest.raises(ProviderTimeout, match="may still complete"):
        run(provider.fence("site1", timeout=0.5))
    with pytest.raises(ProviderError) as caught:
        run(provider.fence("site1", timeout=T))
    assert not isinstance(caught.value, ProviderTimeout)
    assert caught.value.code == "OperationInProgress"
    assert "HTTP 409" in str(caught.value) and "in progress" in str(caught.value)
    assert len(server.patches()) == 2
    assert grants_writes(rules_of(server, SOURCE_VOLUME))


def test_a_server_error_on_the_update_is_a_provider_error_and_it_is_not_sent_again(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.answer_next(
        "PATCH", "", Reply(500, {"error": {"code": "InternalServerError", "message": "Oops."}})
    )
    with pytest.raises(ProviderError, match="HTTP 500: InternalServerError: Oops") as caught:
        run(provider.fence("site1", timeout=T))
    assert caught.value.code == "InternalServerError"
    assert len(server.patches()) == 1
    assert grants_writes(rules_of(server, SOURCE_VOLUME))


def test_an_update_that_ends_failed_is_a_provider_error_with_anfs_words(
    server: ContractServer, provider: AnfProvider
) -> None:
    server.fail_next_operation("update", "VolumeUpdateFailed", "The export policy is locked.")
    with pytest.raises(ProviderError, match="Failed: VolumeUpdateFailed") as caught:
        run(provider.fence("site1", timeout=T))
    assert caught.value.provider_message == "The export policy is locked."
    assert grants_writes(rules_of(server, SOURCE_VOLUME))


def test_a_replica_the_volume_does_not_have_cannot_be_fenced(provider: AnfProvider) -> None:
    with pytest.raises(ProviderError, match="no replica site9") as caught:
        run(provider.fence("site9", timeout=T))
    assert caught.value.code == "config"


def test_unfence_refuses_a_saved_state_without_rules(
    server: ContractServer, provider: AnfProvider
) -> None:
    with pytest.raises(ProviderError, match="no export policy rules") as caught:
        run(provider.unfence("site1", {"access": "rw"}, timeout=T))
    assert caught.value.code == "bad_saved"
    assert server.patches() == []
