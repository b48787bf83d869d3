"""Landmark models: the registry and the registered architectures.

``create_model(name, num_points, **cfg)`` builds one; ``list_models()`` names them. Importing this
package imports every model module so their constructors register.
"""

from . import backbones, pipnet, seed_senet  # noqa: F401  (register the models)
from .registry import LandmarkModel, create_model, list_models, register_model

__all__ = ["LandmarkModel", "create_model", "list_models", "register_model"]
