"""The network zoo: every model is built by name through ``get_model``."""

from raydd.models import alexnet, convnet, resnet, vgg  # noqa: F401  (imported to register the models)
from raydd.models.init import build_seeded
from raydd.models.registry import available_models, get_model, register_model

__all__ = ["available_models", "build_seeded", "get_model", "register_model"]
