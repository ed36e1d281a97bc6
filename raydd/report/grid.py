"""The synthetic-set picture, where the report layer has always imported it from (it lives in raydd.grid)."""

from raydd.grid import grid_png, write_grid

__all__ = ["grid_png", "write_grid"]
