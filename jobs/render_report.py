"""Render a raydd report.html to a PNG with headless Chromium, to look at it as a reader would.

    python jobs/render_report.py runs/X/report.html /tmp/report.png [--width 1280 --height 2400]

Needs the Debian package `chromium` (apt-get install -y chromium). Exits 1 if the screenshot is blank.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from raydd.errors import RayddError  # noqa: E402
from raydd.report.screenshot import looks_blank, render_png  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report_html", help="the report page (a local file)")
    parser.add_argument("out_png", help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2400)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before giving up on the browser")
    args = parser.parse_args(argv)
    try:
        path = render_png(args.report_html, args.out_png, width=args.width, height=args.height, timeout=args.timeout)
    except RayddError as exc:
        print(f"render_report: error: {exc}", file=sys.stderr)
        return 2
    if looks_blank(Path(path).read_bytes()):
        print(f"render_report: {path} is blank: the page did not draw", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
