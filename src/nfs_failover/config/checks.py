"""Checks across fields: rules that compare values the field types checked one by one.

Unique names and exports, ``failover_after >= probe_interval``, paths that must not
overlap, a map entry the agent could render, ... Pydantic has no declarative form for
rules between fields, so each is a function here that returns ``(location, message)``
pairs below the model it is given; the models call them from their ``after`` validators
and raise them with ``problems.report``. An ``after`` validator runs only once the
model's own fields are valid, so these problems come with the field problems of other
parts of the file, never with those of the same model.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from nfs_failover.config.problems import Loc, describe, format_loc, report
from nfs_failover.config.values import Export, Mode
from nfs_failover.durations import format_duration
from nfs_failover.steering.autofs_model import MapValueError
from nfs_failover.steering.autofs_render import foreign_file, map_host, preference_entry

if TYPE_CHECKING:
    from nfs_failover.config.models import (
        AnfReplication,
        AutofsSettings,
        Config,
        EtcdTls,
        Group,
        LocalReplication,
        Policy,
        Replica,
        Volume,
    )

__all__ = [
    "anf_volume_problems",
    "autofs_problems",
    "check_members",
    "check_replicas",
    "config_problems",
    "etcd_tls_problems",
    "local_path_problems",
    "local_schedule_problems",
    "policy_problems",
    "volume_problems",
]

# (subject, reference): the subject duration must be at least the reference duration.
_POLICY_ORDER = (
    ("failover_after", "probe_interval"),
    ("failover_after", "probe_timeout"),
    ("recover_after", "probe_interval"),
)


# -- policy ------------------------------------------------------------------------------


def policy_problems(policy: Policy) -> list[tuple[Loc, str]]:
    """Durations of the policy out of order, such as a grace shorter than the probe interval."""
    return [((subject,), text) for subject, _, text in _policy_conflicts(policy)]


def _policy_conflicts(policy: Policy) -> list[tuple[str, str, str]]:
    """(subject, reference, message) for every ordering rule the policy breaks."""
    conflicts = []
    for subject, reference in _POLICY_ORDER:
        low: timedelta = getattr(policy, reference)
        value: timedelta = getattr(policy, subject)
        if value < low:
            text = f"must be at least {reference} ({format_duration(low)})"
            conflicts.append((subject, reference, f"{text}, got {format_duration(value)}"))
    return conflicts


# -- replication -------------------------------------------------------------------------


def local_path_problems(replication: LocalReplication) -> list[tuple[Loc, str]]:
    """The embedded engine's two directories must not be one inside the other."""
    source = PurePosixPath(replication.source_path)
    destination = PurePosixPath(replication.destination_path)
    if source == destination or source in destination.parents or destination in source.parents:
        return [(("destination_path",), f'must not overlap source_path ("{source}")')]
    return []


def local_schedule_problems(replication: LocalReplication) -> list[tuple[Loc, str]]:
    """A full walk no more often than the schedule's transfers, or every one would walk."""
    schedule, walk = replication.schedule, replication.full_walk_interval
    if isinstance(schedule, timedelta) and walk is not None and walk < schedule:
        text = (
            f"must not be shorter than schedule ({format_duration(schedule)}), or every"
            f" transfer would walk the whole tree, got {format_duration(walk)}"
        )
        return [(("full_walk_interval",), text)]
    return []


def anf_volume_problems(replication: AnfReplication) -> list[tuple[Loc, str]]:
    if replication.source.same_volume(replication.destination):
        return [(("destination",), "must not be the same volume as source")]
    return []


# -- volumes -----------------------------------------------------------------------------


def check_replicas(replicas: tuple[Replica, ...]) -> tuple[Replica, ...]:
    """A volume's replicas: exactly two, with distinct names and exports."""
    if len(replicas) != 2:
        raise ValueError(
            f"expected exactly 2 replicas (source first, destination second), got {len(replicas)}"
        )
    problems: list[tuple[Loc, str]] = []
    for index, replica in enumerate(replicas):
        for earlier in range(index):
            if replicas[earlier].name == replica.name:
                text = f"duplicate replica name {describe(replica.name)}"
                problems.append(((index, "name"), text))
            if replicas[earlier].export == replica.export:
                problems.append(((index, "export"), f"same export as replicas[{earlier}]"))
    report(problems)
    return replicas


