"""Plan results ↔ MRML nodes: the only module that imports ``slicer``.

Works inside the Slicer application (pass ``slicer.mrmlScene``) and with the ``slicer-core`` wheel
(MRML without Qt), which is how the tests exercise it. A scene made here has the application and
markups logics attached: without the markups logic, markups nodes are silently not saved.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_path
from .errors import GeometryError, UserError
from .geometry import Projection, view_pair_check
from .xray import XRay, image_stem, read_xray

ATTR_PROJECTION = "SpineDART.Projection"
ATTR_GEOMETRY_KIND = "SpineDART.GeometryKind"
ATTR_PROVENANCE = "SpineDART.Provenance"


def _slicer() -> Any:
    import slicer  # noqa: PLC0415 - the one place this project imports slicer

    return slicer


def new_scene(cache_dir: str | Path | None = None) -> Any:
    """An MRML scene with the logics that saving and loading need (application, markups, IO)."""
    slicer = _slicer()
    scene = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    markups = slicer.vtkSlicerMarkupsLogic()
    markups.SetMRMLApplicationLogic(app)
    markups.SetMRMLScene(scene)
    app.SetModuleLogic("Markups", markups)
    cache = slicer.vtkCacheManager()
    cache.SetRemoteCacheDirectory(str(cache_dir or tempfile.mkdtemp(prefix="spinedart-mrml-cache-")))
    io = slicer.vtkDataIOManager()
    io.SetCacheManager(cache)
    scene.SetCacheManager(cache)
    scene.SetDataIOManager(io)
    # Keep the logics alive as long as the scene: they hold only weak references to each other.
    _LOGICS[id(scene)] = (scene, app, markups, cache, io)
    return scene


_LOGICS: dict[int, tuple[Any, ...]] = {}


def release_scene(scene: Any) -> None:
    """Drop the logics kept for a scene made by :func:`new_scene`."""
    _LOGICS.pop(id(scene), None)


def has_markups_logic(scene: Any) -> bool:
    entry = _LOGICS.get(id(scene))
    if entry is not None and entry[0] is scene:
        return True
    try:  # inside Slicer the application provides it
        return _slicer().app is not None and scene is _slicer().mrmlScene
    except AttributeError:
        return False


def _ras_matrix(projection: Projection) -> np.ndarray:
    origin, du, dv = projection.detector_axes_mm()
    # The slice axis only has to complete a right-handed frame (one slice: k = 0); a left-handed
    # IJK→RAS (mirrored read-out) would be re-oriented by the NRRD writer.
    normal = np.cross(du, dv)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = du, dv, normal / np.linalg.norm(normal), origin
    return m


def add_xray_volume(scene: Any, xray: XRay, name: str | None = None) -> Any:
    """A scalar volume node showing the X-ray on its detector plane in RAS, geometry kept on the node.

    IJK→RAS maps pixel (u, v) to its position on the detector, so in 3D the image sits where the
    X-rays hit it; the projection, geometry kind and provenance ride along as node attributes.
    """
    import vtk
    from vtk.util import numpy_support

    h, w = xray.image.shape
    img = vtk.vtkImageData()
    img.SetDimensions(w, h, 1)
    arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(xray.image, dtype=np.float32).ravel(), deep=True)
    arr.SetName("ImageScalars")
    img.GetPointData().SetScalars(arr)
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or (xray.path.stem if xray.path else "X-ray"))
    node.SetAndObserveImageData(img)
    mat = vtk.vtkMatrix4x4()
    for i in range(4):
        for j in range(4):
            mat.SetElement(i, j, _ras_matrix(xray.projection)[i, j])
    node.SetIJKToRASMatrix(mat)
    node.SetAttribute(ATTR_PROJECTION, json.dumps(xray.projection.to_dict()))
    node.SetAttribute(ATTR_GEOMETRY_KIND, xray.geometry_kind)
    node.SetAttribute(ATTR_PROVENANCE, json.dumps(xray.provenance, default=str))
    node.CreateDefaultDisplayNodes()
    return node


def volume_matrix(node: Any, ras_to_ijk: bool = False) -> np.ndarray:
    """A volume node's IJK→RAS (or RAS→IJK) matrix as a 4×4 array."""
    import vtk

    m = vtk.vtkMatrix4x4()
    (node.GetRASToIJKMatrix if ras_to_ijk else node.GetIJKToRASMatrix)(m)
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def projection_from_node(node: Any) -> Projection:
    text = node.GetAttribute(ATTR_PROJECTION)
    if not text:
        raise UserError(
            f"volume node '{node.GetName()}' carries no X-ray geometry",
            "load the X-ray through SpineDART so that its calibration is kept",
        )
    d = json.loads(text)
    return Projection(np.asarray(d["P"]), tuple(d["image_size"]), tuple(d["pixel_spacing_mm"]), d.get("isocenter_mm"))


