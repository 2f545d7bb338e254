"""Offscreen pictures of an MRML scene drawn by Slicer's own displayable managers (slicer-core + VTK;
EGL where there is no display), so a picture shows the nodes exactly as a Slicer 3-D view would:
model and markups display nodes, their colours, opacities and per-view visibility.

An :class:`OffscreenView` is a 3-D view node with its renderer and displayable managers; a node is
drawn in it when its display nodes list that view (or list none). X-rays are shown as their slice
planes in 3-D (Slicer's "volume slice" models), so outlines drawn on an X-ray's plane lie on it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import mrml

THREE_D_MANAGERS = (
    "vtkMRMLCameraDisplayableManager",
    "vtkMRMLViewDisplayableManager",
    "vtkMRMLModelDisplayableManager",
    "vtkMRMLMarkupsDisplayableManager",
)
SLICE_NAMES = ("Red", "Yellow", "Green")


def _application_logic(scene: Any) -> Any:
    entry = mrml._LOGICS.get(id(scene))
    if entry is None or entry[0] is not scene:
        raise ValueError("offscreen views need a scene made by SpineDARTLib.mrml.new_scene")
    return entry[1]


class OffscreenView:
    """One 3-D view of ``scene`` rendered offscreen at ``size`` (width, height) pixels."""

    def __init__(self, scene: Any, name: str, size: tuple[int, int] = (700, 700)) -> None:
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
        import vtk

        slicer = mrml._slicer()
        self.scene = scene
        self.node = scene.AddNewNodeByClass("vtkMRMLViewNode", name)
        self.node.SetLayoutName(name)  # the camera displayable manager pairs camera and view by it
        self.node.SetBoxVisible(False)
        self.node.SetAxisLabelsVisible(False)
        self.node.SetOrientationMarkerType(self.node.OrientationMarkerTypeNone)
        self.renderer = vtk.vtkRenderer()
        self.window = vtk.vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.AddRenderer(self.renderer)
        self.window.SetSize(*size)
        # Displayable managers observe interaction through the window's interactor: it must exist.
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.window)
        factory = slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()
        factory.SetMRMLApplicationLogic(_application_logic(scene))
        for manager in THREE_D_MANAGERS:
            if not factory.IsDisplayableManagerRegistered(manager):
                factory.RegisterDisplayableManager(manager)
        self.managers = factory.InstantiateDisplayableManagers(self.renderer)
        self.managers.SetMRMLDisplayableNode(self.node)
        self._slices: list[tuple[Any, Any]] = []

    def background(self, rgb: tuple[float, float, float]) -> None:
        self.node.SetBackgroundColor(*rgb)
        self.node.SetBackgroundColor2(*rgb)

    def show_in_this_view_only(self, nodes: list[Any]) -> None:
        """Draw these displayable nodes here and in no other view (Slicer's per-view visibility)."""
        for node in nodes:
            for i in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(i)
                display.RemoveAllViewNodeIDs()
                display.AddViewNodeID(self.node.GetID())

    def camera(
        self, position: np.ndarray, focal: np.ndarray, up: np.ndarray, parallel_scale: float | None = None
    ) -> None:
        """Place the view's camera node (what Slicer saves with the scene), not only the VTK camera."""
        cam = self.managers.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()
        cam.SetPosition(*map(float, position))
        cam.SetFocalPoint(*map(float, focal))
        cam.SetViewUp(*map(float, up))
        cam.SetParallelProjection(parallel_scale is not None)
        if parallel_scale is not None:
            cam.SetParallelScale(float(parallel_scale))
        self.renderer.ResetCameraClippingRange()

    def grab(self) -> np.ndarray:
        """The rendered view as an RGB array (H, W, 3), top row first."""
        import vtk
        from vtk.util import numpy_support

        self.managers.RequestRender()
        self.renderer.ResetCameraClippingRange()
        self.window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.ReadFrontBufferOff()
        grab.Update()
        img = grab.GetOutput()
        w, h, _ = img.GetDimensions()
        rgb = numpy_support.vtk_to_numpy(img.GetPointData().GetScalars()).reshape(h, w, -1)[:, :, :3]
        return np.ascontiguousarray(rgb[::-1])  # VTK's rows go bottom-up

    def show_volume_slice(self, volume: Any, index: int = 0) -> Any:
        """Show ``volume`` on its own plane in 3-D (a slice logic reformatted to it, its slice model
        visible), as Slicer does with "show in 3D" on a slice view; the logic lives as long as this
        view. Returns the slice model node (give it to :meth:`show_in_this_view_only`)."""
        slicer = mrml._slicer()
        colours = slicer.vtkMRMLColorLogic()  # the grey lookup table a scalar volume is shown with
        colours.SetMRMLScene(self.scene)
        display = volume.GetDisplayNode()
        display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
        display.AutoWindowLevelOn()
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLApplicationLogic(_application_logic(self.scene))
        logic.SetMRMLScene(self.scene)
        slice_node = logic.AddSliceNode(SLICE_NAMES[index])
        logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
        dims = volume.GetImageData().GetDimensions()
        slice_node.SetDimensions(dims[0], dims[1], 1)
        ijk_to_ras = mrml.volume_matrix(volume)
        # The slice's normal is the image's k axis and its in-plane axes the image's: no resampling skew.
        u, v = ijk_to_ras[:3, 0], ijk_to_ras[:3, 1]
        n = np.cross(u, v)
        centre = ijk_to_ras @ np.array([(dims[0] - 1) / 2, (dims[1] - 1) / 2, 0.0, 1.0])
        slice_node.SetSliceToRASByNTP(*n, *u, *centre[:3], 0)
        # The field of view is the image itself (not FitSliceToAll, which re-centres on every volume).
        slice_node.SetFieldOfView(dims[0] * np.linalg.norm(u), dims[1] * np.linalg.norm(v), 1.0)
        slice_node.SetXYZOrigin(0.0, 0.0, 0.0)
        slice_node.SetSliceVisible(True)
        self._slices.append((logic, colours))
        return logic.GetSliceModelNode()

    def close(self) -> None:
        self.managers.SetMRMLDisplayableNode(None)
        self.window.Finalize()
        self.scene.RemoveNode(self.node)
        for logic, _colours in self._slices:
            logic.SetMRMLScene(None)
        self._slices.clear()
