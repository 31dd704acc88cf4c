"""The common status vocabulary and the local engine's reading of rsync's output."""

from __future__ import annotations

import pytest

from nfs_failover.replication import (
    MirrorState,
    RelationshipStatus,
    normalise_mirror_state,
    normalise_relationship_status,
)
from nfs_failover.replication.rsync import parse


@pytest.mark.parametrize(
    ("word", "state"),
    [
        ("Mirrored", MirrorState.MIRRORED),
        ("snapmirrored", MirrorState.MIRRORED),
        ("Broken", MirrorState.BROKEN),
        ("broken_off", MirrorState.BROKEN),
        ("Uninitialized", MirrorState.UNINITIALIZED),
        ("Failed", MirrorState.UNKNOWN),
        ("", MirrorState.UNKNOWN),
        (None, MirrorState.UNKNOWN),
    ],
)
def test_provider_words_for_mirror_state_map_to_one_vocabulary(
    word: str | None, state: MirrorState
) -> None:
    assert normalise_mirror_state(word) is state


def test_unknown_relationship_status_is_unknown_not_an_error() -> None:
    assert normalise_relationship_status("Transferring") is RelationshipStatus.TRANSFERRING
    assert normalise_relationship_status("Idle") is RelationshipStatus.IDLE
    assert normalise_relationship_status("Paused?") is RelationshipStatus.UNKNOWN


def test_rsync_output_gives_written_files_deleted_paths_and_bytes() -> None:
    output = "\n".join([
        "*deleting   old.txt",
        "*deleting   gone-dir/",
        ">f+++++++++ new file.txt",
        ">f.st...... changed.txt",
        "cd+++++++++ sub/",
        "cL+++++++++ link",
        ".f..t...... touched",
        r">f+++++++++ odd\#012name",
        "",
        "Total transferred file size: 1,234,567 bytes",
    ])  # fmt: skip
    copied = parse(output)
    assert copied.deleted == ("old.txt", "gone-dir/")
    assert copied.changed == ("new file.txt", "changed.txt", "link", "touched", "odd\nname")
    assert copied.sent == 1_234_567
