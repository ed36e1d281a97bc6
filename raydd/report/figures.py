"""Figures on their own canvas, where the report layer has always imported them from (see raydd.figures)."""

from raydd.figures import png_bytes, subplots

__all__ = ["png_bytes", "subplots"]
