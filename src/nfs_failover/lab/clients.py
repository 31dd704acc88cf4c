"""The lab's client hosts: small VMs with Debian's kernel, the real NFS clients.

This machine's kernel has neither autofs nor an NFS client, so each client host boots
Debian's packaged kernel (unpacked by ``scripts/setup``) under qemu through virtme-ng,
which shares the host's userland read-only with writable overlays. Each guest has its
own tap device on the lab's client network, so a zone's outage rule drops the guest's
own packets as an NSG would, and a folder of its own shared read-write (its autofs
files, the automount log, the command server's token). The host runs commands in a
guest through its command server (``guest_server``), one connection per command, each
with a deadline on both sides.

Everything is found by name (taps ``nfo<tag>-c<N>``, qemu processes by their tap), so
``down`` removes it even after a crash.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nfs_failover import files
from nfs_failover.config import AutofsSettings
from nfs_failover.errors import LabError
from nfs_failover.lab import guest_server, system
from nfs_failover.pacing import Deadline

# Not under /var/cache: virtme-ng hides that folder from its guests behind a tmpfs.
KERNEL_CACHE = Path("/var/lib/nfs-failover/kernel")
KERNEL_ENV = "NFS_FAILOVER_KERNEL_DIR"
GUEST_PORT = 7710
GUEST_MEMORY = "1G"
BOOT_TIMEOUT = 180.0  # two guests booting at once under software emulation on 2 cores
KVM_PROBE_TIMEOUT = 15.0
MAX_CLIENTS = 8
MOUNT_ROOT = Path("/misc")  # the seed's autofs mount root, in every client host
GUEST_MODULES = ("virtio_net", "autofs4", "nfs", "nfsv3")
CLIENT_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "busybox": "busybox-static",
    "modprobe": "kmod",
}

Progress = Callable[[str], None]
_AUTOFS = AutofsSettings()  # a client host's autofs files are where a real client has them


# -- the kernel and the tools ------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    release: str
    image: Path  # vmlinuz; its modules are in lib/modules/<release> under the same tree


def kernel_dir() -> Path:
    return Path(os.environ.get(KERNEL_ENV) or KERNEL_CACHE)


def find_kernel(folder: Path | None = None) -> Kernel:
    """The newest kernel that ``scripts/setup`` unpacked, or LabError saying how to get one."""
    folder = folder or kernel_dir()
    found = sorted(folder.glob("*/boot/vmlinuz-*"))
    for image in reversed(found):
        release = image.name.removeprefix("vmlinuz-")
        if (image.parents[1] / "lib" / "modules" / release / "modules.dep").exists():
            return Kernel(release, image)
    raise LabError(
        f"no client-host kernel in {folder}: run scripts/setup (it fetches Debian's "
        "linux-image-amd64 with apt-get download and unpacks it there)"
    )


def vng_path() -> Path:
    beside = Path(sys.executable).parent / "vng"
    if beside.exists():
        return beside
    found = shutil.which("vng")
    if found is None:
        raise LabError(
            "client hosts need virtme-ng (vng): pip install 'nfs-failover[lab]' "
            "(scripts/setup installs it)"
        )
    return Path(found)


def missing_client_tools() -> list[str]:
    return [
        f"{tool} (package {pkg})" for tool, pkg in CLIENT_TOOLS.items() if not system.which(tool)
    ]


def require_client_tools() -> None:
    missing = missing_client_tools()
    if missing:
        packages = " ".join(sorted(set(CLIENT_TOOLS.values())))
        raise LabError(
            "client hosts need packages that are not installed: "
            + ", ".join(missing)
            + f"; install them with: apt-get install {packages}"
        )


def kvm_works(kernel: Kernel, cache: Path) -> bool:
    """Whether KVM really runs a guest here, decided by trying once per host boot (with a
    deadline: on some machines /dev/kvm exists and a KVM guest hangs)."""
    if not Path("/dev/kvm").exists():
        return False
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    verdict = cache / "kvm-verdict.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        saved = json.loads(verdict.read_text())
        if saved["boot_id"] == boot_id:
            return bool(saved["works"])
    qemu = system.which("qemu-system-x86_64") or "qemu-system-x86_64"
    argv = [
        qemu,
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel.image),
        "-append",
        "console=ttyS0 panic=-1",
    ]
    works = _prints_within(argv, b"Linux version", KVM_PROBE_TIMEOUT)
    with contextlib.suppress(OSError):
        files.write_atomically(
            verdict, json.dumps({"boot_id": boot_id, "works": works}) + "\n", mode=0o644
        )
    return works


def _prints_within(argv: Sequence[str], needle: bytes, timeout: float) -> bool:
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    seen = b""
    deadline = Deadline(timeout)
    try:
        while not deadline.passed() and needle not in seen:
            chunk = process.stdout.read(65536)
            if chunk:
                seen = (seen + chunk)[-65536:]
            elif process.poll() is not None:
                break
            else:
                time.sleep(0.1)
        return needle in seen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        process.stdout.close()


# -- one client host ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClientHost:
    """One client host: its name, its place on the lab network, its files on the host."""

    name: str  # client1, client2, ...
    index: int
    address: str
    gateway: str
    tap: str
    folder: Path  # shared read-write with the guest, at the same path

    @property
    def params(self) -> Path:
        return self.folder / "guest.json"

    @property
    def token_file(self) -> Path:
        return self.folder / "token"

    @property
    def ready_file(self) -> Path:
        return self.folder / "ready.json"

    @property
    def console(self) -> Path:
        return self.folder / "console.log"

    @property
    def started_file(self) -> Path:
        return self.folder / "started.json"

    @property
    def files_root(self) -> Path:
        """Where the agent writes this client's autofs files on the host; the guest links
        its own /etc files there (see ``guest_server``)."""
        return self.folder / "root"


@dataclass(frozen=True)
class ClientStatus:
    name: str
    address: str
    state: str  # "up", "booting", "stopped" or "absent"
    kernel: str | None
    boot_seconds: float | None
    accel: str | None
    pid: int | None


@dataclass(frozen=True)
class ExecResult:
    """What a command in a client host did. ``returncode`` is None when it was killed at
    its deadline (``timed_out``) and abandoned in the guest."""

    argv: tuple[str, ...]
    returncode: int | None
    stdout: bytes
    stderr: bytes
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def text(self) -> str:
        return self.stdout.decode(errors="replace")

    def why(self) -> str:
        """One line on how it ended, for errors."""
        if self.timed_out:
            return f"no end within {self.seconds:g}s (killed in the guest)"
        last = (self.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        return f"exit status {self.returncode}" + (f": {last}" if last else "")


async def exec_in(
    client: ClientHost,
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: bytes = b"",
    detach: Path | None = None,
) -> ExecResult:
    """Run ``argv`` in the client host within ``timeout`` seconds (the guest kills it at
    the deadline). With ``detach`` (a log file in the client's folder) it is started in
    the background instead, its output in that file, and its pid is the stdout. Raises
    LabError when the guest cannot be reached or authenticated; the whole exchange has
    its own deadline, a little past the command's."""
    try:
        token = client.token_file.read_bytes().strip()
    except OSError as exc:
        raise LabError(f"{client.name}: no command token ({exc.strerror}); is it up?") from None
    try:
        async with asyncio.timeout(timeout + 10.0):
            return await _exchange(
                client, token, list(argv), timeout=timeout, stdin=stdin, detach=detach
            )
    except TimeoutError:
        raise LabError(f"{client.name}: no answer from its command server") from None
    except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
        raise LabError(f"{client.name}: command server unreachable ({exc})") from None


async def _exchange(
    client: ClientHost,
    token: bytes,
    argv: list[str],
    *,
    timeout: float,
    stdin: bytes,
    detach: Path | None,
) -> ExecResult:
    reader, writer = await asyncio.open_connection(
        client.address,
        GUEST_PORT,
        limit=4 * guest_server.MAX_OUTPUT,  # two outputs, base64
    )
    try:
        hello = json.loads(await reader.readline())
        challenge = secrets.token_hex(16)
        request = {
            "auth": guest_server.sign(token, "host", str(hello["challenge"])),
            "challenge": challenge,
            "argv": argv,
            "timeout": timeout,
            "stdin": base64.b64encode(stdin).decode(),
            **({"detach": str(detach)} if detach else {}),
        }
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        answer = json.loads(await reader.readline())
    finally:
        writer.close()
    if "proof" not in answer and "error" in answer:  # it refused us: said, not trusted
        raise LabError(f"{client.name}: the command server refused: {answer['error']}")
    if answer.get("proof") != guest_server.sign(token, "guest", challenge):
        raise LabError(f"{client.name}: the command server did not prove it holds the token")
    if "error" in answer:
        raise LabError(f"{client.name}: {answer['error']}")
    return ExecResult(
        argv=tuple(argv),
        returncode=answer["returncode"],
        stdout=base64.b64decode(answer["stdout"]),
        stderr=base64.b64decode(answer["stderr"]),
        timed_out=bool(answer["timed_out"]),
        seconds=float(answer["seconds"]),
    )


def exec_sync(
    client: ClientHost,
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: bytes = b"",
    detach: Path | None = None,
) -> ExecResult:
    """``exec_in`` for callers without an event loop (the CLI, tests, worker threads)."""
    return asyncio.run(exec_in(client, argv, timeout=timeout, stdin=stdin, detach=detach))


def check(result: ExecResult) -> ExecResult:
    """``result``, or LabError naming the command and how it ended."""
    if not result.ok:
        raise LabError(f"{' '.join(result.argv)}: {result.why()}")
    return result


# -- the real automount in a client host -------------------------------------------------

AUTOMOUNT_PIDFILE = Path("/run/autofs.pid")  # in the guest, where Debian's service has it
MASTER = Path("/etc/auto.master")  # the guest's, the host's own file: +dir:/etc/auto.master.d


def automount_log(client: ClientHost) -> Path:
    return client.folder / "automount.log"


def start_automount(client: ClientHost, master: Path = MASTER, timeout: float = 60.0) -> int:
    """Start Debian's automount in the guest, in the foreground with debug logging into
    the client's folder (the host reads it there), and wait until it is ready."""
    log = automount_log(client)
    offset = log.stat().st_size if log.exists() else 0
    argv = [
        "stdbuf",
        "-oL",
        "-eL",
        "automount",
        "-f",
        "-d",
        "-p",
        str(AUTOMOUNT_PIDFILE),
        str(master),
    ]
    pid = int(check(exec_sync(client, argv, timeout=10.0, detach=log)).text())
    deadline = Deadline(timeout)
    while True:
        text = log.read_bytes()[offset:]
        if b"st_ready" in text or b"no mounts in table" in text:
            return pid
        if not exec_sync(client, ["kill", "-0", str(pid)], timeout=10.0).ok:
            last = text.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise LabError(f"{client.name}: automount exited at start: {last[0]}")
        if deadline.passed():
            raise LabError(f"{client.name}: automount not ready within {timeout:g}s ({log})")
        time.sleep(0.1)


# One command in the guest, not one per step: each costs a process start there, a tenth of
# a second or more under software emulation, and a reload is on the failover's path. The
# script is fixed; the pidfile and the signal come in as arguments, never as its text.
_AUTOMOUNT_PID = """read -r pid < "$1" 2>/dev/null || exit 0
case $pid in ''|*[!0-9]*|0*) exit 0 ;; esac
[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = automount ] || exit 0
if [ -n "$2" ]; then kill "-$2" "$pid" || exit 1; fi
echo "$pid"
"""


def automount_pid(
    client: ClientHost, pidfile: Path = AUTOMOUNT_PIDFILE, *, signal: str = ""
) -> int | None:
    """The pid automount wrote in the guest, if it is a positive number and that process
    is automount; with ``signal`` (a name: "HUP"), sent to it. LabError if the signal
    could not be sent."""
    argv = ["sh", "-c", _AUTOMOUNT_PID, "sh", str(pidfile), signal]
    ran = check(exec_sync(client, argv, timeout=10.0))
    text = ran.text().strip()
    return int(text) if text.isdigit() else None


# -- booting, status, stopping -----------------------------------------------------------


def qemu_pids(tap: str) -> set[int]:
    """The qemu (and vng) processes attached to ``tap``, found through /proc."""
    needle = f"ifname={tap},".encode()
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
    return pids


def write_guest_files(client: ClientHost, routes: Sequence[str]) -> None:
    client.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in (client.ready_file, client.console):
        stale.unlink(missing_ok=True)
    files.write_atomically(client.token_file, secrets.token_hex(32) + "\n", mode=0o600)
    params = {
        "address": f"{client.address}/24",
        "gateway": client.gateway,
        "routes": list(routes),
        "port": GUEST_PORT,
        "token_file": str(client.token_file),
        "ready_file": str(client.ready_file),
        "modules": list(GUEST_MODULES),
        # The guest's own autofs files are links into the shared folder, where the agent
        # writes them (the guest's /etc is an overlay of the host's).
        "links": {
            str(path): str(client.files_root / path.relative_to("/"))
            for path in (_AUTOFS.master_dropin, _AUTOFS.map_file)
        },
    }
    files.write_atomically(client.params, json.dumps(params, indent=2) + "\n", mode=0o600)


def boot(client: ClientHost, kernel: Kernel, *, kvm: bool) -> subprocess.Popen[bytes]:
    """Start the guest (it runs in the background); ``wait_ready`` waits for it."""
    server = Path(guest_server.__file__).resolve()
    python = Path(sys.executable).resolve()
    command = shlex.join([str(python), "-I", "-S", str(server), str(client.params)])
    mac = f"52:54:00:4e:46:{client.index:02x}"
    argv = [
        str(vng_path()),
        "--run",
        str(kernel.image),
        "--force-9p",
        "--memory",
        GUEST_MEMORY,
        "--cpus",
        "1",
        "--no-dhcp",
        "--verbose",
        "--name",
        client.name,
        "--rwdir",
        str(client.folder),
        f"--qemu-opts=-netdev tap,id=n0,ifname={client.tap},script=no,downscript=no "
        f"-device virtio-net-pci,netdev=n0,mac={mac}",
        "--exec",
        command,
    ]
    if not kvm:
        argv.insert(3, "--disable-kvm")
    env = {**os.environ, "PATH": f"{vng_path().parent}:{os.environ.get('PATH', '')}"}
    files.write_atomically(
        client.started_file,
        json.dumps({"at": time.time(), "accel": "kvm" if kvm else "tcg"}) + "\n",
        mode=0o600,
    )
    with open(client.console, "ab") as console:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=client.folder,
            start_new_session=True,
        )