def volume_problems(volume: Volume) -> list[tuple[Loc, str]]:
    """Mount options that contradict the mode, or that the agent could not render."""
    return _mode_conflicts(volume.mode, volume.mount.options) + _map_problems(volume)


def _map_problems(volume: Volume) -> list[tuple[Loc, str]]:
    """What the agent would refuse when it renders the volume's map entry, found at load:
    the entry with every replica (the longest one the agent ever writes)."""
    options = ["fstype=nfs", *(o for o in volume.mount.options.split(",") if o)]
    replicas = [(map_host(r.export.host), r.export.path) for r in volume.replicas]
    try:
        preference_entry(volume.map_key, options, replicas)
    except MapValueError as exc:
        return [(("mount", "options"), str(exc))]
    return []


def _mode_conflicts(mode: Mode, options: str) -> list[tuple[Loc, str]]:
    clashing = "rw" if mode is Mode.READ_ONLY else "ro"
    if clashing in options.split(","):
        return [(("mount", "options"), f'"{clashing}" contradicts mode {mode.value}')]
    return []


# -- autofs ------------------------------------------------------------------------------


def autofs_problems(settings: AutofsSettings) -> list[tuple[Loc, str]]:
    """Files autofs would ignore, that clash, or that belong to someone else."""
    problems: list[tuple[Loc, str]] = []
    if settings.mount_root == Path("/"):
        problems.append((("mount_root",), 'must not be "/"'))
    if settings.master_dropin.suffix != ".autofs":
        problems.append((("master_dropin",), 'must end in ".autofs" or autofs ignores it'))
    if settings.map_file == settings.master_dropin:
        problems.append((("map_file",), "must not be the same file as master_dropin"))
    for field in ("master_dropin", "map_file"):
        if settings.mount_root in getattr(settings, field).parents:
            problems.append(((field,), "must not be inside mount_root"))
        elif foreign_file(settings.under_root(getattr(settings, field))):
            problems.append(
                ((field,), "exists and was not written by nfs-failover; it would be overwritten")
            )
    return problems


# -- across volumes ----------------------------------------------------------------------


def config_problems(config: Config) -> list[tuple[Loc, str]]:
    """Names, map keys and exports used twice, and volume overrides that break the policy."""
    return (
        _name_conflicts(config.volumes)
        + _export_conflicts(config.volumes)
        + [p for i, v in enumerate(config.volumes) for p in _volume_policy_conflicts(config, i, v)]
        + group_problems(config.volumes, config.groups)
    )


