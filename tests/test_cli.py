"""The command line as a user meets it: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover.api import build_app, serve
from nfs_failover.config import HostPort
from nfs_failover.controller.snapshot import VolumeStatus
from nfs_failover.pacing import Deadline
from tests.fake_controller import RecordingController, as_handle
from tests.helpers import CLI, EXAMPLES, TOKEN, free_port


def nfs_failover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_summarises_a_valid_file_in_one_line() -> None:
    done = nfs_failover("check-config", str(EXAMPLES / "crr.yaml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1
    assert done.stdout.startswith(f"{EXAMPLES / 'crr.yaml'}: 1 volume (1 read-write)")


def test_check_config_prints_one_line_per_problem_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "crr.yaml"
    bad.write_text(
        "volumes:\n  - name: crr\n    mode: rw\n    replicas:\n"
        '      - {name: a, export: "10.2.13.5"}\n'
    )
    done = nfs_failover("check-config", str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f'{bad}: volumes[0].mode: expected one of "read-write", "read-only", got "rw"',
        f'{bad}: volumes[0].replicas[0].export: expected HOST:/PATH, got "10.2.13.5"',
        f"{bad}: volumes[0].replication: missing",
    ]


def test_probe_refuses_a_malformed_export_before_sending_anything() -> None:
    done = nfs_failover("probe", "10.1.13.5")
    assert done.returncode == 2
    assert done.stderr == 'probe: expected HOST:/PATH, got "10.1.13.5"\n'


def test_probe_refuses_a_malformed_timeout() -> None:
    done = nfs_failover("probe", "198.18.1.5:/crr-site1", "--timeout", "soon")
    assert done.returncode == 2
    assert done.stderr == '--timeout: expected a duration such as 10s, 5m or 1h, got "soon"\n'


def test_probe_without_targets_says_what_it_needs() -> None:
    done = nfs_failover("probe")
    assert done.returncode == 2
    assert "HOST:/PATH" in done.stderr
    assert "Traceback" not in done.stderr


def test_lab_commands_name_an_unknown_zone() -> None:
    done = nfs_failover("lab", "restore", "az9", "--state-dir", "/nonexistent/lab")
    assert done.returncode == 1
    assert "unknown zone 'az9'" in done.stderr
    assert "Traceback" not in done.stderr


# -- status and actions, against the API over the controller's socket ----------------------


def config_file(tmp_path: Path) -> Path:
    """A config whose API socket is in ``tmp_path``; the token file beside it."""
    token = tmp_path / "token"
    token.write_text(f"{TOKEN}\n")
    token.chmod(0o600)
    config = tmp_path / "config.yaml"
    config.write_text(
        "volumes:\n"
        "  - name: crr\n"
        "    mode: read-write\n"
        "    replicas:\n"
        "      - { name: az1, export: '198.18.1.5:/crr-site1' }\n"
        "      - { name: az2, export: '198.18.2.5:/crr-dest1' }\n"
        "    replication: { provider: local, source_path: /srv/a, destination_path: /srv/b }\n"
        f"store: 'sqlite://{tmp_path / 'state.db'}'\n"
        f"api: {{ token_file: '{token}', socket: '{tmp_path / 'run' / 'api.sock'}' }}\n"
    )
    return config


def _answers(path: Path) -> bool:
    """Whether the API answers an HTTP request on the Unix socket at ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            probe.connect(str(path))
            probe.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
            return probe.recv(12).startswith(b"HTTP/1.1 ")
    except OSError:
        return False


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, RecordingController]]:
    """The API over the recording fake, on the socket of ``config_file``, in a thread."""
    config = config_file(tmp_path)
    fake = RecordingController()
    app = build_app(as_handle(fake), TOKEN)
    socket_path = tmp_path / "run" / "api.sock"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    listen = HostPort("127.0.0.1", free_port())
    serving = loop.create_task(serve(app, listen, stop, control_socket=socket_path))
    thread = threading.Thread(target=loop.run_until_complete, args=(serving,), daemon=True)
    thread.start()
    # The socket file appears at bind, before the server listens and serves on it: wait
    # for an answer, not for the file.
    deadline = Deadline(10)
    while not _answers(socket_path):
        assert not deadline.passed(), "the API did not start"
        time.sleep(0.05)
    try:
        yield config, fake
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        loop.close()


def test_status_prints_a_row_per_volume_from_the_controllers_snapshot(
    served: tuple[Path, RecordingController],
) -> None:
    config, _ = served

    done = subprocess.run(
        [*CLI, "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "COLUMNS": "300"},  # the table whole, not wrapped
    )

    assert done.returncode == 0, done.stderr
    crr = next(line for line in done.stdout.splitlines() if " crr " in line)
    cells = [cell.strip() for cell in crr.strip("│ ").split("│")]
    assert cells == [
        "crr",
        "read-write",
        "normal",
        "az1",
        "-",
        "-",
        "mirrored",
        "42s",
        "failback: done",
        "no action: source az1 up",
    ]
    assert "failed-over-read-only" in done.stdout
    assert done.stdout.splitlines()[0] == "leader: controller@ctl-a:4242"
    assert done.stdout.count("leader:") == 1


def test_status_json_prints_every_key_the_api_sends(
    served: tuple[Path, RecordingController],
) -> None:
    config, fake = served

    done = nfs_failover("status", "--config", str(config), "--json")

    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed == [json.loads(volume.model_dump_json()) for volume in fake.volumes]
    assert list(printed[0]) == list(VolumeStatus.model_fields)


@pytest.mark.parametrize(
    ("args", "printed"),
    [
        (["pause"], {"action": "pause", "volume": "*", "done": True}),
        (
            ["failover", "crr", "--force"],
            {
                "action": "failover",
                "volume": "crr",
                "workflow": 1,
                "status": "done",
                "group": None,
                "members": [],
                "note": None,
            },
        ),
    ],
)
def test_an_action_prints_the_controllers_answer(
    served: tuple[Path, RecordingController], args: list[str], printed: dict[str, object]
) -> None:
    config, fake = served

    done = nfs_failover(*args, "--config", str(config))

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == printed
    assert fake.requests == [(args[0], args[1] if len(args) > 1 else None, "--force" in args)]


def test_a_reply_that_is_not_the_controllers_contract_is_one_line(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    folder = tmp_path / "run"
    folder.mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(folder / "api.sock"))
    server.listen()

    def answer() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = b'[{"name": "crr", "state": "healthy"}]'
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        done = nfs_failover("status", "--config", str(config))
    finally:
        thread.join(timeout=5)
        server.close()

    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        f"nfs-failover: the controller at {folder / 'api.sock'} answered GET /status with a"
        " reply this version does not know ("
    )
    assert "Traceback" not in done.stderr
