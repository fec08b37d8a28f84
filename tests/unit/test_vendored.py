"""The vendored uPlot is the pinned one, whole: the files match the checksums and the version
that server/live/static/vendor/refresh.sh wrote, and the page loads only files it serves."""

from __future__ import annotations

import hashlib
import re

from server.live.http import _STATIC
from tests.support.procs import REPO_ROOT

VENDOR = REPO_ROOT / "server" / "live" / "static" / "vendor"


def test_the_vendored_files_are_the_pinned_version() -> None:
    pinned = re.search(r"^PINNED=(\S+)$", (VENDOR / "refresh.sh").read_text(), re.MULTILINE)
    assert pinned is not None
    assert (VENDOR / "uPlot.VERSION").read_text().strip() == pinned.group(1)
    sums = (VENDOR / "uPlot.SHA256SUMS").read_text().split("\n")
    checked = 0
    for line in filter(None, sums):
        digest, name = line.split()
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
        checked += 1
    assert checked == 3
    assert "MIT License" in (VENDOR / "uPlot.LICENSE").read_text()
    assert f"v{pinned.group(1)}" in (VENDOR / "uPlot.iife.min.js").read_text()[:200]


def test_the_page_asks_only_for_files_the_receiver_serves() -> None:
    page = (REPO_ROOT / "server" / "live" / "static" / "index.html").read_text()
    wanted = re.findall(r'(?:src|href)="/static/([^"]+)"', page)
    assert wanted, page
    assert set(wanted) <= set(_STATIC), wanted
    assert "http" not in "".join(re.findall(r'(?:src|href)="([^"]+)"', page))  # no CDN
