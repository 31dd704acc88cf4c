"""A real etcd server for the tests: Debian's /usr/bin/etcd on 127.0.0.1, on free ports, in
a folder of the test session, with or without TLS; it can be stopped, restarted on the
same ports and data, and compacted."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests
import trustme

from nfs_failover.config import EtcdSettings, EtcdTls, HostPort
from nfs_failover.pacing import Deadline
from tests.helpers import free_port

ETCD = Path(os.environ.get("NFS_FAILOVER_ETCD", "/usr/bin/etcd"))
START_TIMEOUT = 60.0


@dataclass(frozen=True)
class TlsFiles:
    """A CA, the server's certificate for 127.0.0.1 and a client certificate, as files."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, folder: Path) -> TlsFiles:
        folder.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server = ca.issue_cert("127.0.0.1", "localhost")
        client = ca.issue_cert("nfs-failover-controller")
        files = cls(*(folder / name for name in ("ca.pem", "s.pem", "s.key", "c.pem", "c.key")))
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        for key in (files.server_key, files.client_key):
            key.chmod(0o600)
        return files

    def settings(self, prefix: str) -> EtcdSettings:
        tls = EtcdTls(ca_file=self.ca, cert_file=self.client_cert, key_file=self.client_key)
        return EtcdSettings(prefix=prefix, tls=tls)


class EtcdServer:
    """One etcd member; ``start`` returns once it answers."""

    def __init__(self, folder: Path, *, tls: TlsFiles | None = None) -> None:
        if not ETCD.exists():
            raise RuntimeError(
                f"{ETCD} is missing: the store tests need Debian's etcd-server (scripts/setup)"
            )
        self.folder = folder
        self.tls = tls
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.log = folder / "etcd.log"

    @property
    def endpoint(self) -> HostPort:
        return HostPort("127.0.0.1", self.client_port)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    def settings(self, prefix: str) -> EtcdSettings:
        return self.tls.settings(prefix) if self.tls else EtcdSettings(prefix=prefix)

    def start(self) -> None:
        peer = f"http://127.0.0.1:{self.peer_port}"
        argv = [
            str(ETCD),
            "--name=test",
            f"--data-dir={self.folder / 'data'}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            # Short raft ticks: a lease's shortest TTL is 1.5 election timeouts, so the
            # tests' leases can expire in a second.
            "--heartbeat-interval=20",
            "--election-timeout=200",
            "--unsafe-no-fsync",
            "--logger=zap",
            "--log-level=warn",
        ]
        if self.tls:
            argv += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca}",
                "--client-cert-auth",
            ]
        env = {"PATH": "/usr/bin:/bin"}  # no ETCD_* variable of the caller's reaches it
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = Deadline(START_TIMEOUT)
        session = self.session()
        while not deadline.passed():
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited ({self.process.returncode}); see {self.log}")
            try:
                reply = session.get(f"{self.url}/health", timeout=1)
                if reply.ok and reply.json().get("health") == "true":
                    return
            except (requests.RequestException, ValueError):
                pass
            self.process_wait(0.05)
        raise RuntimeError(f"etcd did not answer within {START_TIMEOUT:g}s; see {self.log}")

    def process_wait(self, seconds: float) -> None:
        """Wait for the server to exit, at most ``seconds``: the pause between two looks."""
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(seconds)

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        if self.tls:
            session.verify = str(self.tls.ca)
            session.cert = (str(self.tls.client_cert), str(self.tls.client_key))
        return session

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        reply = self.session().post(self.url + path, json=body, timeout=10)
        reply.raise_for_status()
        answer: dict[str, object] = reply.json()
        return answer

    def revision(self) -> int:
        header = self.post("/v3/kv/range", {"key": "AA=="})["header"]
        assert isinstance(header, dict)
        return int(header["revision"])

    def compact(self, revision: int | None = None) -> int:
        """Compact the history up to ``revision`` (the current one by default)."""
        target = self.revision() if revision is None else revision
        self.post("/v3/kv/compaction", {"revision": target, "physical": True})
        return target

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
