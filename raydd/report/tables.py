"""A markdown table on stdout and, when asked, in a file (how every benchmark job hands over its figures)."""

from __future__ import annotations

from pathlib import Path

from raydd.storage import is_remote, write_text_atomic


def emit_table(table: str, output: str | None = None) -> None:
    """Print ``table``; with ``output``, also write it there whole (never a half-written file)."""
    print(table)
    if output:
        if not is_remote(output):
            Path(output).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(output, table + "\n")
