"""The Slicer module (SpineDART/) checked without the Slicer application.

``SpineDART.py`` needs Qt, ``ScriptedLoadableModule`` and ``parameterNodeWrapper``, which only the
Slicer application has, so it is checked by parsing: the ``.ui`` with ``xml.etree`` and the module
with ``ast``. Each checker is a function returning a list of problems, and each is also run on a
small broken example to prove it would catch the mistake it is for.

The module's logic and its ``SpineDARTTest`` then run for real on an MRML scene of the
``slicer-core`` wheel, with minimal stand-ins for the few application-only modules the file imports.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
import re
import sys
import tomllib
import types
import typing
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MODULE_DIR = REPO / "SpineDART"
MODULE_PY = MODULE_DIR / "SpineDART.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SpineDART.ui"
ICON = MODULE_DIR / "Resources" / "Icons" / "SpineDART.png"
REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
LIBRARY = REPO / "SpineDARTLib"

PROVIDED_BY_SLICER = {"torch", "torchvision", "vtk", "numpy"}
ALLOWED_TOP_LEVEL_IMPORTS = {"slicer", "qt", "ctk", "vtk"}  # plus the standard library

# Which widget classes the parameterNodeWrapper can connect to which field types
# (Slicer's Base/Python/slicer/parameterNodeWrapper/guiConnectors.py).
WIDGET_TYPES = {
    "ctkPathLineEdit": {"pathlib.Path", "Path"},
    "ctkDirectoryButton": {"pathlib.Path", "Path"},
    "QCheckBox": {"bool"},
    "QPushButton": {"bool"},
    "QLineEdit": {"str"},
    "QTextEdit": {"str"},
    "QSpinBox": {"int"},
    "QSlider": {"int"},
    "QDoubleSpinBox": {"float"},
    "ctkSliderWidget": {"float"},
}
NODE_WIDGETS = {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"}
# Attributes parameterNodeWrapper adds to the class (wrapper.py): a field with one of these names fails.
RESERVED_PARAMETER_NAMES = {
    "parameterNode",
    "allParameters",
    "default",
    "isCached",
    "dataType",
    "getValue",
    "setValue",
    "connectGui",
    "connectParametersToGui",
    "disconnectGui",
    "StartModify",
    "EndModify",
    "AddObserver",
    "RemoveObserver",
    "Modified",
}


# -- parsing --------------------------------------------------------------------------------------


def ui_root(ui_text: str) -> ET.Element:
    return ET.fromstring(ui_text)


def ui_top_widget(root: ET.Element) -> ET.Element:
    widget = root.find("widget")
    if widget is None:
        raise AssertionError("the .ui has no top-level <widget>")
    return widget


def ui_widgets(root: ET.Element) -> dict[str, str]:
    """{objectName: class} of every widget in the .ui."""
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def ui_parameter_bindings(root: ET.Element) -> dict[str, str]:
    """{widget name: SlicerParameterName} of the widgets bound to the parameter node."""
    out = {}
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[w.get("name")] = (prop.findtext("string") or "").strip()
    return out


def class_defs(tree: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}


def _decorator_names(cls: ast.ClassDef) -> set[str]:
    names = set()
    for dec in cls.decorator_list:
        target = dec.func if isinstance(dec, ast.Call) else dec
        names.add(ast.unparse(target).split(".")[-1])
    return names


def parameter_node_classes(tree: ast.Module) -> list[ast.ClassDef]:
    return [cls for cls in class_defs(tree).values() if "parameterNodeWrapper" in _decorator_names(cls)]


def parameter_node_fields(tree: ast.Module) -> dict[str, str]:
    """{field: annotation source} of the @parameterNodeWrapper class (exactly one expected)."""
    classes = parameter_node_classes(tree)
    if len(classes) != 1:
        raise AssertionError(f"expected one @parameterNodeWrapper class, found {[c.name for c in classes]}")
    fields = {}
    for stmt in classes[0].body:
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            annotation = stmt.annotation
            if isinstance(annotation, ast.Subscript) and ast.unparse(annotation.value).endswith("Annotated"):
                annotation = annotation.slice.elts[0]
            fields[stmt.target.id] = ast.unparse(annotation)
    return fields


def ui_attribute_uses(tree: ast.Module) -> set[str]:
    """Names X used as self.ui.X anywhere in the module."""
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "ui"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }


# -- checkers (each returns a list of problems) -----------------------------------------------------


def check_root_widget(root: ET.Element) -> list[str]:
    top = ui_top_widget(root)
    problems = []
    if top.get("class") != "qMRMLWidget":
        problems.append(f"top-level widget is {top.get('class')}, not qMRMLWidget")
    if root.findtext("class") != top.get("name"):
        problems.append(f"<class> {root.findtext('class')!r} is not the top widget's name {top.get('name')!r}")
    return problems


def check_bindings(root: ET.Element, tree: ast.Module) -> list[str]:
    """Every SlicerParameterName is a field of the parameter node class, with a connectable type."""
    fields = parameter_node_fields(tree)
    widgets = ui_widgets(root)
    problems = []
    for widget, param in sorted(ui_parameter_bindings(root).items()):
        if param not in fields:
            problems.append(f"{widget}: SlicerParameterName {param!r} is not a field of the parameter node")
            continue
        cls, annotation = widgets[widget], fields[param]
        if cls in NODE_WIDGETS:
            ok = re.search(r"\bvtkMRML\w*Node\b", annotation) is not None
        elif cls in WIDGET_TYPES:
            ok = annotation in WIDGET_TYPES[cls]
        else:
            ok = cls == "QComboBox"  # any type with a Choice annotation or an enum
        if not ok:
            problems.append(f"{widget} ({cls}) cannot show parameter {param!r} of type {annotation}")
    return problems


def check_ui_names(root: ET.Element, tree: ast.Module) -> list[str]:
    widgets = ui_widgets(root)
    return [f"self.ui.{name} is not a widget in the .ui" for name in sorted(ui_attribute_uses(tree) - set(widgets))]


def check_scene_connections(root: ET.Element) -> list[str]:
    """Every qMRML* widget gets the scene from the top widget's mrmlSceneChanged signal."""
    top = ui_top_widget(root).get("name")
    connected = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("sender") == top
        and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    return [
        f"{name} ({cls}) has no mrmlSceneChanged(vtkMRMLScene*) -> setMRMLScene(vtkMRMLScene*) connection"
        for name, cls in sorted(ui_widgets(root).items())
        if cls.startswith("qMRML") and cls != "qMRMLWidget" and name not in connected
    ]


