"""raydd: multi-modal dataset distillation as a Ray pipeline."""

__version__ = "0.1.0"
