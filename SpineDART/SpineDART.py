"""SpineDART: CT-free vertebroplasty planning from two calibrated X-rays (3D Slicer scripted module).

Wiring only: widget -> logic -> SpineDARTLib (everything testable without the Slicer application), which
is imported lazily, after the module has checked (and, with the user's consent, installed) its requirements.
"""

import logging
import pathlib
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Node attribute written by SpineDARTLib.mrml on every X-ray volume: "nominal" or "calibrated".
GEOMETRY_KIND_ATTRIBUTE = "SpineDART.GeometryKind"


class SpineDART(ScriptedLoadableModule):
    """Module description shown in Slicer's module panel and Help & Acknowledgement section."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("SpineDART")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "IGT")]
        self.parent.dependencies = []
        self.parent.contributors = ["SpineDART developers"]
        self.parent.helpText = _(
            "CT-free vertebroplasty planning from two calibrated X-rays taken ideally about 90 degrees apart "
            "(DICOM with C-arm geometry, or PNG/TIFF/NIfTI/NRRD with a JSON calibration sidecar): a vertebral "
            "shape model is fitted to both views and the left and right transpedicular cannulas are planned, "
            "each with its clearance, predicted breach grade and a safe/unsafe flag. Landmarks come from a "
            "file, from points you place on the X-rays (Place a point), or from the automatic detector when "
            "its weights are installed. Drag a planned cannula to have it checked again.<br><br>"
            'See the <a href="https://github.com/spinedart/SlicerSpineDART">SpineDART documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "SpineDART implements the Spine-DART method (shape-model fitting through a differentiable "
            "X-ray renderer) as an open-source 3D Slicer extension, developed by the SpineDART developers."
        )


@parameterNodeWrapper
class SpineDARTParameterNode:
    """The module's state, saved with the scene.

    xrayAPath, xrayBPath - image files of the two X-rays.
    geometryAPath, geometryBPath - optional calibration (JSON) of each X-ray; empty: the reader uses
        the DICOM C-arm tags or the sidecar next to the image.
    xrayAVolume, xrayBVolume - the loaded X-rays (volumes carrying their projection geometry).
    targetLevels, gauge - levels to plan ("L1-L3"; empty: all marked) and cannula gauge (empty: by level).
    marginMm - how far inside the fitted cortex a safe cannula's wall must stay.
    landmarksPath, masksPath - 2-D evidence files; usePlacedPoints, pointsA, pointsB - points placed
        by the user instead ("<level> <landmark>" labels). workerPython - the background Python;
        device - where it fits: auto (a CUDA GPU when that Python has one), cpu or gpu.
    """

    xrayAPath: pathlib.Path
    geometryAPath: pathlib.Path
    xrayBPath: pathlib.Path
    geometryBPath: pathlib.Path
    xrayAVolume: vtkMRMLScalarVolumeNode
    xrayBVolume: vtkMRMLScalarVolumeNode
    targetLevels: str
    gauge: str
    marginMm: float = 1.0
    landmarksPath: pathlib.Path
    masksPath: pathlib.Path
    usePlacedPoints: bool
    pointsA: vtkMRMLMarkupsFiducialNode
    pointsB: vtkMRMLMarkupsFiducialNode
    workerPython: pathlib.Path
    device: Annotated[str, Choice(["auto", "cpu", "gpu"])] = "auto"


class SpineDARTWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel: X-ray inputs, Load X-rays, loaded volumes and their geometry summary."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._client = None  # the running or last plan's worker client
        self._planFolder = None  # subject-hierarchy folder of the last plan

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SpineDART.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The .ui connects mrmlSceneChanged(vtkMRMLScene*) to each node selector's setMRMLScene slot.
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SpineDARTLogic()
        # Offer only volumes that carry SpineDART X-ray geometry.
        for selector in (self.ui.xrayAVolumeSelector, self.ui.xrayBVolumeSelector):
            selector.addAttribute("vtkMRMLScalarVolumeNode", GEOMETRY_KIND_ATTRIBUTE)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndClose)  # a loaded .mrb
        self.ui.loadXraysButton.connect("clicked(bool)", self.onLoadXraysButton)
        self.ui.planButton.connect("clicked(bool)", self.onPlanButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.placeOnAButton.connect("clicked(bool)", lambda: self.onPlacePoint(0))
        self.ui.placeOnBButton.connect("clicked(bool)", lambda: self.onPlacePoint(1))
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.connect("timeout()", self._pollPlan)
        self.initializeParameterNode()  # also on module reload

    def cleanup(self) -> None:
        """Called when the application closes and the module widget is destroyed: a running plan's
        worker (a process group of its own) is ended with it."""
        self._timer.stop()
        if self._client is not None and not self._client.finished:
            self._client.cancel()
        self.removeObservers()

    def enter(self) -> None:
        """Called each time the user opens this module."""
        self.initializeParameterNode()

    def exit(self) -> None:
        """Called each time the user opens a different module."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        """Called just before the scene is closed."""
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        """Called just after the scene is closed, or a scene was loaded (its parameter node and plans)."""
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        """Ensure the parameter node exists and is observed."""
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        """Set and observe the parameter node (a SpineDARTParameterNode, or None)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # The widgets whose SlicerParameterName property names a parameter node field are
            # synchronised with it both ways.
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._observePlans()  # plans restored with a loaded scene stay editable
        self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        parameterNode = self._parameterNode
        ready = bool(parameterNode and optionalPath(parameterNode.xrayAPath) and optionalPath(parameterNode.xrayBPath))
        self.ui.loadXraysButton.enabled = ready
        running = self._client is not None and not self._client.finished
        p = parameterNode
        self.ui.planButton.enabled = bool(p and p.xrayAVolume and p.xrayBVolume and not running)
        tip = _("Read both X-rays with their geometry and add them to the scene, each on its detector plane.")
        self.ui.loadXraysButton.toolTip = tip if ready else _("Choose the image files of X-ray A and X-ray B first.")
        self._updateGeometrySummary()

    def _updateGeometrySummary(self) -> None:
        parameterNode = self._parameterNode
        volumeA = parameterNode.xrayAVolume if parameterNode else None
        volumeB = parameterNode.xrayBVolume if parameterNode else None
        if volumeA is None and volumeB is None:
            text, level = _("No X-rays loaded."), "none"
        else:
            try:
                text, level = self.logic.geometrySummary(volumeA, volumeB)
            except ImportError as exc:
                text, level = (
                    _("SpineDART's Python packages are missing ({e}): press Load X-rays.").format(e=exc),
                    "warning",
                )
            except Exception as exc:
                message, details = describeError(exc)
                logging.error("SpineDART geometry summary failed: %s\n%s", message, details or "")
                text, level = _("Geometry summary failed: {message}").format(message=message), "error"
        self.ui.geometrySummaryLabel.text = text
        self.ui.geometrySummaryLabel.styleSheet = _STATUS_STYLE[level]

    def onLoadXraysButton(self) -> None:
        """Load both X-rays into the scene and select them."""
        p = parameterNode = self._parameterNode
        self._setStatus(_("Loading X-rays..."), "none")
        slicer.app.processEvents()
        try:
            if not self.logic.ensureLibraryDependencies(askConfirmation=True):
                self._setStatus(_("Not loaded: the SpineDART Python packages are not installed."), "warning")
                return
            with slicer.util.WaitCursor():
                volumeA, volumeB = self.logic.loadXrays(p.xrayAPath, p.xrayBPath, p.geometryAPath, p.geometryBPath)
        except Exception as exc:
            self._reportError(_("Loading the X-rays failed"), exc)
            return

        wasModified = parameterNode.StartModify()
        parameterNode.xrayAVolume = volumeA
        parameterNode.xrayBVolume = volumeB
        parameterNode.EndModify(wasModified)
        self._showXrays(volumeA, volumeB)

        try:
            _text, level = self.logic.geometrySummary(volumeA, volumeB)
        except Exception as exc:
            self._reportError(_("Describing the loaded X-rays failed"), exc)
            return
        status = {
            "error": _("Loaded, but these two views cannot be used together: see Geometry."),
            "warning": _("Loaded, with a warning on the view pair: see Geometry."),
        }.get(level, _("Loaded {a} and {b}.").format(a=volumeA.GetName(), b=volumeB.GetName()))
        self._setStatus(status, level if level in ("error", "warning") else "none")

    def _showXrays(self, volumeA, volumeB) -> None:
        """Show X-ray A in the red view and X-ray B in the yellow view, each in its own plane."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # no main window (e.g. tests)
            return
        for viewName, volume in (("Red", volumeA), ("Yellow", volumeB)):
            sliceWidget = layoutManager.sliceWidget(viewName)
            if sliceWidget is None:
                continue
            sliceWidget.mrmlSliceCompositeNode().SetBackgroundVolumeID(volume.GetID())
            sliceWidget.mrmlSliceNode().RotateToVolumePlane(volume)
            sliceWidget.fitSliceToBackground()

    def onPlacePoint(self, view: int) -> None:
        """Place the chosen landmark of the chosen level on X-ray A (0) or B (1), named after them."""
        p, field = self._parameterNode, ("pointsA", "pointsB")[view]
        landmark, volume = self.ui.landmarkComboBox.currentText.split()[0], (p.xrayAVolume, p.xrayBVolume)[view]
        try:
            points = self.logic.armPointPlacement(getattr(p, field), volume, self.ui.placeLevelLineEdit.text, landmark)
        except Exception as exc:
            self._reportError(_("Cannot place a point"), exc)
            return
        setattr(p, field, points)
        p.usePlacedPoints = True
        if not self.hasObserver(points, points.PointPositionDefinedEvent, self._onPointPlaced):
            self.addObserver(points, points.PointPositionDefinedEvent, self._onPointPlaced)
        self._setStatus(_("Click {0} on X-ray {1}.").format(points.GetControlPointLabelFormat(), "AB"[view]), "none")

    def _onPointPlaced(self, caller, event) -> None:
        combo = self.ui.landmarkComboBox  # on to the next landmark (the .ui lists them in order)
        combo.currentIndex = (combo.currentIndex + 1) % combo.count

    def onPlanButton(self) -> None:
        """Start the plan in the background worker; the timer follows it (no modal dialogs)."""
        try:
            if not self.logic.ensureLibraryDependencies(askConfirmation=True):
                return
            self._client = self.logic.startPlan(self._parameterNode)
        except Exception as exc:
            self._reportError(_("Planning could not start"), exc)
            return
        self.ui.planLogTextEdit.clear()
        self.ui.planProgressBar.value = 0
        self.ui.cancelButton.enabled = True
        self._onParameterNodeModified()
        self._setStatus(_("Planning in the background..."), "none")
        self._timer.start()

    def onCancelButton(self) -> None:
        if self._client is not None:
            self._client.cancel()

    def _pollPlan(self) -> None:
        from SpineDARTLib.worker import describe_message

        client = self._client
        for message in client.poll():
            line = describe_message(message)
            if message.get("type") == "progress":
                self.ui.planProgressBar.value = int(100 * message["fraction"])
            if line:
                self.ui.planLogTextEdit.appendPlainText(line)
        if not client.finished:
            return
        self._timer.stop()
        self.ui.cancelButton.enabled = False
        self._onParameterNodeModified()
        if client.state != "done":
            self._setStatus(_("Plan {state}: {reason}").format(state=client.state, reason=client.reason), "error")
            return
        try:
            added = self.logic.finishPlan(client, self._parameterNode)
        except Exception as exc:
            self._reportError(_("Loading the plan failed"), exc)
            return
        self._observePlans()
        if added["report"]["ok"]:
            self._setStatus(_("Planned: every path safe."), "ok")
        else:
            self._setStatus(_("Planned, with flags: see the table."), "warning")

    def _observePlans(self) -> None:
        """Every plan's cannula lines in the scene (new, or restored with it) re-checked when dragged;
        the table shows the newest plan."""
        try:
            lines, self._planFolder = self.logic.planLines()
        except ImportError:  # the library's packages are not installed yet: there is no plan either
            return
        for line in lines:
            if not self.hasObserver(line, line.PointEndInteractionEvent, self._onLineEdited):
                self.addObserver(line, line.PointEndInteractionEvent, self._onLineEdited)
        self._fillResultsTable()

    def _onLineEdited(self, caller, event) -> None:
        try:
            self.logic.recheckLine(caller, self._parameterNode)
        except Exception as exc:
            self._reportError(_("Re-checking the cannula failed"), exc)
        self._fillResultsTable()

    def _fillResultsTable(self) -> None:
        from SpineDARTLib.mrml_plan import TABLE_HEADERS, table_cells

        rows = self.logic.resultRows(self._planFolder) if self._planFolder is not None else []
        table = self.ui.resultsTable
        table.clear()
        table.setColumnCount(len(TABLE_HEADERS))
        table.setHorizontalHeaderLabels(TABLE_HEADERS)
        table.setRowCount(len(rows))
        for i, cells in enumerate(table_cells(rows)):
            for j, value in enumerate(cells):
                table.setItem(i, j, qt.QTableWidgetItem(value))

    def _setStatus(self, text: str, level: str) -> None:
        self.ui.statusLabel.text = text
        self.ui.statusLabel.styleSheet = _STATUS_STYLE[level]

    def _reportError(self, what: str, exc: Exception) -> None:
        """One line in the panel and in a message box; a traceback only for unexpected errors."""
        message, details = describeError(exc)
        self._setStatus(f"{what}: {message}", "error")
        if details:
            logging.error("%s: %s\n%s", what, message, details)
        slicer.util.errorDisplay(f"{what}: {message}", windowTitle="SpineDART", detailedText=details or "")


_STATUS_STYLE = {"none": "", "ok": "", "warning": "color: #b35900;", "error": "color: #c62828; font-weight: bold;"}


def optionalPath(value):
    """A path from a parameter node or text field, or None when it is empty (an unset pathlib.Path
    field of the parameter node reads as Path("."), never a useful file)."""
    text = "" if value is None else str(value).strip()
    return None if text in ("", ".") else pathlib.Path(text)


def describeError(exc: Exception):
    """(one-line message, details): details is a traceback for a bug, None for a user mistake."""
    from SpineDARTLib.errors import describe_error  # standard library only

    return describe_error(exc)


class SpineDARTLogic(ScriptedLoadableModuleLogic):
    """Delegates to SpineDARTLib; usable without the widget (scripts, tests)."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._dependenciesChecked = False

    def getParameterNode(self):
        return SpineDARTParameterNode(super().getParameterNode())

    @staticmethod
    def requirementsPath() -> pathlib.Path:
        return pathlib.Path(__file__).resolve().parent / "Resources" / "requirements.txt"

    def ensureLibraryDependencies(self, askConfirmation: bool = True) -> bool:
        """Install the missing Python packages of SpineDARTLib (asking first); False if declined. Never
        called at import time: the module loads without them, and the user decides when."""
        if not self._dependenciesChecked:
            from SpineDARTLib.requirements import ensure_requirements, ensure_torch_in_slicer  # standard library only

            self._dependenciesChecked = ensure_requirements(
                self.requirementsPath(),
                lambda missing: self._pipInstall(missing, askConfirmation),
                lambda: ensure_torch_in_slicer(askConfirmation),
            )
        return self._dependenciesChecked

    @staticmethod
    def _pipInstall(requirements: list, askConfirmation: bool) -> bool:
        from SpineDARTLib.requirements import install_in_slicer  # standard library only

        try:
            from slicer import packaging  # Slicer with pip_ensure; older ones: slicer.util.pip_install
        except ImportError:
            packaging = None
        return install_in_slicer(requirements, askConfirmation, slicer.util, packaging, _)

    def loadXrays(self, xrayAPath, xrayBPath, geometryAPath=None, geometryBPath=None, scene=None):
        """Read both X-rays (with optional geometry files) into volume nodes; returns (volumeA, volumeB).

        All or nothing (SpineDARTLib.mrml.load_xray_pair). User mistakes (missing file, missing or
        inconsistent calibration) raise SpineDARTLib.errors.UserError.
        """
        from SpineDARTLib import mrml

        paths = [optionalPath(p) for p in (xrayAPath, xrayBPath, geometryAPath, geometryBPath)]
        return mrml.load_xray_pair(scene if scene is not None else slicer.mrmlScene, *paths)

    def loadDemoCase(self, scene=None):
        """Load the bundled demo case (two calibrated X-rays with JSON sidecars)."""
        from SpineDARTLib.resources import demo_case_dir

        case = demo_case_dir()
        return self.loadXrays(
            case / "xray_a.png", case / "xray_b.png", case / "xray_a.json", case / "xray_b.json", scene=scene
        )

    def geometrySummary(self, volumeA, volumeB):
        """(text, level) describing both views and their angle; level: "ok", "warning" or "error"."""
        from SpineDARTLib import mrml

        return mrml.describe_view_pair(volumeA, volumeB)

    def armPointPlacement(self, points, volume, level, landmark, scene=None):
        """Name the next point placed in ``points`` (a new list when None) "<level> <landmark>" and
        enter place mode; returns the point list."""
        from SpineDARTLib import mrml_plan

        scene = scene if scene is not None else slicer.mrmlScene
        return mrml_plan.arm_point_placement(scene, points, volume, level, landmark)

    def startPlan(self, parameterNode, outDir=None, scene=None):
        """Write the job (X-rays, landmarks) and start the background worker; returns its client."""
        from SpineDARTLib import mrml_plan
        from SpineDARTLib.worker import WorkerClient

        p = parameterNode
        jobDir = pathlib.Path(tempfile.mkdtemp(prefix="spinedart-plan-", dir=slicer.app.temporaryPath))
        points = [p.pointsA, p.pointsB] if p.usePlacedPoints else None
        job = mrml_plan.plan_job(
            [p.xrayAVolume, p.xrayBVolume], jobDir, outDir or jobDir / "plan", p.targetLevels, p.gauge, p.marginMm,
            optionalPath(p.landmarksPath), optionalPath(p.masksPath), points, p.device,
        )  # fmt: skip
        python = optionalPath(p.workerPython)
        return WorkerClient(job, python=str(python) if python else None, workdir=jobDir).start()

    def finishPlan(self, client, parameterNode=None, scene=None):
        """Put a finished plan into the scene (folder, models, editable cannula lines) and draw it on
        both X-rays' image planes."""
        from SpineDARTLib import mrml_plan

        scene = scene if scene is not None else slicer.mrmlScene
        added = mrml_plan.add_plan(scene, client.result["report"])
        if parameterNode is not None and parameterNode.xrayAVolume and parameterNode.xrayBVolume:
            mrml_plan.draw_on_xrays(scene, [parameterNode.xrayAVolume, parameterNode.xrayBVolume], added)
        return added

    def recheckLine(self, line, parameterNode=None, scene=None):
        """Re-check an edited cannula against its vertebra (and the fluoroscopic rule on both X-rays)."""
        from SpineDARTLib import mrml, mrml_plan

        volumes = [parameterNode.xrayAVolume, parameterNode.xrayBVolume] if parameterNode else []
        projections = [mrml.projection_from_node(v) for v in volumes] if all(volumes) and volumes else None
        return mrml_plan.recheck_line(scene if scene is not None else slicer.mrmlScene, line, projections)

    def planLines(self, scene=None):
        """(every planned cannula line in the scene, the newest plan's folder or None)."""
        from SpineDARTLib import mrml_plan

        return mrml_plan.plan_lines(scene if scene is not None else slicer.mrmlScene)

    def resultRows(self, folder, scene=None):
        from SpineDARTLib import mrml_plan

        return mrml_plan.plan_table(scene if scene is not None else slicer.mrmlScene, folder)


