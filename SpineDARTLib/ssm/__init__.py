"""Statistical shape models: the model type, PCA of corresponding members, I/O."""

from .io import load_model, save_model
from .model import ANNOTATIONS, ShapeModel
from .pca import pca_model, rigid_gpa

__all__ = ["ANNOTATIONS", "ShapeModel", "load_model", "pca_model", "rigid_gpa", "save_model"]
