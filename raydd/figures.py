"""Figures drawn without pyplot: the library never selects or switches the importing process's backend.

``matplotlib.figure.Figure`` renders PNG on its own canvas, so importing raydd (or distilling, which
writes ``synthetic.png``) leaves a notebook's interactive backend as it was, and nothing is registered
with pyplot's figure manager that would need closing.
"""

from __future__ import annotations

import io


def subplots(rows: int = 1, cols: int = 1, *, figsize: tuple[float, float], squeeze: bool = True):
    """``(figure, axes)`` as ``pyplot.subplots`` returns them, on a figure pyplot does not know about."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize)
    return figure, figure.subplots(rows, cols, squeeze=squeeze)


def png_bytes(figure, dpi: int = 110) -> bytes:
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
