"""The report in a real browser: headless Chromium opens it offline, logs no console error,
draws every plot, and the screenshot shows the groups' colours."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from analysis.analyze import analyze
from analysis.load import load_grid_runs
from analysis.report.figures import PALETTE
from analysis.report.scaling import write_report

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium (Debian package 'chromium') is not installed"
)


def _chromium(tmp_path: Path, page: Path, *extra: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    args = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--hide-scrollbars",
        *extra,
        page.as_uri(),
    ]
    return subprocess.run(args, capture_output=True, text=True, timeout=180)


def _console_errors(stderr: str) -> list[str]:
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line and re.search(r"Uncaught|Error|error", line)
    ]


def _png_pixels(path: Path) -> np.ndarray:
    """Decode an 8-bit, non-interlaced RGB(A) PNG into an (H, W, C) array (enough for screenshots)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    channels = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.int32)
    prev = np.zeros(width * channels, dtype=np.int32)
    for y in range(height):
        kind, row = raw[y, 0], raw[y, 1:].astype(np.int32)
        if kind == 0:
            cur = row
        elif kind == 2:
            cur = (row + prev) & 0xFF
        elif kind == 1:
            cur = (np.cumsum(row.reshape(width, channels), axis=0) & 0xFF).ravel()
        else:  # Average or Paeth: each byte depends on the one to its left
            cur = np.zeros_like(row)
            for x in range(row.size):
                left = cur[x - channels] if x >= channels else 0
                up = prev[x]
                if kind == 3:
                    cur[x] = (row[x] + ((left + up) >> 1)) & 0xFF
                else:
                    up_left = prev[x - channels] if x >= channels else 0
                    p = left + up - up_left
                    pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                    pred = left if pa <= pb and pa <= pc else (up if pb <= pc else up_left)
                    cur[x] = (row[x] + pred) & 0xFF
        out[y], prev = cur, cur
    return out.reshape(height, width, channels)[..., :3]


@pytest.fixture(scope="module")
def report_page(grid_store, tmp_path_factory) -> Path:
    analysis = analyze(load_grid_runs("smoke", grid_store), n_bootstrap=50)
    return write_report(analysis, tmp_path_factory.mktemp("report") / "report.html")


def test_the_console_check_catches_a_broken_page(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    assert _console_errors(_chromium(tmp_path, page, "--dump-dom").stderr)


def test_report_opens_without_console_errors_and_draws_every_plot(report_page, tmp_path):
    proc = _chromium(tmp_path, report_page, "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _console_errors(proc.stderr) == []
    dom = proc.stdout
    figure_ids = re.findall(r'<div id="(fig-[a-z-]+)"', dom)
    assert {"fig-loss-n", "fig-loss-d", "fig-exponents", "fig-curves", "fig-residuals"} <= set(figure_ids)
    for chunk in dom.split('<div id="fig-')[1:]:
        assert 'class="main-svg"' in chunk, "a figure was not drawn"
    assert dom.count('class="scatterlayer') >= len(figure_ids)


def test_report_screenshot_is_not_blank_and_shows_each_group(report_page, tmp_path):
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, report_page, "--window-size=1000,1300", f"--screenshot={shot}")
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = _png_pixels(shot)
    flat = pixels.reshape(-1, 3)
    assert len(np.unique(flat[::7], axis=0)) > 50, "the screenshot is (nearly) one colour"
    for hex_color in PALETTE[:2]:  # the two groups' points and curves are on screen
        rgb = np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])
        close = np.abs(flat - rgb).sum(axis=1) < 40
        assert close.sum() > 200, f"no {hex_color} pixels: the loss plot is not drawn"
