"""Write report pages: one run, several runs side by side, or a tune search.

Each page is one self-contained HTML file (images inside it); its figures are also written next to it
as PNGs (``report_loss.png``, ...) for slides and papers. Paths may be local or fsspec URIs.
"""

from __future__ import annotations

import os
import posixpath

from raydd.artifacts import REPORT
from raydd.errors import RayddError
from raydd.report.compare_page import render_comparison
from raydd.report.run_page import Rendered, render_run
from raydd.report.rundata import load_run
from raydd.report.tune_page import render_tune
from raydd.storage import is_remote, write_bytes_atomic, write_text_atomic


def default_comparison_dir(run_dirs: list[str]) -> str:
    """``<common parent of the runs>/comparison``: next to the runs it compares, never inside one of them."""
    parents = [posixpath.dirname(p.rstrip("/")) if is_remote(p) else os.path.dirname(os.path.abspath(p))
               for p in run_dirs]
    if any(is_remote(p) for p in run_dirs):
        return f"{parents[0]}/comparison"
    return os.path.join(os.path.commonpath(parents), "comparison")


def page_path(out: str | None, default_dir: str) -> str:
    """``out`` ending in .html is the page itself; any other ``out`` is a folder to put report.html in."""
    if out is None:
        return f"{default_dir.rstrip('/')}/{REPORT}"
    if out.endswith((".html", ".htm")):
        return out
    return f"{out.rstrip('/')}/{REPORT}"


def publish(rendered: Rendered, path: str) -> str:
    """Figures first, page last: a page that exists always has its figures beside it."""
    folder, name = path.rsplit("/", 1) if "/" in path else (".", path)
    stem = name.rsplit(".", 1)[0]
    for suffix, png in rendered.figures.items():
        write_bytes_atomic(f"{folder}/{stem}_{suffix}", png)
    write_text_atomic(path, rendered.html)
    return path


def write_report(run_dirs: list[str], out: str | None = None) -> str:
    """One run: its full report (default RUN_DIR/report.html). Several: a comparison page
    (default <common parent>/comparison/report.html). Returns the page's path."""
    run_dirs = [str(p).rstrip("/") for p in run_dirs]
    if not run_dirs:
        raise RayddError("report: give at least one run directory")
    runs = [load_run(p) for p in run_dirs]
    if len(runs) == 1:
        return publish(render_run(runs[0]), page_path(out, run_dirs[0]))
    return publish(render_comparison(runs), page_path(out, default_comparison_dir(run_dirs)))


def write_tune_report(tune_dir: str, out: str | None = None) -> str:
    """The page of a Ray Tune search directory (default TUNE_DIR/report.html). Returns its path."""
    tune_dir = str(tune_dir).rstrip("/")
    return publish(render_tune(tune_dir), page_path(out, tune_dir))
