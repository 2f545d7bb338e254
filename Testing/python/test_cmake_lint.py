"""CMake lint: the extension configures and installs with the Slicer stub, and ships every file.

Configures the extension against ``Testing/SlicerStub`` (no Slicer needed), installs it into a
temporary prefix and compares the installed tree with the source tree:

- every ``.py`` (and data file) of ``SpineDARTLib/`` must reach ``qt-scripted-modules/SpineDARTLib/``;
- ``SpineDART.py`` and everything under ``SpineDART/Resources/`` must reach ``qt-scripted-modules/``;
- everything under the top-level ``Resources/`` must reach ``qt-scripted-modules/SpineDARTLib/_resources/``,
  where ``SpineDARTLib.resources`` looks first.

A failure lists exactly which files are not listed/installed, and which listed files do not exist
(with the corrected ``set(MODULE_PYTHON_SCRIPTS ...)`` block for SpineDARTLib/CMakeLists.txt).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STUB_DIR = REPO / "Testing" / "SlicerStub"
CMAKE = shutil.which("cmake")

pytestmark = pytest.mark.skipif(
    CMAKE is None, reason="cmake is not on PATH: the CMake lint needs CMake >= 3.16 (e.g. apt install cmake)"
)

IGNORED_DIR_NAMES = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".ipynb_checkpoints"}
IGNORED_FILE_NAMES = {".DS_Store", "Thumbs.db", ".gitkeep"}
IGNORED_SUFFIXES = {".pyc", ".pyo", ".swp"}
QT_SCRIPTED_MODULES_GLOB = "lib/Slicer-*/qt-scripted-modules"


# -- helpers --------------------------------------------------------------------------------------


def _files_under(folder: Path) -> list[str]:
    """Relative POSIX paths of the files under folder, without caches and editor droppings."""
    out = []
    if not folder.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIR_NAMES)
        for name in filenames:
            if name in IGNORED_FILE_NAMES or Path(name).suffix in IGNORED_SUFFIXES:
                continue
            out.append((Path(dirpath) / name).relative_to(folder).as_posix())
    return sorted(out)


def expected_install_map(repo: Path) -> dict[str, str]:
    """{source path relative to repo: installed path relative to qt-scripted-modules/}."""
    mapping = {}
    for rel in _files_under(repo / "SpineDART"):
        if rel.endswith(".py") or rel.startswith("Resources/"):
            mapping[f"SpineDART/{rel}"] = rel
    for rel in _files_under(repo / "SpineDARTLib"):
        if rel != "CMakeLists.txt":
            mapping[f"SpineDARTLib/{rel}"] = f"SpineDARTLib/{rel}"
    for rel in _files_under(repo / "Resources"):
        mapping[f"Resources/{rel}"] = f"SpineDARTLib/_resources/{rel}"
    return mapping


def _load_cmake_parser():
    """tools/extension_metadata.py (its CMake reader), imported once."""
    name = "_spinedart_tools_extension_metadata"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "extension_metadata.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def module_file_lists(cmakelists: Path) -> dict[str, list[str]]:
    """SCRIPTS and RESOURCES given to slicerMacroBuildScriptedModule() in a module CMakeLists.txt,
    with ${VAR} references to earlier set() calls expanded."""
    parser = _load_cmake_parser()
    variables: dict[str, str] = {}

    def expand(value: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), ""), value)

    lists: dict[str, list[str]] = {"SCRIPTS": [], "RESOURCES": []}
    for name, args, _line in parser.cmake_commands(cmakelists.read_text(encoding="utf-8")):
        values = [expand(v) for v, _quoted in args]
        if name == "set" and values:
            variables[values[0]] = ";".join(values[1:])
        elif name == "slicermacrobuildscriptedmodule":
            current = None
            for value in values:
                for item in (i for i in value.split(";") if i):
                    if item in ("NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE"):
                        current = item if item in lists else None
                    elif current:
                        lists[current].append(item)
    return lists


def run_cmake(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([CMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def configure(source: Path, build: Path) -> subprocess.CompletedProcess:
    return run_cmake("-S", str(source), "-B", str(build), f"-DSlicer_DIR={source / 'Testing' / 'SlicerStub'}")


def qt_scripted_modules_dir(prefix: Path) -> Path:
    found = sorted(prefix.glob(QT_SCRIPTED_MODULES_GLOB))
    assert len(found) == 1, f"expected one {QT_SCRIPTED_MODULES_GLOB} in {prefix}, found {found}"
    return found[0]


def compare_install(mapping: dict[str, str], installed: set[str]) -> tuple[list[str], list[str]]:
    """(source files that did not reach the install tree, installed files from no source file)."""
    not_installed = sorted(src for src, dst in mapping.items() if dst not in installed)
    unexpected = sorted(installed - set(mapping.values()))
    return not_installed, unexpected


def _copy_extension_tree(dest: Path) -> Path:
    """The files a configure needs (no .venv, no shipped models: Resources/ stays empty)."""
    ignore = shutil.ignore_patterns(*IGNORED_DIR_NAMES, "*.pyc")
    for folder in ("SpineDART", "SpineDARTLib", "Testing/SlicerStub"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    for name in ("CMakeLists.txt", "LICENSE", "README.md"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, dest / name)
    (dest / "Resources").mkdir()
    return dest


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def configured(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    build = tmp_path_factory.mktemp("cmake-build")
    return build, configure(REPO, build)


@pytest.fixture(scope="module")
def installed(configured, tmp_path_factory) -> Path:
    build, result = configured
    if result.returncode != 0:
        pytest.fail(f"configure failed, cannot install:\n{result.stdout}\n{result.stderr}")
    prefix = tmp_path_factory.mktemp("cmake-install")
    done = run_cmake("--install", str(build), "--prefix", str(prefix))
    assert done.returncode == 0, f"cmake --install failed:\n{done.stdout}\n{done.stderr}"
    return prefix


# -- tests ----------------------------------------------------------------------------------------


def test_configure_with_slicer_stub_succeeds(configured):
    _build, result = configured
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"configure with the Slicer stub failed:\n{output}"
    assert "Using the Slicer CMake stub" in output
    for module in ("SpineDART", "SpineDARTLib"):
        assert f"Configuring Scripted module: {module}" in output


@pytest.mark.parametrize(
    "victim",
    ["SpineDARTLib/errors.py", "SpineDART/SpineDART.py", "SpineDART/Resources/Icons/SpineDART.png"],
)
def test_configure_fails_naming_a_listed_file_that_is_missing(victim, tmp_path):
    lists = module_file_lists(REPO / victim.split("/")[0] / "CMakeLists.txt")
    rel = victim.split("/", 1)[1]
    assert rel in lists["SCRIPTS"] + lists["RESOURCES"], f"{victim} is not listed: the test premise is broken"
    tree = _copy_extension_tree(tmp_path / "src")
    (tree / victim).unlink()
    result = configure(tree, tmp_path / "build")
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"configure succeeded although {victim} is missing:\n{output}"
    words = " ".join(output.split())  # CMake wraps long messages
    assert str(tree / victim) in words, f"the error does not name {victim}:\n{output}"
    assert "given nonexistent file(s)" in words


def test_configure_fails_when_shipped_resources_folder_is_missing(tmp_path):
    tree = _copy_extension_tree(tmp_path / "src")
    (tree / "Resources").rmdir()
    result = configure(tree, tmp_path / "build")
    words = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0
    assert f"{tree / 'Resources'}: folder of shipped models and demo case is missing" in words


def test_every_source_file_is_installed(installed):
    qsm = qt_scripted_modules_dir(installed)
    installed_files = {p.relative_to(qsm).as_posix() for p in qsm.rglob("*") if p.is_file()}
    mapping = expected_install_map(REPO)
    not_installed, unexpected = compare_install(mapping, installed_files)
    message = []
    if not_installed:
        message.append(
            "not listed in any CMakeLists.txt / not installed:\n  "
            + "\n  ".join(f"{src} (expected at qt-scripted-modules/{mapping[src]})" for src in not_installed)
        )
    if unexpected:
        message.append("installed but from no source file:\n  " + "\n  ".join(unexpected))
    assert not message, "\n".join(message)
    # Byte-for-byte copies.
    for src, dst in mapping.items():
        assert (REPO / src).read_bytes() == (qsm / dst).read_bytes(), f"{src} differs from its installed copy"


def test_spinedartlib_cmakelists_lists_exactly_the_package_files():
    """The SCRIPTS list of SpineDARTLib/CMakeLists.txt, compared with the package's .py files."""
    lists = module_file_lists(REPO / "SpineDARTLib" / "CMakeLists.txt")
    listed = set(lists["SCRIPTS"]) | set(lists["RESOURCES"])
    present = {rel for rel in _files_under(REPO / "SpineDARTLib") if rel != "CMakeLists.txt"}
    py_present = sorted(rel for rel in present if rel.endswith(".py"))
    data_present = sorted(rel for rel in present if not rel.endswith(".py"))
    missing_from_list = sorted(present - listed)
    listed_but_absent = sorted(listed - present)
    if missing_from_list or listed_but_absent:
        block = "set(MODULE_PYTHON_SCRIPTS\n" + "".join(f"  {rel}\n" for rel in py_present) + "  )"
        if data_present:
            block += "\nset(MODULE_PYTHON_RESOURCES\n" + "".join(f"  {rel}\n" for rel in data_present) + "  )"
        pytest.fail(
            "SpineDARTLib/CMakeLists.txt is out of sync with the package:\n"
            f"  files not listed: {missing_from_list or 'none'}\n"
            f"  listed but absent: {listed_but_absent or 'none'}\n"
            f"corrected list:\n{block}"
        )


