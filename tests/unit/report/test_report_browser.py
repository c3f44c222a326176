"""The report in a real headless browser (Debian's chromium): every image must load."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from anomalib_ncd.report import write_report

CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.filter(function (image) { return image.complete && image.naturalWidth > 0; }).length;
  var result = document.createElement("pre");
  result.id = "img-check";
  result.textContent = ok + "/" + images.length;
  document.body.appendChild(result);
});
</script>
"""
BROKEN_IMAGE = '<img src="data:image/png;base64,AAAAAAAA" alt="broken">'
TIMEOUT_S = 60
RESULT = re.compile(r'<pre id="img-check">(\d+)/(\d+)</pre>')


def chromium() -> str:
    """The browser, or skip (locally) / fail (in CI, which installs it) when it is missing."""
    browser = shutil.which("chromium")
    if browser is None:
        message = "chromium is not on PATH (scripts/install.sh installs Debian's chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return browser


def loaded_images(page: Path, profile: Path, extra: str = "") -> tuple[int, int]:
    """Open a copy of ``page`` with the check script in headless chromium; ``(loaded, total)`` images."""
    html = page.read_text(encoding="utf-8")
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("</body>", f"{extra}{CHECK_SCRIPT}</body>"), encoding="utf-8")
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.resolve().as_uri(),
    ]
    # Own session: on a timeout the whole browser (zygote, renderer, GPU process) is killed, not just its launcher.
    browser = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = browser.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.communicate()
        pytest.fail(f"chromium did not finish within {TIMEOUT_S} s")
    match = RESULT.search(stdout)
    assert match, f"no image check in chromium's DOM (exit {browser.returncode}): {stderr[-2000:]}"
    return int(match.group(1)), int(match.group(2))


def test_every_image_loads_in_a_browser(report_data, tmp_path):
    page = write_report(report_data, tmp_path / "report")
    loaded, total = loaded_images(page, tmp_path / "profile")
    assert total == 4 * 3 + 3  # the embedding is an inline SVG, not an image
    assert loaded == total


def test_the_check_notices_a_broken_image(report_data, tmp_path):
    page = write_report(report_data, tmp_path / "report")
    loaded, total = loaded_images(page, tmp_path / "profile", extra=BROKEN_IMAGE)
    assert (loaded, total) == (4 * 3 + 3, 4 * 3 + 4)
