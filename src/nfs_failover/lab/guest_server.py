"""The command server inside a lab client host: how the host runs commands in the guest.

Started once per boot as the guest's only program (virtme-ng's ``--exec``), it loads the
kernel modules a client needs, brings the guest's network up from its parameters file,
and then answers the host over TCP on the lab network: one command per connection, run
as a child process of its own with a deadline. A child that has not ended by then (a
``stat`` on a hard NFS mount of a dead zone) is killed and abandoned, never waited on, so
the server goes on answering while the guest has a hung mount.

Standard library only, and never importing the package: Python under software emulation
imports slowly, and this starts on every boot. Written by hand because nothing smaller
does it: ssh needs keys, a host key and an sshd started in every guest; virtme-ng's own
console is an interactive shell over vsock, which this machine's kernel lacks.

Authentication: the host and the guest share a token that only root can read on the
host (it reaches the guest through the client's private shared folder). Each side proves
it knows the token with an HMAC over the other's random challenge; the token itself never
crosses the wire.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

MAX_REQUEST = 1 << 20  # bytes of one request line
MAX_OUTPUT = 4 << 20  # bytes kept of a command's stdout, and of its stderr
MAX_TIMEOUT = 3600.0
HANDSHAKE_TIMEOUT = 10.0
PROTOCOL = "nfo-guest/1"


def sign(token: bytes, purpose: str, challenge: str) -> str:
    """What a side that knows ``token`` answers to ``challenge`` (shared with the host)."""
    return hmac.new(token, f"{purpose}:{challenge}".encode(), hashlib.sha256).hexdigest()


class Server:
    def __init__(self, token: bytes) -> None:
        self.token = token
        self.abandoned: set[asyncio.subprocess.Process] = set()
        self.children: list[subprocess.Popen[bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve(reader, writer)
        except (OSError, ValueError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the host went away or sent garbage: nothing to answer
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = secrets.token_hex(16)
        writer.write(json.dumps({"protocol": PROTOCOL, "challenge": challenge}).encode() + b"\n")
        await writer.drain()
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            request = json.loads(await reader.readline())
        if not hmac.compare_digest(
            str(request.get("auth", "")), sign(self.token, "host", challenge)
        ):
            await _reply(writer, {"error": "authentication failed"})
            return
        proof = sign(self.token, "guest", str(request.get("challenge", "")))
        try:
            argv = [str(a) for a in request["argv"]]
            timeout = min(max(float(request["timeout"]), 0.0), MAX_TIMEOUT)
            stdin = base64.b64decode(request.get("stdin", ""))
            if not argv:
                raise ValueError("empty argv")
        except (KeyError, TypeError, ValueError) as exc:
            await _reply(writer, {"proof": proof, "error": f"bad request: {exc}"})
            return
        log = request.get("detach")
        result = self.spawn(argv, str(log)) if log else await self.run(argv, timeout, stdin)
        await _reply(writer, {"proof": proof, **result})

    def spawn(self, argv: list[str], log: str) -> dict[str, object]:
        """Start a long-running program (automount, a workload) with its output in ``log``
        and answer at once; it is reaped whenever it ends."""
        try:
            with open(log, "ab") as out:
                process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd="/",
                    start_new_session=True,
                )
        except OSError as exc:
            return {"error": f"cannot run {argv[0]}: {exc.strerror or exc}"}
        self.children.append(process)
        self.children = [child for child in self.children if child.poll() is None]
        return {
            "returncode": 0,
            "timed_out": False,
            "stdout": base64.b64encode(f"{process.pid}\n".encode()).decode(),
            "stderr": "",
            "seconds": 0.0,
            "pid": process.pid,
        }

    async def run(self, argv: list[str], timeout: float, stdin: bytes) -> dict[str, object]:
        started = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd="/",  # never inside a mount that may hang
                start_new_session=True,  # its own group: killed whole at the deadline
            )
        except OSError as exc:
            return {"error": f"cannot run {argv[0]}: {exc.strerror or exc}"}
        assert process.stdout is not None and process.stderr is not None
        if stdin and process.stdin is not None:
            process.stdin.write(stdin)
            with contextlib.suppress(OSError):
                await process.stdin.drain()
            process.stdin.close()
        out = asyncio.ensure_future(_read_bounded(process.stdout))
        err = asyncio.ensure_future(_read_bounded(process.stderr))
        waiter = asyncio.ensure_future(process.wait())
        done, _ = await asyncio.wait(
            {out, err, waiter}, timeout=timeout, return_when="ALL_COMPLETED"
        )
        timed_out = waiter not in done
        if timed_out:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            self._abandon(process, waiter)
        # Output that is in the pipes after the deadline is not waited for either.
        for task in (out, err):
            if not task.done():
                task.cancel()
        return {
            "returncode": None if timed_out else process.returncode,
            "timed_out": timed_out,
            "stdout": _b64(out),
            "stderr": _b64(err),
            "seconds": round(time.monotonic() - started, 4),
            "pid": process.pid,
        }

    def _abandon(self, process: asyncio.subprocess.Process, waiter: asyncio.Future[int]) -> None:
        """A killed child may sit in uninterruptible sleep for as long as its server is
        away: it is reaped whenever it ends, and never waited on here."""
        self.abandoned.add(process)
        waiter.add_done_callback(lambda _f: self.abandoned.discard(process))


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < MAX_OUTPUT:
            kept += chunk[: MAX_OUTPUT - len(kept)]
    return bytes(kept)


def _b64(task: asyncio.Future[bytes]) -> str:
    if task.done() and not task.cancelled() and task.exception() is None:
        return base64.b64encode(task.result()).decode()
    return ""


async def _reply(writer: asyncio.StreamWriter, message: dict[str, object]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()


def _interface() -> str:
    """The guest's one network interface (virtio-net), whatever the kernel named it."""
    names = sorted(n for n in os.listdir("/sys/class/net") if n != "lo")
    if not names:
        raise SystemExit("guest: no network interface (is virtio_net loaded?)")
    return names[0]


def _system(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise SystemExit(f"guest: {' '.join(argv)}: {done.stderr.strip() or done.returncode}")


def set_up(params: dict[str, object]) -> None:
    """Modules, network and folders, as the parameters file says."""
    for module in params.get("modules", []):  # type: ignore[attr-defined]
        _system("modprobe", str(module))
    device = _interface()
    _system("ip", "link", "set", "lo", "up")
    _system("ip", "addr", "add", str(params["address"]), "dev", device)
    _system("ip", "link", "set", device, "up")
    for network in params.get("routes", []):  # type: ignore[attr-defined]
        _system("ip", "route", "add", str(network), "via", str(params["gateway"]))
    for link, target in dict(params.get("links", {})).items():  # type: ignore[call-overload]
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(link).parent.mkdir(parents=True, exist_ok=True)
        Path(link).unlink(missing_ok=True)
        Path(link).symlink_to(target)


async def serve(params: dict[str, object]) -> None:
    token = Path(str(params["token_file"])).read_bytes().strip()
    server = Server(token)
    host = str(params["address"]).split("/")[0]
    listener = await asyncio.start_server(
        server.handle, host, int(str(params["port"])), limit=MAX_REQUEST
    )
    ready = Path(str(params["ready_file"]))
    ready.write_text(json.dumps({"pid": os.getpid(), "release": os.uname().release}) + "\n")
    print(f"guest: serving commands on {host}:{params['port']}", flush=True)
    async with listener:
        await listener.serve_forever()


def main() -> None:
    params = json.loads(Path(sys.argv[1]).read_text())
    set_up(params)
    asyncio.run(serve(params))


if __name__ == "__main__":
    main()