def test_spinedart_module_cmakelists_lists_its_files():
    lists = module_file_lists(REPO / "SpineDART" / "CMakeLists.txt")
    assert lists["SCRIPTS"] == ["SpineDART.py"]
    expected_resources = sorted(rel for rel in _files_under(REPO / "SpineDART") if rel.startswith("Resources/"))
    assert sorted(lists["RESOURCES"]) == expected_resources


def test_installed_library_finds_its_shipped_resources(installed, tmp_path):
    """Imported from the install tree, SpineDARTLib locates Resources/ at SpineDARTLib/_resources."""
    qsm = qt_scripted_modules_dir(installed)
    if not (REPO / "SpineDARTLib" / "resources.py").is_file():
        pytest.fail("SpineDARTLib/resources.py (the shipped-files locator) is missing")
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import SpineDARTLib, SpineDARTLib.resources as r;"
        "print(SpineDARTLib.__file__); print(r.resources_dir())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(qsm)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    package_file, resources_dir = result.stdout.split()
    assert Path(package_file).resolve().is_relative_to(qsm.resolve())
    assert Path(resources_dir).resolve() == (qsm / "SpineDARTLib" / "_resources").resolve()


# -- the comparison itself must catch what it is for ------------------------------------------------


def test_compare_install_reports_unlisted_and_unexpected_files(tmp_path):
    repo = tmp_path / "repo"
    for rel in (
        "SpineDART/SpineDART.py",
        "SpineDART/Resources/Icons/SpineDART.png",
        "SpineDART/CMakeLists.txt",
        "SpineDARTLib/__init__.py",
        "SpineDARTLib/geometry/new.py",
        "SpineDARTLib/CMakeLists.txt",
        "SpineDARTLib/__pycache__/x.cpython-311.pyc",
        "Resources/demo/xray_a.png",
    ):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_bytes(b"x")
    mapping = expected_install_map(repo)
    assert mapping == {
        "SpineDART/SpineDART.py": "SpineDART.py",
        "SpineDART/Resources/Icons/SpineDART.png": "Resources/Icons/SpineDART.png",
        "SpineDARTLib/__init__.py": "SpineDARTLib/__init__.py",
        "SpineDARTLib/geometry/new.py": "SpineDARTLib/geometry/new.py",
        "Resources/demo/xray_a.png": "SpineDARTLib/_resources/demo/xray_a.png",
    }
    installed = {
        "SpineDART.py",
        "Resources/Icons/SpineDART.png",
        "SpineDARTLib/__init__.py",
        "SpineDARTLib/_resources/demo/xray_a.png",
        "SpineDARTLib/stale.py",
    }
    not_installed, unexpected = compare_install(mapping, installed)
    assert not_installed == ["SpineDARTLib/geometry/new.py"]
    assert unexpected == ["SpineDARTLib/stale.py"]


def test_module_file_lists_expands_variables(tmp_path):
    cmakelists = tmp_path / "CMakeLists.txt"
    cmakelists.write_text(
        "set(MODULE_NAME Foo)\n"
        "set(MODULE_PYTHON_SCRIPTS\n  ${MODULE_NAME}.py  # the module\n  sub/bar.py\n  )\n"
        "slicerMacroBuildScriptedModule(NAME ${MODULE_NAME} SCRIPTS ${MODULE_PYTHON_SCRIPTS}\n"
        '  RESOURCES "Resources/Icons/${MODULE_NAME}.png" WITH_SUBDIR)\n',
        encoding="utf-8",
    )
    assert module_file_lists(cmakelists) == {
        "SCRIPTS": ["Foo.py", "sub/bar.py"],
        "RESOURCES": ["Resources/Icons/Foo.png"],
    }
