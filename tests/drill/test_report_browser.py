"""The drill report in a real browser: headless Chromium renders the page, draws the
timeline, and logs nothing to the console.

Chromium is a test tool, not a runtime dependency: scripts/setup installs it (Debian's
package ``chromium``). Without it these tests fail, saying so; CI has it.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from nfs_failover.drill.report import FAILED, PHASE_COLOURS, REPLICA_COLOURS, write_report
from tests.drill.report_helpers import clients_drill
from tests.helpers import REPO

CHROMIUM_NAMES = ("chromium", "chromium-browser")
SCREENSHOT_REPORT = REPO / "scripts" / "screenshot-report"
TIMEOUT = 60.0  # seconds for one headless run
WINDOW = (1280, 2000)
# Chromium (156 at least) logs every console message, whatever its level, as
# "[...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)": the level cannot be told
# apart, so any console line counts. The page has no script, so it should print none.
CONSOLE_LINE = re.compile(r":CONSOLE[:(\]]|Uncaught")


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "the report's browser tests need chromium: run scripts/setup "
        "(it installs the Debian package chromium)",
        pytrace=False,
    )


def run_chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium on ``page``, its log on stderr. Root needs --no-sandbox."""
    argv = [
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done


def console_lines(stderr: str) -> list[str]:
    """What the page wrote to the console (and uncaught errors), from Chromium's log."""
    return [line for line in stderr.splitlines() if CONSOLE_LINE.search(line)]


# -- A small PNG reader: 8-bit RGB or RGBA, not interlaced (what Chromium writes) ---------


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    channels: int
    rows: list[bytes]  # unfiltered, one per pixel row

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        at = x * self.channels
        r, g, b = self.rows[y][at : at + 3]
        return r, g, b


def read_png(path: Path) -> Image:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    pos, idat, header = 8, bytearray(), b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unexpected PNG {header!r}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(bytes(idat))
    stride = width * channels
    rows, previous = [], bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = _unfilter(raw[start], raw[start + 1 : start + 1 + stride], previous, channels)
        rows.append(row)
        previous = row
    return Image(width, height, channels, rows)


def _unfilter(kind: int, line: bytes, up: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(line, up, strict=True))
    out = bytearray(line)
    for i in range(len(out)):
        left = out[i - bpp] if i >= bpp else 0
        if kind == 1:
            out[i] = (out[i] + left) & 0xFF
        elif kind == 3:
            out[i] = (out[i] + (left + up[i]) // 2) & 0xFF
        else:  # 4, Paeth
            corner = up[i - bpp] if i >= bpp else 0
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            nearest = left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner
            out[i] = (out[i] + nearest) & 0xFF
    return bytes(out)


def rgb(colour: str) -> tuple[int, int, int]:
    value = int(colour.lstrip("#"), 16)
    return value >> 16, value >> 8 & 0xFF, value & 0xFF


# -- The report, rendered once for the module ----------------------------------------------


@dataclass(frozen=True)
class Rendered:
    html: Path
    dom: str
    screenshot: Image
    console: list[str]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """The two clients' report, as Chromium laid it out: its DOM, a screenshot, its console."""
    folder = tmp_path_factory.mktemp("browser")
    html = write_report(clients_drill(), folder / "report").html
    png = folder / "drill.png"
    size = f"--window-size={WINDOW[0]},{WINDOW[1]}"
    done = run_chromium(html, folder / "profile", "--dump-dom", f"--screenshot={png}", size)
    return Rendered(
        html=html, dom=done.stdout, screenshot=read_png(png), console=console_lines(done.stderr)
    )


def test_the_page_renders_the_verdict_and_both_clients(rendered: Rendered) -> None:
    assert '<span class="verdict passed">PASSED</span>' in rendered.dom
    assert "<h2>Clients</h2>" in rendered.dom
    for name in ("client1", "client2"):
        assert f">{name}</td>" in rendered.dom
        assert f">{name}</text>" in rendered.dom  # its lane in the inline SVG


def test_the_timeline_is_drawn_in_the_screenshot(rendered: Rendered) -> None:
    image = rendered.screenshot
    assert (image.width, image.height) == WINDOW
    colours = {
        "site1": REPLICA_COLOURS[0],
        "dest1": REPLICA_COLOURS[1],
        "failed": FAILED,
        "outage phase": PHASE_COLOURS["outage"],
    }
    wanted = {rgb(c) for c in colours.values()}
    counts: Counter[tuple[int, int, int]] = Counter()
    xs, ys = set(), set()
    for y in range(image.height):
        for x in range(0, image.width, 2):  # every other column is plenty
            if (p := image.pixel(x, y)) in wanted:
                counts[p] += 1
                xs.add(x)
                ys.add(y)
    # The outage phase is some 150 x 24 px; each replica's ticks and the failures' cover
    # some hundreds of pixels in each of the two lanes.
    for name, colour in colours.items():
        assert counts[rgb(colour)] > 500, f"{name} ({colour}): {counts[rgb(colour)]} pixels"
    assert max(xs) - min(xs) > 600, "the ticks span the chart's width"
    assert 100 < max(ys) - min(ys) < 600, "the phases and both clients' lanes, one below the other"


def test_the_page_writes_nothing_to_the_console(rendered: Rendered) -> None:
    assert rendered.console == []


def test_the_console_check_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>broken</p>"
        '<script>console.error("deliberate"); notDefinedAnywhere();</script></body></html>'
    )
    lines = console_lines(run_chromium(page, tmp_path / "profile", "--dump-dom").stderr)
    assert any('"deliberate"' in line for line in lines), lines
    assert any("Uncaught ReferenceError: notDefinedAnywhere" in line for line in lines), lines


def test_screenshot_report_writes_the_page_as_a_png(rendered: Rendered, tmp_path: Path) -> None:
    out = tmp_path / "img" / "drill.png"
    argv = [str(SCREENSHOT_REPORT), str(rendered.html), str(out), "800x600"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    image = read_png(out)
    assert (image.width, image.height) == (800, 600)
