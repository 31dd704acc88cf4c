"""The CLI's requests to the controller: the token goes only to an authenticated listener."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfs_failover import control
from nfs_failover.control import ControlError
from tests.helpers import CLI, PYTHON

NOBODY = 65534
# Nobody, who may still read the checkout wherever it lives (see lab/test_lab_errors.py).
AS_NOBODY = [
    "setpriv",
    f"--reuid={NOBODY}",
    f"--regid={NOBODY}",
    "--clear-groups",
    "--inh-caps=+dac_read_search",
    "--ambient-caps=+dac_read_search",
]
LISTEN_AND_TELL = """
import socket, sys
server = socket.socket(fileno=int(sys.argv[1]))
server.listen()
print("listening", flush=True)
conn, _ = server.accept()
conn.settimeout(3)
got = b""
try:
    while chunk := conn.recv(65536):
        got += chunk
except OSError:
    pass
print(repr(got), flush=True)
"""


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: it runs a listener as another user")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o755)
    return path


def test_the_token_is_not_sent_to_a_socket_another_user_listens_on(folder: Path) -> None:
    needs_root()
    path = folder / "api.sock"
    bound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bound.bind(str(path))
    os.chmod(path, 0o666)
    with subprocess.Popen(
        [*AS_NOBODY, *PYTHON, "-c", LISTEN_AND_TELL, str(bound.fileno())],
        pass_fds=[bound.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    ) as listener:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == "listening"
        with pytest.raises(ControlError, match=f"held by uid {NOBODY}, not by root or you"):
            control.request(path, "POST", "/pause", token="s3cret-token", body={"force": False})
        told = listener.communicate(timeout=10)[0]
    bound.close()
    assert "s3cret" not in told and "Authorization" not in told
    assert told.strip() == "b''"  # it connected, and was sent nothing at all


def test_a_socket_folder_others_can_write_is_refused_before_connecting(folder: Path) -> None:
    folder.chmod(0o777)
    with pytest.raises(ControlError, match="not a folder that only root or you can write"):
        control.request(folder / "api.sock", "POST", "/pause", token="t", body={})


@pytest.fixture
def answering(folder: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A listener of ours that records each request and answers 502 with an HTML body."""
    path = folder / "api.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            seen.append(conn.recv(65536))
            body = b"<html>bad gateway</html>"
            conn.sendall(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, seen
    thread.join(timeout=5)
    server.close()


def test_a_reply_that_is_not_json_is_one_clear_line(answering: tuple[Path, list[bytes]]) -> None:
    path, _ = answering
    with pytest.raises(ControlError) as caught:
        control.request(path, "GET", "/status")
    assert str(caught.value) == (
        f"the controller at {path} answered HTTP 502 with a body that is not JSON"
    )


def test_a_volume_name_stays_one_path_segment(answering: tuple[Path, list[bytes]]) -> None:
    path, seen = answering
    hostile = "../../pause?volume=ro1#"
    with pytest.raises(ControlError):
        control.request(path, "POST", control.path_for("volumes", hostile, "failover"), body={})
    request_line = seen[0].split(b"\r\n", 1)[0]
    assert request_line == b"POST /volumes/..%2F..%2Fpause%3Fvolume%3Dro1%23/failover HTTP/1.1"


def test_with_no_controller_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    token.chmod(0o600)
    config = tmp_path / "config.yaml"
    config.write_text(
        "volumes:\n"
        "  - name: crr\n"
        "    mode: read-only\n"
        "    replicas:\n"
        "      - { name: site1, export: '198.18.1.5:/crr-site1' }\n"
        "      - { name: dest1, export: '198.18.2.5:/crr-dest1' }\n"
        "    replication: { provider: local, source_path: /srv/a, destination_path: /srv/b }\n"
        f"store: 'sqlite://{tmp_path / 'state.db'}'\n"
        f"api: {{ token_file: '{token}', socket: '{tmp_path / 'api.sock'}' }}\n"
    )
    done = subprocess.run(
        [*CLI, "pause", "crr", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"nfs-failover: no controller answers at {tmp_path / 'api.sock'}")


def test_a_request_the_controller_closed_unread_is_sent_once_more(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder.chmod(0o700)
    tries: list[int] = []

    def closed_unread_once(*args: object, **kwargs: object) -> object:
        tries.append(1)
        if len(tries) == 1:
            raise control._NotDelivered("broken pipe")
        return {"ok": True}

    monkeypatch.setattr(control, "_request_once", closed_unread_once)
    assert control.request(folder / "api.sock", "GET", "/v1/status") == {"ok": True}
    assert len(tries) == 2


def test_a_controller_that_closes_every_request_unread_is_named(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder.chmod(0o700)
    tries: list[int] = []

    def always_closed(*args: object, **kwargs: object) -> object:
        tries.append(1)
        raise control._NotDelivered("broken pipe")

    monkeypatch.setattr(control, "_request_once", always_closed)
    with pytest.raises(ControlError, match=r"api\.sock did not answer: broken pipe"):
        control.request(folder / "api.sock", "GET", "/v1/status")
    assert len(tries) == 2