def xray_from_node(node: Any) -> XRay:
    from vtk.util import numpy_support

    proj = projection_from_node(node)
    w, h = proj.image_size
    img = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars()).reshape(h, w)
    prov = json.loads(node.GetAttribute(ATTR_PROVENANCE) or "{}")
    return XRay(img.astype(np.float32), proj, node.GetAttribute(ATTR_GEOMETRY_KIND) or "calibrated", prov)


def load_xray_node(scene: Any, path: str | Path, geometry: str | Path | None = None, name: str | None = None) -> Any:
    return add_xray_volume(scene, read_xray(path, geometry), name)


def load_xray_pair(
    scene: Any,
    image_a: str | Path,
    image_b: str | Path,
    geometry_a: str | Path | None = None,
    geometry_b: str | Path | None = None,
) -> tuple[Any, Any]:
    """Read both X-rays into volume nodes, all or nothing: when B fails, A is removed again."""
    nodes: list[Any] = []
    try:
        for label, image, geometry in (("A", image_a, geometry_a), ("B", image_b, geometry_b)):
            if image is None or str(image).strip() == "":
                raise UserError(
                    f"no image file chosen for X-ray {label}",
                    f"choose the X-ray {label} image (DICOM, PNG/TIFF with a JSON sidecar, NIfTI or NRRD)",
                )
            name = scene.GenerateUniqueName(image_stem(image))
            nodes.append(load_xray_node(scene, image, geometry or None, name))
    except BaseException:
        for node in nodes:
            scene.RemoveNode(node)
        raise
    return nodes[0], nodes[1]


def describe_view_pair(node_a: Any, node_b: Any) -> tuple[str, str]:
    """Text for the panel about two X-ray nodes and a level: ``ok``, ``warning`` or ``error``.

    One line per view (geometry kind, source position), then the angle between the views with the
    warning (< 15°) or the error (< 5°) of :func:`view_pair_check`.
    """
    lines: list[str] = []
    level = "ok"
    projections = []
    for label, node in (("A", node_a), ("B", node_b)):
        if node is None:
            lines.append(f"X-ray {label}: not loaded")
            continue
        try:
            projection = projection_from_node(node)
        except UserError as exc:
            lines.append(f"X-ray {label}: {exc.one_line()}")
            level = "error"
            continue
        kind = node.GetAttribute(ATTR_GEOMETRY_KIND) or "unknown"
        x, y, z = (float(c) for c in projection.source_mm)
        lines.append(f"X-ray {label} ({node.GetName()}): {kind} geometry, source at ({x:.1f}, {y:.1f}, {z:.1f}) mm RAS")
        projections.append(projection)
    if len(projections) == 2:
        try:
            angle, warning = view_pair_check(*projections)
        except GeometryError as exc:
            lines.append(f"Error: {exc.one_line()}")
            level = "error"
        else:
            lines.append(f"Angle between the views: {angle:.1f}°")
            if warning:
                lines.append(f"Warning: {warning}")
                level = "warning" if level == "ok" else level
    return "\n".join(lines), level


