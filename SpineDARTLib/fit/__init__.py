"""Fitting shape-model instances to two X-rays: initialisation from 2-D evidence, then the fit."""

from .init import InitResult, initialise
from .landmarks2d import Landmarks2D, VertebraEvidence, read_landmarks_2d, write_landmarks_2d

__all__ = ["InitResult", "Landmarks2D", "VertebraEvidence", "initialise", "read_landmarks_2d", "write_landmarks_2d"]