def _string_value(node: ast.expr) -> str | None:
    """A literal string, or the literal inside _("...") / translate(ctx, "...")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Call) and node.args:
        return _string_value(node.args[-1])
    if isinstance(node, ast.JoinedStr):
        return ast.unparse(node)
    return None


def module_settings(tree: ast.Module, module_name: str) -> dict[str, ast.expr]:
    """{attribute: value node} of the self.parent.<attribute> = ... lines in the module class."""
    cls = class_defs(tree).get(module_name)
    if cls is None:
        raise AssertionError(f"no class {module_name}")
    out = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Attribute)
                    and target.value.attr == "parent"
                ):
                    out[target.attr] = node.value
    return out


def check_module_settings(tree: ast.Module, module_name: str) -> list[str]:
    settings = module_settings(tree, module_name)
    problems = []
    for key in ("title", "helpText", "acknowledgementText"):
        value = _string_value(settings[key]) if key in settings else None
        if not value or not value.strip():
            problems.append(f"{module_name}: parent.{key} is missing or empty")
    for key in ("categories", "contributors"):
        node = settings.get(key)
        items = [_string_value(e) for e in node.elts] if isinstance(node, ast.List) else []
        if not items or not all(items):
            problems.append(f"{module_name}: parent.{key} must be a non-empty list of strings")
    return problems


def check_class_structure(tree: ast.Module, module_name: str) -> list[str]:
    expected_bases = {
        module_name: {"ScriptedLoadableModule"},
        f"{module_name}Widget": {"ScriptedLoadableModuleWidget", "VTKObservationMixin"},
        f"{module_name}Logic": {"ScriptedLoadableModuleLogic"},
        f"{module_name}Test": {"ScriptedLoadableModuleTest"},
    }
    classes = class_defs(tree)
    problems = []
    for name, bases in expected_bases.items():
        if name not in classes:
            problems.append(f"class {name} is missing")
        elif {ast.unparse(b).split(".")[-1] for b in classes[name].bases} != bases:
            problems.append(f"class {name} must derive from {sorted(bases)}")
    parameter_classes = [c.name for c in parameter_node_classes(tree)]
    if parameter_classes != [f"{module_name}ParameterNode"]:
        problems.append(f"expected @parameterNodeWrapper class {module_name}ParameterNode, found {parameter_classes}")
    else:
        reserved = sorted(set(parameter_node_fields(tree)) & RESERVED_PARAMETER_NAMES)
        if reserved:
            problems.append(f"parameter node fields use names the wrapper reserves: {reserved}")
    return problems


def check_top_level_imports(tree: ast.Module) -> list[str]:
    """At import time only the standard library and what Slicer provides: SpineDARTLib and its
    requirements are imported lazily, after the module has checked/installed them."""
    problems = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in ALLOWED_TOP_LEVEL_IMPORTS and top not in sys.stdlib_module_names:
                problems.append(f"line {node.lineno}: module-level import of {name} (import it where it is used)")
    return problems


def _defined_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def _library_module_file(library: Path, dotted: str) -> Path | None:
    base = library.joinpath(*dotted.split(".")) if dotted else library
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def check_library_names(tree: ast.Module, library: Path) -> list[str]:
    """Every SpineDARTLib module and name the Slicer module uses exists in the library."""
    package = library.name
    uses: set[tuple[str, str]] = set()
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            sub = node.module[len(package) + 1 :]
            for alias in node.names:
                if _library_module_file(library, f"{sub}.{alias.name}".strip(".")) is not None:
                    aliases[alias.asname or alias.name] = f"{sub}.{alias.name}".strip(".")
                else:
                    uses.add((sub, alias.name))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            uses.add((aliases[node.value.id], node.attr))
    problems = []
    for sub, name in sorted(uses):
        module_file = _library_module_file(library, sub)
        where = f"{package}.{sub}" if sub else package
        if module_file is None:
            problems.append(f"{where} does not exist")
        elif name not in _defined_names(module_file):
            problems.append(f"{where}.{name} is not defined in {module_file.relative_to(library.parent)}")
    return problems


def requirement_name(spec: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
    assert match, f"not a requirement: {spec!r}"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def read_requirements(text: str) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]


def check_requirements(requirements: list[str], pyproject_dependencies: list[str]) -> list[str]:
    problems = [
        f"{spec}: provided by Slicer or the PyTorch extension, must not be listed"
        for spec in requirements
        if requirement_name(spec) in PROVIDED_BY_SLICER
    ]
    wanted = {
        requirement_name(s): s.replace(" ", "")
        for s in pyproject_dependencies
        if requirement_name(s) not in PROVIDED_BY_SLICER
    }
    listed = {requirement_name(s): s.replace(" ", "") for s in requirements}
    for name in sorted(set(wanted) - set(listed)):
        problems.append(f"{wanted[name]} (a pyproject dependency) is missing")
    for name in sorted(set(listed) - set(wanted) - PROVIDED_BY_SLICER):
        problems.append(f"{listed[name]} is not a pyproject dependency")
    for name in sorted(set(wanted) & set(listed)):
        if wanted[name] != listed[name]:
            problems.append(f"{listed[name]} differs from pyproject's {wanted[name]}")
    return problems


# -- the real files -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ui() -> ET.Element:
    return ui_root(UI_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"), filename=str(MODULE_PY))


def test_ui_root_is_a_qmrmlwidget(ui):
    assert check_root_widget(ui) == []


def test_parameter_names_in_the_ui_are_parameter_node_fields(ui, module_tree):
    bindings = ui_parameter_bindings(ui)
    # At least the node selectors are bound to the parameter node.
    assert bindings.get("xrayAVolumeSelector") == "xrayAVolume"
    assert bindings.get("xrayBVolumeSelector") == "xrayBVolume"
    assert check_bindings(ui, module_tree) == []


def test_every_self_ui_name_is_a_widget(ui, module_tree):
    assert ui_attribute_uses(module_tree), "SpineDART.py uses no self.ui.<widget>: the parser is broken"
    assert check_ui_names(ui, module_tree) == []


def test_landmark_drop_down_lists_the_library_landmarks_in_order(ui):
    """The panel advances the drop-down by index after each placed point and takes the name before
    the first space: its items must be the library's landmarks, in the library's order."""
    from SpineDARTLib.anatomy.landmarks import LANDMARKS

    combo = next(w for w in ui.iter("widget") if w.get("name") == "landmarkComboBox")
    names = [item.find("property/string").text.split()[0] for item in combo.findall("item")]
    assert tuple(names) == LANDMARKS


def test_node_selectors_get_the_scene(ui):
    assert check_scene_connections(ui) == []


def test_module_class_describes_itself(module_tree):
    assert check_module_settings(module_tree, "SpineDART") == []
    assert check_class_structure(module_tree, "SpineDART") == []
    settings = module_settings(module_tree, "SpineDART")
    assert _string_value(settings["categories"].elts[0]) == "IGT"  # same as EXTENSION_CATEGORY
    assert _string_value(settings["contributors"].elts[0]) == "SpineDART developers"


def test_module_imports_library_lazily(module_tree):
    assert check_top_level_imports(module_tree) == []


def test_library_names_used_by_the_module_exist(module_tree):
    assert check_library_names(module_tree, LIBRARY) == []


def test_icon_is_a_128_rgba_png_drawn_by_the_generator(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    assert ICON.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with image_module.open(ICON) as img:
        assert img.format == "PNG"
        assert img.size == (128, 128)
        assert img.mode == "RGBA"
        icon = img.copy()
    pixels = np.asarray(icon)
    assert (pixels[..., 3] == 0).any() and (pixels[..., 3] == 255).any(), "needs transparent and opaque parts"
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20, "icon looks blank"
    # tools/make_icon.py redraws it (to a temporary file): same picture.
    spec = importlib.util.spec_from_file_location("_spinedart_make_icon", REPO / "tools" / "make_icon.py")
    make_icon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_icon)
    out = tmp_path / "icon.png"
    assert make_icon.main(["--out", str(out)]) == 0
    with image_module.open(out) as redrawn:
        difference = np.abs(np.asarray(redrawn, dtype=float) - pixels.astype(float))
    assert difference.mean() < 1.0, "the committed icon is not what tools/make_icon.py draws: rerun it"


def test_requirements_match_pyproject_without_slicer_provided_packages():
    requirements = read_requirements(REQUIREMENTS.read_text(encoding="utf-8"))
    assert requirements
    assert not {requirement_name(s) for s in requirements} & PROVIDED_BY_SLICER
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert check_requirements(requirements, dependencies) == []


# -- the checkers catch what they are for -----------------------------------------------------------

BAD_UI = """<?xml version="1.0" encoding="UTF-8"?>
<ui version="4.0">
 <class>Bad</class>
 <widget class="QWidget" name="Bad">
  <layout class="QVBoxLayout" name="layout">
   <item>
    <widget class="qMRMLNodeComboBox" name="volumeSelector">
     <property name="SlicerParameterName" stdset="0"><string>noSuchField</string></property>
    </widget>
   </item>
   <item>
    <widget class="ctkPathLineEdit" name="pathEdit">
     <property name="SlicerParameterName" stdset="0"><string>textField</string></property>
    </widget>
   </item>
   <item>
    <widget class="qMRMLNodeComboBox" name="connectedSelector">
     <property name="SlicerParameterName" stdset="0"><string>volume</string></property>
    </widget>
   </item>
  </layout>
 </widget>
 <connections>
  <connection>
   <sender>Bad</sender>
   <signal>mrmlSceneChanged(vtkMRMLScene*)</signal>
   <receiver>connectedSelector</receiver>
   <slot>setMRMLScene(vtkMRMLScene*)</slot>
  </connection>
 </connections>
