"""Distillation methods, one module each, registered by name (``--method dm|dc|dsa``)."""

from raydd.methods import dm, gradmatch  # noqa: F401  (registration)
from raydd.methods.base import Distiller, available_methods, method_class, register_method

__all__ = ["Distiller", "available_methods", "method_class", "register_method"]
