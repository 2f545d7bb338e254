"""The extension description files are generated from CMakeLists.txt and stay in sync with it.

``SpineDART.s4ext`` (legacy description) and ``SpineDART.json`` (ExtensionsIndex catalog entry) are
written by ``tools/extension_metadata.py --write`` from the ``set(EXTENSION_...)`` lines of the
top-level CMakeLists.txt; ``--check`` must pass on the committed files and must catch any drift.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "extension_metadata.py"
ICON = Path("SpineDART/Resources/Icons/SpineDART.png")
SCHEMA_V102 = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#"
)


@pytest.fixture(scope="module")
def tool():
    name = "_spinedart_tools_extension_metadata"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOOL)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_tool(*args: str) -> subprocess.CompletedProcess:
    """The command line, in a fresh interpreter."""
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120, check=False)


def call_tool(tool, *args: str) -> subprocess.CompletedProcess:
    """The command line's main(), in this interpreter (fast)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = tool.main(list(args))
        except SystemExit as exc:  # argparse
            code = exc.code
    return subprocess.CompletedProcess(["extension_metadata.py", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of what the generator reads and writes."""
    for rel in ("CMakeLists.txt", "SpineDART.s4ext", "SpineDART.json", ICON.as_posix()):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, tmp_path / rel)
    return tmp_path


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# -- the committed files --------------------------------------------------------------------------


def test_check_passes_on_the_repository():
    result = run_tool("--check")
    assert result.returncode == 0, result.stderr
    assert "in sync" in result.stdout


def test_catalog_entry_follows_the_catalog_schema(tool):
    entry = json.loads((REPO / "SpineDART.json").read_text(encoding="utf-8"))
    assert tool.validate_catalog(entry) == []
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft7Validator.check_schema(tool.CATALOG_SCHEMA)
    jsonschema.validate(entry, tool.CATALOG_SCHEMA)
    # The essential keys, with the values this extension needs.
    assert entry["$schema"] == SCHEMA_V102
    assert entry["category"] == "IGT"
    assert entry["scm_url"] == "https://github.com/spinedart/SlicerSpineDART.git"
    assert entry["scm_revision"]
    assert entry.get("scm_type", "git") == "git"
    assert "PyTorch" in entry["build_dependencies"]
    assert entry["build_subdirectory"] == "."
    assert set(entry) <= set(tool.CATALOG_SCHEMA["properties"])


def test_s4ext_matches_cmake_metadata(tool):
    fields = tool.parse_s4ext((REPO / "SpineDART.s4ext").read_text(encoding="utf-8"))
    _name, variables = tool.read_cmake_metadata(REPO / "CMakeLists.txt")
    assert fields["depends"] == "PyTorch"
    assert variables["EXTENSION_DEPENDS"] == ["PyTorch"]
    assert fields["category"] == variables["EXTENSION_CATEGORY"][0] == "IGT"
    assert fields["homepage"] == "https://github.com/spinedart/SlicerSpineDART"
    assert fields["scmurl"] == json.loads((REPO / "SpineDART.json").read_text())["scm_url"]
    assert fields["iconurl"].endswith("/" + ICON.as_posix())
    assert "\n" not in fields["description"] and len(fields["description"]) > 80


def test_cmake_metadata_is_read_like_cmake(tool, tmp_path):
    cmakelists = tmp_path / "CMakeLists.txt"
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    cmakelists.write_text(
        text.replace("set(EXTENSION_DEPENDS PyTorch)", 'set(EXTENSION_DEPENDS "PyTorch;SlicerIGT") # two'),
        encoding="utf-8",
    )
    _name, variables = tool.read_cmake_metadata(cmakelists)
    assert variables["EXTENSION_DEPENDS"] == ["PyTorch", "SlicerIGT"]
    commands = tool.cmake_commands('# set(EXTENSION_X "no")\nset(A "b \\"c\\" (d)" e) #[[ set(B c) ]]\n')
    assert commands == [("set", [("A", False), ('b "c" (d)', True), ("e", False)], 2)]


# -- drift is detected ---------------------------------------------------------------------------


def test_check_detects_a_changed_cmake_value_and_write_repairs_it(tool, checkout):
    assert call_tool(tool, "--check", "--root", str(checkout)).returncode == 0
    _edit(checkout / "CMakeLists.txt", 'set(EXTENSION_CATEGORY "IGT")', 'set(EXTENSION_CATEGORY "Segmentation")')
    result = call_tool(tool, "--check", "--root", str(checkout))
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 or errors[1:] == [e for e in errors[1:] if "note:" in e], result.stderr
    line = errors[0]
    assert "SpineDART.json" in line and "SpineDART.s4ext" in line
    assert "category" in line and "'IGT'" in line and "'Segmentation'" in line
    assert "--write" in line

    fixed = call_tool(tool, "--write", "--root", str(checkout))
    assert fixed.returncode == 0, fixed.stderr
    assert json.loads((checkout / "SpineDART.json").read_text())["category"] == "Segmentation"
    assert "category Segmentation" in (checkout / "SpineDART.s4ext").read_text()
    assert call_tool(tool, "--check", "--root", str(checkout)).returncode == 0


def test_check_detects_hand_edits_of_the_generated_files(tool, checkout):
    entry = json.loads((checkout / "SpineDART.json").read_text())
    entry["scm_revision"] = "master"
    entry["homepage"] = "https://example.org"  # not a catalog property
    (checkout / "SpineDART.json").write_text(json.dumps(entry, indent=2) + "\n")
    _edit(checkout / "SpineDART.s4ext", "depends PyTorch", "depends NA")
    result = call_tool(tool, "--check", "--root", str(checkout))
    assert result.returncode == 1
    line = result.stderr.splitlines()[0]
    assert "scm_revision" in line and "'master'" in line
    assert "homepage" in line and "additional" in line.lower()
    assert "depends" in line


def test_check_detects_a_deleted_or_reformatted_file(tool, checkout):
    (checkout / "SpineDART.s4ext").unlink()
    text = (checkout / "SpineDART.json").read_text()
    (checkout / "SpineDART.json").write_text(json.dumps(json.loads(text)) + "\n")  # same content, one line
    line = call_tool(tool, "--check", "--root", str(checkout)).stderr.splitlines()[0]
    assert "SpineDART.s4ext missing" in line
    assert "SpineDART.json (comments or formatting differ)" in line


def test_unusable_metadata_is_a_one_line_error(tool, checkout):
    _edit(checkout / "CMakeLists.txt", 'set(EXTENSION_CATEGORY "IGT")', "set(EXTENSION_CATEGORY ${MY_CATEGORY})")
    result = call_tool(tool, "--check", "--root", str(checkout))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "EXTENSION_CATEGORY uses a variable" in result.stderr

    _edit(checkout / "CMakeLists.txt", "set(EXTENSION_CATEGORY ${MY_CATEGORY})", "")
    result = call_tool(tool, "--write", "--root", str(checkout))
    assert result.returncode == 2 and "missing or empty EXTENSION_CATEGORY" in result.stderr


def test_icon_url_must_point_at_the_icon(tool, checkout):
    (checkout / ICON).unlink()
    result = call_tool(tool, "--check", "--root", str(checkout))
    assert result.returncode == 1
    assert "EXTENSION_ICONURL" in result.stderr and ICON.as_posix() in result.stderr


def test_bad_arguments_are_one_line():
    result = run_tool()
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "error:" in result.stderr


# -- the validator rejects what the catalog rejects ---------------------------------------------------


BAD_ENTRIES = {
    "no scm_url": {"$schema": SCHEMA_V102, "category": "IGT"},
    "extra key": {"$schema": SCHEMA_V102, "category": "IGT", "scm_url": "u", "description": "x"},
    "tier out of range": {"$schema": SCHEMA_V102, "category": "IGT", "scm_url": "u", "tier": 7},
    "unknown scm": {"$schema": SCHEMA_V102, "category": "IGT", "scm_url": "u", "scm_type": "svn"},
    "dependencies not strings": {"$schema": SCHEMA_V102, "category": "IGT", "scm_url": "u", "build_dependencies": [1]},
    "enabled not boolean": {"$schema": SCHEMA_V102, "category": "IGT", "scm_url": "u", "enabled": 1},
}


@pytest.mark.parametrize("with_jsonschema", [True, False], ids=["jsonschema", "fallback"])
@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_validator_rejects_bad_entries(tool, monkeypatch, case, with_jsonschema):
    if with_jsonschema:
        pytest.importorskip("jsonschema")
    else:
        monkeypatch.setitem(sys.modules, "jsonschema", None)  # import fails: the written-out rules
    assert tool.validate_catalog(BAD_ENTRIES[case]), f"{case} was accepted"
    good = {"$schema": SCHEMA_V102, "category": "IGT", "scm_url": "u", "tier": 1, "build_dependencies": ["PyTorch"]}
    assert tool.validate_catalog(good) == []
