"""Look at a report the way a person would: render it in headless Chromium and keep the screenshot.

Used by jobs/render_report.py and by the tests. The browser runs with a throwaway profile and every
background network feature off; the page itself forbids fetches (its Content-Security-Policy), so a
screenshot also proves the report needs nothing from outside the file.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from raydd.errors import RayddError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
QUIET_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--disable-dev-shm-usage", "--mute-audio",
)


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def render_png(html_path: str | os.PathLike, png_path: str | os.PathLike, *, width: int = 1280, height: int = 2400,
               timeout: float = 120.0) -> str:
    """Screenshot of the top ``width`` x ``height`` pixels of a local HTML file; returns ``png_path``."""
    browser = find_browser()
    if browser is None:
        raise RayddError("rendering a report needs Chromium: apt-get install -y chromium")
    page = Path(html_path).resolve()
    if not page.is_file():
        raise RayddError(f"{html_path}: no such report file")
    target = Path(png_path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="raydd-chromium-") as profile:
        command = [browser, *QUIET_FLAGS, f"--user-data-dir={profile}", f"--screenshot={target}",
                   f"--window-size={width},{height}", page.as_uri()]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "HOME": profile})
        except subprocess.TimeoutExpired:
            raise RayddError(f"chromium did not finish rendering {page} within {timeout:.0f} s") from None
    if not target.is_file() or target.stat().st_size == 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RayddError(f"chromium wrote no screenshot of {page} (exit {done.returncode}): " + " | ".join(tail))
    return str(target)


def looks_blank(png: bytes, *, min_std: float = 3.0) -> bool:
    """True when an image is (nearly) one flat colour: a page that failed to draw."""
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as picture:
        grey = picture.convert("L")
        return ImageStat.Stat(grey).stddev[0] < min_std
