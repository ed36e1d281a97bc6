"""The ``imagefolder`` source (Hugging Face ImageFolder layout); importing it registers the source."""

from .loader import load_imagefolder

__all__ = ["load_imagefolder"]