</ui>
"""

BAD_MODULE = """
import numpy
from SpineDARTLib import mrml
from SpineDARTLib.geometry import no_such_function
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic

class Bad(ScriptedLoadableModule):
    def __init__(self, parent):
        self.parent.title = ""
        self.parent.categories = []
        self.parent.helpText = _("Help")

@parameterNodeWrapper
class BadParameterNode:
    textField: str
    volume: vtkMRMLScalarVolumeNode
    default: int

class BadWidget(ScriptedLoadableModuleWidget):
    def setup(self):
        self.ui.missingButton.enabled = True
        self.ui.volumeSelector.setCurrentNode(None)
        mrml.no_such_loader()

class BadLogic(ScriptedLoadableModuleLogic):
    pass
"""


def test_checkers_catch_a_broken_ui_and_module():
    root = ui_root(BAD_UI)
    tree = ast.parse(BAD_MODULE)
    assert check_root_widget(root) == ["top-level widget is QWidget, not qMRMLWidget"]
    assert check_bindings(root, tree) == [
        "pathEdit (ctkPathLineEdit) cannot show parameter 'textField' of type str",
        "volumeSelector: SlicerParameterName 'noSuchField' is not a field of the parameter node",
    ]
    assert check_ui_names(root, tree) == ["self.ui.missingButton is not a widget in the .ui"]
    assert check_scene_connections(root) == [
        "volumeSelector (qMRMLNodeComboBox) has no mrmlSceneChanged(vtkMRMLScene*) -> "
        "setMRMLScene(vtkMRMLScene*) connection"
    ]
    settings_problems = check_module_settings(tree, "Bad")
    assert "Bad: parent.title is missing or empty" in settings_problems
    assert "Bad: parent.categories must be a non-empty list of strings" in settings_problems
    assert "Bad: parent.contributors must be a non-empty list of strings" in settings_problems
    assert "Bad: parent.acknowledgementText is missing or empty" in settings_problems
    assert not any("helpText" in p for p in settings_problems)
    structure = check_class_structure(tree, "Bad")
    assert "class BadWidget must derive from ['ScriptedLoadableModuleWidget', 'VTKObservationMixin']" in structure
    assert "class BadTest is missing" in structure
    assert "parameter node fields use names the wrapper reserves: ['default']" in structure
    imports = check_top_level_imports(tree)
    assert [p.split(": ", 1)[1] for p in imports] == [
        "module-level import of numpy (import it where it is used)",
        "module-level import of SpineDARTLib (import it where it is used)",
        "module-level import of SpineDARTLib.geometry (import it where it is used)",
    ]
    library_problems = check_library_names(tree, LIBRARY)
    assert any("SpineDARTLib.geometry.no_such_function is not defined" in p for p in library_problems)
    assert any("SpineDARTLib.mrml.no_such_loader is not defined" in p for p in library_problems)


def test_requirements_checker_catches_slicer_packages_and_drift():
    problems = check_requirements(
        ["torch>=2.4", "numpy", "scipy>=1.10", "extra-package"], ["numpy>=1.26", "scipy>=1.11", "pydicom>=2.4"]
    )
    assert problems == [
        "torch>=2.4: provided by Slicer or the PyTorch extension, must not be listed",
        "numpy: provided by Slicer or the PyTorch extension, must not be listed",
        "pydicom>=2.4 (a pyproject dependency) is missing",
        "extra-package is not a pyproject dependency",
        "scipy>=1.10 differs from pyproject's scipy>=1.11",
    ]


# -- SpineDARTLogic and SpineDARTTest on a real MRML scene (slicer-core) --------------------------------


def _stand_in_modules(slicer) -> dict[str, types.ModuleType]:
    """Minimal stand-ins for the application-only modules SpineDART.py imports."""

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            pass

        def getParameterNode(self):  # noqa: N802 - Slicer's API name
            # As Slicer does: one singleton vtkMRMLScriptedModuleNode per module in the scene.
            scene = slicer.mrmlScene
            node = scene.GetSingletonNode("SpineDART", "vtkMRMLScriptedModuleNode")
            if node is None:
                node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
                node.SetSingletonTag("SpineDART")
                node.SetModuleName("SpineDART")
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=None):  # noqa: N802 - Slicer's API name
            pass

    class Choice:
        def __init__(self, choices):
            self.choices = list(choices)

    def parameterNodeWrapper(cls):  # noqa: N802 - Slicer's API name
        """Typed access to a vtkMRMLScriptedModuleNode, as Slicer's wrapper gives (subset): an
        Annotated field is its base type (a Choice is checked), an unset one reads its default."""
        fields, choices, defaults = {}, {}, {}
        for name, annotation in cls.__annotations__.items():
            if typing.get_origin(annotation) is typing.Annotated:
                annotation, *extras = typing.get_args(annotation)
                for extra in extras:
                    if isinstance(extra, Choice):
                        choices[name] = extra.choices
            fields[name] = annotation
            if name in cls.__dict__:
                defaults[name] = cls.__dict__[name]

        def is_node(annotation):
            return isinstance(annotation, type) and issubclass(annotation, slicer.vtkMRMLNode)

        class Wrapped:
            def __init__(self, node):
                object.__setattr__(self, "parameterNode", node)

            def __getattr__(self, name):
                if name not in fields:
                    raise AttributeError(name)
                if is_node(fields[name]):
                    return self.parameterNode.GetNodeReference(name)
                if name not in self.parameterNode.GetParameterNames():
                    return defaults.get(name, fields[name]())
                return fields[name](self.parameterNode.GetParameter(name))

            def __setattr__(self, name, value):
                if name not in fields:
                    raise AttributeError(f"{cls.__name__} has no parameter {name}")
                if is_node(fields[name]):
                    if value is not None and not isinstance(value, fields[name]):
                        raise TypeError(f"{name} must be a {fields[name].__name__}")
                    self.parameterNode.SetNodeReferenceID(name, value.GetID() if value else None)
                else:
                    if name in choices and value not in choices[name]:
                        raise ValueError(f"{name} must be one of {choices[name]}")
                    self.parameterNode.SetParameter(name, str(fields[name](value)))

            def StartModify(self):  # noqa: N802 - Slicer's API name
                return self.parameterNode.StartModify()

            def EndModify(self, wasModified):  # noqa: N802 - Slicer's API name
                return self.parameterNode.EndModify(wasModified)

        Wrapped.__name__ = cls.__name__
        return Wrapped

    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameterNodeWrapper
    wrapper.Choice = Choice
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    # The widget (the only user of Qt) is not built here: an empty module satisfies the import.
    qt = types.ModuleType("qt")
    return {
        "slicer.ScriptedLoadableModule": scripted,
        "slicer.parameterNodeWrapper": wrapper,
        "slicer.i18n": i18n,
        "qt": qt,
    }


@pytest.fixture
def spinedart_module(monkeypatch, tmp_path):
    """SpineDART.py imported on an MRML scene of the slicer-core wheel."""
    slicer = pytest.importorskip("slicer", reason="needs the slicer-core wheel (pip install slicer-core)")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("the installed 'slicer' package is not slicer-core")
    from SpineDARTLib import mrml

    for name, module in _stand_in_modules(slicer).items():
        monkeypatch.setitem(sys.modules, name, module)
    scene = mrml.new_scene(tmp_path / "cache")
    monkeypatch.setattr(slicer, "mrmlScene", scene, raising=False)
    app = types.SimpleNamespace(temporaryPath=str(tmp_path), layoutManager=lambda: None, processEvents=lambda: None)
    monkeypatch.setattr(slicer, "app", app, raising=False)
    spec = importlib.util.spec_from_file_location("SpineDART", MODULE_PY)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "SpineDART", module)
    spec.loader.exec_module(module)

    def no_install(requirements, askConfirmation):
        raise AssertionError(f"this environment lacks {requirements}: pip install -e '.[dev]'")

    monkeypatch.setattr(module.SpineDARTLogic, "_pipInstall", staticmethod(no_install))
    yield module
    mrml.release_scene(scene)


@pytest.mark.parametrize(
    "test_name",
    [
        "test_SpineDARTLoadDemoCase",
        "test_SpineDARTBadInputIsRefused",
        "test_SpineDARTPlanDemoFromPlacedPoints",
    ],
)
def test_module_self_test_runs_on_slicer_core(spinedart_module, test_name):
    case = spinedart_module.SpineDARTTest(test_name)
    result = unittest.TestResult()
    case.run(result)
    problems = [text for _test, text in result.errors + result.failures]
    assert not problems, "\n".join(problems)
    assert result.testsRun == 1 and not result.skipped


def test_logic_summarises_the_demo_views(spinedart_module):
    logic = spinedart_module.SpineDARTLogic()
    volumeA, volumeB = logic.loadDemoCase()
    text, level = logic.geometrySummary(volumeA, volumeB)
    assert level == "ok"
    lines = text.splitlines()
    assert len(lines) == 3
    for label, line in zip("AB", lines[:2], strict=True):
        assert line.startswith(f"X-ray {label} (") and "calibrated geometry" in line and "mm RAS" in line
    assert re.fullmatch(r"Angle between the views: \d+\.\d°", lines[2])
    only_a, level_a = logic.geometrySummary(volumeA, None)
    assert level_a == "ok" and "X-ray B: not loaded" in only_a

    parameterNode = logic.getParameterNode()
    parameterNode.xrayAVolume = volumeA
    assert parameterNode.xrayAVolume is volumeA
    assert spinedart_module.optionalPath(parameterNode.xrayAPath) is None  # unset Path field reads "."


def test_parameter_node_and_placed_points_survive_an_mrb_round_trip(spinedart_module, monkeypatch, tmp_path):
    """The panel's state (a vtkMRMLScriptedModuleNode: values and node references) and the points
    placed through the logic come back from an .mrb, so a reopened scene plans the same."""
    from SpineDARTLib import mrml

    slicer = spinedart_module.slicer
    logic = spinedart_module.SpineDARTLogic()
    volumeA, volumeB = logic.loadDemoCase()
    p = logic.getParameterNode()
    p.xrayAVolume, p.xrayBVolume = volumeA, volumeB
    p.targetLevels, p.gauge, p.marginMm, p.device, p.usePlacedPoints = "L2", "13", 1.5, "cpu", True
    p.pointsA = logic.armPointPlacement(None, volumeA, "L2", "PCL")
    p.pointsA.AddControlPoint(10.0, 20.0, 30.0)
    path = mrml.save_scene_mrb(slicer.mrmlScene, tmp_path / "state.mrb")
    back = mrml.load_scene_mrb(path)
    try:
        monkeypatch.setattr(slicer, "mrmlScene", back)
        q = spinedart_module.SpineDARTLogic().getParameterNode()
        assert (q.targetLevels, q.gauge, q.marginMm, q.device, q.usePlacedPoints) == ("L2", "13", 1.5, "cpu", True)
        assert q.xrayAVolume.GetName() == volumeA.GetName() and q.xrayBVolume.GetName() == volumeB.GetName()
        assert mrml.projection_from_node(q.xrayBVolume).image_size == mrml.projection_from_node(volumeB).image_size
        assert q.pointsA.GetNthControlPointLabel(0) == "L2 PCL" and q.pointsB is None
    finally:
        mrml.release_scene(back)


def test_logic_refuses_a_node_without_geometry(spinedart_module):
    logic = spinedart_module.SpineDARTLogic()
    plain = spinedart_module.slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "plain")
    volumeA, _volumeB = logic.loadDemoCase()
    text, level = logic.geometrySummary(volumeA, plain)
    assert level == "error"
    assert "X-ray B: " in text and "carries no X-ray geometry" in text


def test_dependency_check_skips_slicer_packages_and_reports_failures(spinedart_module, monkeypatch, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        "# comment\nnumpy>=1.26\ntorch\nscipy>=1.0  # installed here\nspinedart-surely-not-installed>=1\n",
        encoding="utf-8",
    )
    from SpineDARTLib import requirements as req

    logic_class = spinedart_module.SpineDARTLogic
    monkeypatch.setattr(logic_class, "requirementsPath", staticmethod(lambda: requirements))
    assert req.read_requirements(requirements) == ["scipy>=1.0", "spinedart-surely-not-installed>=1"]
    assert req.missing_requirements(requirements) == ["spinedart-surely-not-installed>=1"]
    assert any(pin.startswith("numpy==") for pin in req.constraint_pins())

    calls = []
    monkeypatch.setattr(logic_class, "_pipInstall", staticmethod(lambda reqs, ask: calls.append((reqs, ask)) or True))
    logic = logic_class()
    # "Installed" but still missing: a one-line error, not a silent success.
    with pytest.raises(RuntimeError, match="could not be installed: spinedart-surely-not-installed>=1"):
        logic.ensureLibraryDependencies(askConfirmation=True)
    assert calls == [(["spinedart-surely-not-installed>=1"], True)]
    # Declined by the user: False, nothing more.
    monkeypatch.setattr(logic_class, "_pipInstall", staticmethod(lambda reqs, ask: False))
    assert logic.ensureLibraryDependencies(askConfirmation=True) is False


def test_install_in_slicer_prefers_pip_ensure_and_pins_what_slicer_provides():
    """Slicer's installers are not in slicer-core: recording stand-ins check which one is called,
    with which constraints, and that a refusal reads as False (nothing installed)."""
    import contextlib

    from SpineDARTLib.requirements import install_in_slicer

    calls = []

    def record(name, result=None):
        def call(*args, **kwargs):
            constraints = kwargs.get("constraints") or (args[0][1] if name == "pip_install" else None)
            calls.append((name, args, kwargs, pathlib.Path(constraints).read_text() if constraints else None))
            if isinstance(result, Exception):
                raise result
            return result

        return call

    packaging = types.SimpleNamespace(pip_ensure=record("pip_ensure"))
    assert install_in_slicer(["scikit-image>=0.22"], True, None, packaging) is True
    name, args, kwargs, pins = calls.pop()
    assert name == "pip_ensure" and args == (["scikit-image>=0.22"],)
    assert kwargs["prompt_install"] is True and kwargs["requester"] == "SpineDART"
    assert "numpy==" in pins and "scikit-image" not in pins
    packaging = types.SimpleNamespace(pip_ensure=record("pip_ensure", RuntimeError("declined")))
    assert install_in_slicer(["x"], True, None, packaging) is False
    # Older Slicer: ask first; declined, nothing is installed; accepted, pip under the constraints.
    util = types.SimpleNamespace(
        confirmOkCancelDisplay=record("confirm", False),
        pip_install=record("pip_install"),
        WaitCursor=contextlib.nullcontext,
    )
    calls.clear()
    assert install_in_slicer(["x>=1"], True, util) is False and [c[0] for c in calls] == ["confirm"]
    calls.clear()
    assert install_in_slicer(["x>=1"], False, util) is True
    ((name, args, _kwargs, pins),) = calls
    assert name == "pip_install" and args[0][0] == "-c" and args[0][2:] == ["x>=1"] and "numpy==" in pins


def test_module_helpers(spinedart_module):
    m = spinedart_module
    assert m.optionalPath(None) is None
    assert m.optionalPath(pathlib.Path()) is None
    assert m.optionalPath(" ") is None
    assert m.optionalPath("/data/a.dcm") == pathlib.Path("/data/a.dcm")
    from SpineDARTLib import requirements as req

    assert req.requirement_name("Scikit_Image>=0.22") == "scikit-image"
    assert req.requirement_satisfied("pytest>=1")
    assert not req.requirement_satisfied("pytest>=999")
    from SpineDARTLib.errors import UserError

    message, details = m.describeError(UserError("no calibration", "add a sidecar", "/x/a.png"))
    assert (message, details) == ("/x/a.png: no calibration; fix: add a sidecar", None)
    try:
        raise ValueError("bad\nvalue")
    except ValueError as exc:
        message, details = m.describeError(exc)
    assert message == "ValueError: bad value"
    assert "Traceback" in details
