"""Statistical shape models: the model type, PCA of corresponding members, I/O."""

from .io import bundled_model_path, load_bundled, load_model, save_model
from .model import ANNOTATIONS, ShapeModel
from .pca import pca_model, rigid_gpa

__all__ = [
    "ANNOTATIONS",
    "ShapeModel",
    "bundled_model_path",
    "load_bundled",
    "load_model",
    "pca_model",
    "rigid_gpa",
    "save_model",
]