def add_model_node(scene: Any, vertices_ras: np.ndarray, faces: np.ndarray, name: str) -> Any:
    """A model node from a triangle mesh given in RAS mm (Slicer stores it as LPS on disk)."""
    from .meshing import polydata

    node = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    node.SetAndObservePolyData(polydata(vertices_ras, faces))
    node.CreateDefaultDisplayNodes()
    return node


def add_line_node(scene: Any, start_ras: np.ndarray, end_ras: np.ndarray, name: str) -> Any:
    """A markups line (e.g. a planned cannula: entry → target), coordinates in RAS mm."""
    import vtk

    node = scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode", name)
    for p in (start_ras, end_ras):
        node.AddControlPoint(vtk.vtkVector3d(*[float(x) for x in p]))
    node.CreateDefaultDisplayNodes()
    return node


def folder_with(scene: Any, name: str, nodes: list[Any], parent: int | None = None) -> int:
    """A subject-hierarchy folder (under ``parent``, default the scene) holding ``nodes``; returns its id."""
    sh = _slicer().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    folder = sh.CreateFolderItem(sh.GetSceneItemID() if parent is None else parent, name)
    for n in nodes:
        item = sh.GetItemByDataNode(n)
        if item:
            sh.SetItemParent(item, folder)
        else:  # slicer-core has no subject-hierarchy logic adding items for new nodes
            sh.CreateItem(folder, n)
    return folder


def folder_children(scene: Any, folder: int) -> list[Any]:
    """The data nodes directly in a subject-hierarchy folder."""
    import vtk

    sh = _slicer().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    ids = vtk.vtkIdList()
    sh.GetItemChildren(folder, ids)
    return [n for i in range(ids.GetNumberOfIds()) if (n := sh.GetItemDataNode(ids.GetId(i))) is not None]


def folder_of(scene: Any, node: Any) -> int | None:
    """The subject-hierarchy folder a data node sits in (None: directly under the scene)."""
    sh = _slicer().vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    parent = sh.GetItemParent(sh.GetItemByDataNode(node))
    return None if parent in (0, sh.GetSceneItemID()) else parent


def _storable_nodes(scene: Any) -> list[Any]:
    out = []
    for i in range(scene.GetNumberOfNodes()):
        n = scene.GetNthNode(i)
        if n.IsA("vtkMRMLStorableNode") and n.GetSaveWithScene() and not n.GetHideFromEditors():
            out.append(n)
    return out


def save_scene_mrb(scene: Any, path: str | Path) -> Path:
    """Save the scene as a Medical Reality Bundle, atomically, and check no node was dropped."""
    path = Path(path)
    if not has_markups_logic(scene):
        raise RuntimeError("scene has no markups logic attached: markups would be silently dropped; use new_scene()")
    nodes = _storable_nodes(scene)
    for n in nodes:
        if n.GetStorageNode() is None:
            n.AddDefaultStorageNode()
    with atomic_path(path, keep_name=True) as tmp:
        if not scene.WriteToMRB(str(tmp)):
            raise UserError("could not write the scene bundle", "check the folder is writable", path)
        names = zipfile.ZipFile(tmp).namelist()
        data = [n for n in names if "/Data/" in n]
        if len(data) < len(nodes):
            missing = [n.GetName() for n in nodes if not any(Path(d).stem.startswith(n.GetName()) for d in data)]
            raise RuntimeError(f"scene bundle is missing nodes {missing}: their storage failed")
    return path


def load_scene_mrb(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise UserError("scene bundle not found", "give an existing .mrb file", path)
    scene = new_scene()
    if not scene.ReadFromMRB(str(path)):
        raise UserError("could not read the scene bundle", "give a valid .mrb file", path)
    return scene