class SpineDARTTest(ScriptedLoadableModuleTest):
    """Loads the bundled demo case through the logic and checks what reaches the scene."""

    def setUp(self):
        """Reset the state: a clear scene."""
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run as few or as many tests as needed here."""
        for test in (self.test_SpineDARTLoadDemoCase, self.test_SpineDARTBadInputIsRefused,
                     self.test_SpineDARTPlanDemoFromPlacedPoints):  # fmt: skip
            self.setUp()
            test()

    def test_SpineDARTLoadDemoCase(self):
        """Both demo X-rays become volumes carrying the geometry read from their files; the views are
        far enough apart and the summary says so."""
        import numpy as np

        self.delayDisplay("Loading the SpineDART demo case")
        logic = SpineDARTLogic()
        self.assertTrue(logic.ensureLibraryDependencies(askConfirmation=False))
        from SpineDARTLib import mrml
        from SpineDARTLib.resources import demo_case_dir
        from SpineDARTLib.xray import read_xray

        volumes, case = logic.loadDemoCase(), demo_case_dir()
        points = np.array([[0.0, 0.0, 0.0], [40.0, -25.0, 60.0], [-35.0, 30.0, -20.0]])
        for name, volume in zip(("xray_a", "xray_b"), volumes, strict=True):
            expected = read_xray(case / f"{name}.png", case / f"{name}.json")
            self.assertIsInstance(volume, vtkMRMLScalarVolumeNode)
            self.assertEqual(volume.GetImageData().GetDimensions(), (*expected.projection.image_size, 1))
            self.assertEqual(volume.GetAttribute(GEOMETRY_KIND_ATTRIBUTE), expected.geometry_kind)
            projected = mrml.projection_from_node(volume).project(points)
            np.testing.assert_allclose(projected, expected.projection.project(points), atol=1e-6)
        text, level = logic.geometrySummary(*volumes)
        self.assertEqual(level, "ok", text)
        angle = float(text.rsplit(": ", 1)[1].rstrip("°"))
        self.assertTrue(15.0 <= angle <= 90.0, text)
        parameterNode = logic.getParameterNode()
        parameterNode.xrayAVolume, parameterNode.xrayBVolume = volumes
        self.assertIs(parameterNode.xrayBVolume, volumes[1])
        self.delayDisplay(f"Demo case loaded: views {angle:.1f} deg apart")

    def test_SpineDARTBadInputIsRefused(self):
        """The same X-ray twice is a 0 degree pair: an error in the summary. A missing file is a
        one-line UserError naming it, leaving nothing in the scene; an empty path field too."""
        logic = SpineDARTLogic()
        self.assertTrue(logic.ensureLibraryDependencies(askConfirmation=False))
        from SpineDARTLib.errors import UserError
        from SpineDARTLib.resources import demo_case_dir

        a, sidecar = demo_case_dir() / "xray_a.png", demo_case_dir() / "xray_a.json"
        text, level = logic.geometrySummary(*logic.loadXrays(a, a, sidecar, sidecar))
        self.assertEqual(level, "error", text)
        self.assertIn("Error:", text)
        missing = pathlib.Path(slicer.app.temporaryPath) / "SpineDARTTest-no-such-xray.png"
        before = slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
        with self.assertRaises(UserError) as raised:
            logic.loadXrays(a, missing, sidecar, None)
        message = raised.exception.one_line()
        self.assertTrue("\n" not in message and missing.name in message, message)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"), before)
        self.assertEqual(describeError(raised.exception), (message, None))
        with self.assertRaises(UserError):
            logic.loadXrays(a, pathlib.Path("."))

    def test_SpineDARTPlanDemoFromPlacedPoints(self):
        """L2 of the demo case planned from points placed on both X-rays, in the background worker;
        the plan reaches the scene, and dragging the left cannula 4 mm medially makes it unsafe."""
        from SpineDARTLib import mrml
        from SpineDARTLib.fit.landmarks2d import read_landmarks_2d
        from SpineDARTLib.resources import demo_case_dir

        self.delayDisplay("Planning L2 of the demo case from placed points")
        logic = SpineDARTLogic()
        volumeA, volumeB = logic.loadDemoCase()
        given = read_landmarks_2d(demo_case_dir() / "landmarks.json")
        p = logic.getParameterNode()
        p.xrayAVolume, p.xrayBVolume = volumeA, volumeB
        for i, (field, volume) in enumerate((("pointsA", volumeA), ("pointsB", volumeB))):
            ijkToRas = mrml.volume_matrix(volume)
            for name, (u, v) in given.views[i]["L2"].landmarks.items():  # as the panel's Place buttons do
                setattr(p, field, logic.armPointPlacement(getattr(p, field), volume, "L2", name))
                getattr(p, field).AddControlPoint(*map(float, (ijkToRas @ [u, v, 0.0, 1.0])[:3]))
        p.usePlacedPoints, p.targetLevels, p.gauge, p.marginMm = True, "L2", "", 1.0
        client = logic.startPlan(p)
        self.assertEqual(client.wait(timeout_s=600), "done", client.reason)
        added = logic.finishPlan(client, p)
        # The fitted outline of L2 drawn on each X-ray's plane.
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLMarkupsClosedCurveNode"), 2)
        rows = logic.resultRows(added["folder"])
        self.assertEqual([(r["level"], r["side"], r["gauge"]) for r in rows], [("L2", "left", 11), ("L2", "right", 11)])
        line = added["lines"][("L2", "left")]
        for i in range(2):
            position = [0.0, 0.0, 0.0]
            line.GetNthControlPointPositionWorld(i, position)
            line.SetNthControlPointPositionWorld(i, position[0] + 4.0, position[1], position[2])
        check = logic.recheckLine(line, p)
        self.assertFalse(check["safe"])
        self.assertIn("UNSAFE", line.GetName())