def wait_ready(
    booted: Sequence[tuple[ClientHost, subprocess.Popen[bytes]]], timeout: float, say: Progress
) -> None:
    """Until each guest's command server answers, or LabError naming the guest that did
    not come up and the end of its console."""
    deadline = Deadline(timeout)
    pending = list(booted)
    while pending:
        for client, process in list(pending):
            if client.ready_file.exists() and _answers(client):
                pending.remove((client, process))
                say(f"{client.name}: up on {client.address} ({_boot_seconds(client):.1f}s)")
            elif process.poll() is not None:
                raise LabError(f"{client.name}: the VM exited while booting: {_tail(client)}")
        if pending and deadline.passed():
            names = ", ".join(c.name for c, _ in pending)
            first = pending[0][0]
            raise LabError(
                f"{names}: not up within {timeout:g}s: {_tail(first)} (console: {first.console})"
            )
        if pending:
            time.sleep(0.2)


def _answers(client: ClientHost) -> bool:
    try:
        return exec_sync(client, ["true"], timeout=10.0).ok
    except LabError:
        return False


def _tail(client: ClientHost) -> str:
    try:
        lines = client.console.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no console output"
    useful = [line for line in lines if line.startswith(("guest:", "vng", "qemu", "Error"))]
    return (useful or lines or ["no console output"])[-1][:300]