def _name_conflicts(volumes: Sequence[Volume]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    keys: dict[str, int] = {}
    for index, volume in enumerate(volumes):
        if volume.name in names:
            text = f"duplicate volume name {describe(volume.name)}"
            problems.append(
                (("volumes", index, "name"), f"{text} (also volumes[{names[volume.name]}])")
            )
        elif volume.map_key in keys:
            where: Loc = ("mount", "map_key") if volume.mount.map_key else ("name",)
            text = f"map key {describe(volume.map_key)} already used"
            problems.append(
                (("volumes", index, *where), f"{text} by volumes[{keys[volume.map_key]}]")
            )
        names.setdefault(volume.name, index)
        keys.setdefault(volume.map_key, index)
    return problems


def _export_conflicts(volumes: Sequence[Volume]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    seen: dict[Export, Loc] = {}
    for index, volume in enumerate(volumes):
        for number, replica in enumerate(volume.replicas):
            loc: Loc = ("volumes", index, "replicas", number)
            first = seen.setdefault(replica.export, loc)
            if first[1] != index:
                problems.append(((*loc, "export"), f"export already used by {format_loc(first)}"))
    return problems


def _volume_policy_conflicts(config: Config, index: int, volume: Volume) -> list[tuple[Loc, str]]:
    """Problems the volume's override creates (the global policy is checked on its own)."""
    policy = config.effective_policy(volume)
    overridden = volume.policy.model_fields_set
    problems: list[tuple[Loc, str]] = []
    for subject, reference, text in _policy_conflicts(policy):
        if subject in overridden:
            problems.append((("volumes", index, "policy", subject), text))
        elif reference in overridden:
            value = format_duration(getattr(policy, subject))
            low = format_duration(getattr(policy, reference))
            shorter = f"{subject} ({value}) would be shorter than {reference} ({low})"
            problems.append((("volumes", index, "policy", reference), shorter))
    replication = volume.replication
    if (
        replication.provider == "local"
        and isinstance(replication.schedule, timedelta)
        and replication.schedule > policy.max_lag
    ):
        text = (
            f"must not be longer than max_lag ({format_duration(policy.max_lag)}), or every"
            f" failover would be refused for lag, got {format_duration(replication.schedule)}"
        )
        problems.append((("volumes", index, "replication", "schedule"), text))
    return problems


# -- groups ------------------------------------------------------------------------------


def check_members(volumes: tuple[str, ...]) -> tuple[str, ...]:
    """A group's own list: at least two volumes, none listed twice."""
    if len(volumes) < 2:
        alone = "a volume alone fails over on its own"
        raise ValueError(f"expected at least 2 volumes ({alone}), got {len(volumes)}")
    problems: list[tuple[Loc, str]] = []
    for index, name in enumerate(volumes):
        if name in volumes[:index]:
            text = f"volume {describe(name)} listed twice (also volumes[{volumes.index(name)}])"
            problems.append(((index,), text))
    report(problems)
    return volumes


def group_problems(volumes: Sequence[Volume], groups: Sequence[Group]) -> list[tuple[Loc, str]]:
    """Groups whose name is taken, that name unknown volumes, share a volume, or mix modes."""
    known = {volume.name: volume for volume in volumes}
    problems: list[tuple[Loc, str]] = []
    names: dict[str, int] = {}
    member_of: dict[str, int] = {}
    for index, group in enumerate(groups):
        here: Loc = ("groups", index)
        if group.name in names:
            text = f"duplicate group name {describe(group.name)} (also groups[{names[group.name]}])"
            problems.append(((*here, "name"), text))
        elif group.name in known:
            text = f"{describe(group.name)} is a volume's name; a group needs a name of its own"
            problems.append(((*here, "name"), text))
        names.setdefault(group.name, index)
        for number, name in enumerate(group.volumes):
            if name not in known:
                problems.append(((*here, "volumes", number), f"no volume {describe(name)}"))
            elif name in member_of and member_of[name] != index:
                first = groups[member_of[name]].name
                text = (
                    f"volume {describe(name)} is already in group {describe(first)}"
                    f" (groups[{member_of[name]}]); a volume is in at most one group"
                )
                problems.append(((*here, "volumes", number), text))
            member_of.setdefault(name, index)
        modes = {known[name].mode for name in group.volumes if name in known}
        if len(modes) > 1:
            shown = ", ".join(
                f"{name} {known[name].mode.value}" for name in group.volumes if name in known
            )
            text = f"mixes read-write and read-only volumes ({shown}); a group has one mode"
            problems.append(((*here, "volumes"), text))
    return problems


# -- the etcd store ----------------------------------------------------------------------


def etcd_tls_problems(tls: EtcdTls) -> list[tuple[Loc, str]]:
    """A client certificate without its key, or a key without its certificate."""
    if (tls.cert_file is None) == (tls.key_file is None):
        return []
    missing = "key_file" if tls.key_file is None else "cert_file"
    given = "cert_file" if missing == "key_file" else "key_file"
    return [((missing,), f"required when {given} is set (a client certificate and its key)")]
