"""Differentiable X-ray Gaussian splatting (additive line integrals), torch and gsplat backends."""

from .gaussians import GaussianCloud, from_volume, interior_points, isotropic, solid_from_mesh, surface_from_mesh
from .pose import rotation_matrix, transform_gaussians
from .project import Projected, project_gaussians
from .renderer import BACKENDS, MODES, RenderInputError, RenderResult, SplatRenderer

__all__ = [
    "BACKENDS",
    "MODES",
    "GaussianCloud",
    "Projected",
    "RenderInputError",
    "RenderResult",
    "SplatRenderer",
    "from_volume",
    "interior_points",
    "isotropic",
    "project_gaussians",
    "rotation_matrix",
    "solid_from_mesh",
    "surface_from_mesh",
    "transform_gaussians",
]
