"""Reports: the synthetic grid, figures and self-contained HTML pages of runs and searches.

``write_report(run_dirs, out)`` and ``write_tune_report(tune_dir, out)`` are loaded on first use, so
importing ``raydd.report.grid`` (the picture itself lives in ``raydd.grid``) stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_report", "write_tune_report"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from raydd.report import write

        return getattr(write, name)
    raise AttributeError(f"module 'raydd.report' has no attribute {name!r}")