def _boot_seconds(client: ClientHost) -> float:
    try:
        started = json.loads(client.started_file.read_text())["at"]
        return client.ready_file.stat().st_mtime - float(started)
    except (OSError, ValueError, KeyError):
        return float("nan")


def status(client: ClientHost) -> ClientStatus:
    pids = qemu_pids(client.tap)
    kernel = accel = None
    seconds: float | None = None
    if not pids:
        state = "absent" if not client.folder.exists() else "stopped"
    elif not client.ready_file.exists():
        state = "booting"
    else:
        state = "up"
        with contextlib.suppress(OSError, ValueError, KeyError):
            kernel = str(json.loads(client.ready_file.read_text())["release"])
        with contextlib.suppress(OSError, ValueError, KeyError):
            accel = str(json.loads(client.started_file.read_text())["accel"])
        seconds = round(_boot_seconds(client), 2)
    return ClientStatus(
        name=client.name,
        address=client.address,
        state=state,
        kernel=kernel,
        boot_seconds=seconds,
        accel=accel,
        pid=min(pids) if pids else None,
    )


def stop(tap: str, grace: float = 5.0) -> None:
    """Power the VM on ``tap`` off: SIGTERM to qemu (and its vng parent), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = qemu_pids(tap)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = Deadline(grace)
        while qemu_pids(tap) and not deadline.passed():
            time.sleep(0.05)
        if not qemu_pids(tap):
            return
    raise LabError(f"the VM on {tap} did not exit after SIGKILL")
