"""Where shape-model members come from, and loading them.

``build-ssm --input`` accepts:

- a ``synth`` folder or its ``manifest.json``: every vertebra of every case (its ground-truth mesh
  and the rule-based annotations in ``case.json``);
- any folder, searched recursively for
  - generated vertebrae as the ``phantom`` command writes them (``vertebra.json`` + ``vertebra.vtp``),
  - vertebra label maps (NIfTI whose name contains ``label``, ``seg``, ``mask`` or ``msk``; ids of
    ``--label-ids``): one member per whole vertebra (a vertebra cut by the volume border or under
    half the typical volume is skipped),
  - plain meshes (``.obj .stl .ply .vtk .vtp``) whose file name names the level (``L3.obj``,
    ``patient7_T11.stl``), annotated by the ground-truth rules;
- a single label map or mesh file;

and, without any input, healthy vertebrae drawn from the generator on the fly (``--generated N``:
seeds ``START`` … ``START + N − 1``, levels in turn).

Fractured, cemented and out-of-family (warped) generated vertebrae are left out unless asked
for: a healthy-shape model is what the paper builds. Members of single-vertebra inputs must lie in
``--levels``; label maps and synth scenes hold neighbours, which are skipped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..provenance import sha256_file
from ..schemas import CASE_V1, MANIFEST_V1, VERTEBRA_V1, load_json
from .build import Member
from .model import annotation_array

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".vtk", ".vtp")
_LEVEL_IN_NAME = re.compile(r"(?:^|[^A-Za-z0-9])([TL]\d{1,2})(?=$|[^0-9])", re.IGNORECASE)
# A file name that says it is a label map (also how `bench --case-labels` folders are read).
LABEL_MAP_NAME = re.compile(r"label|seg|mask|msk", re.IGNORECASE)
# A vertebra spans 25-90 mm; a bounding-box diagonal outside this range means the wrong units.
_PLAUSIBLE_DIAGONAL_MM = (20.0, 250.0)


@dataclass
class Source:
    """One member before it is loaded: enough to name it, filter it and hash it."""

    name: str
    level: str
    kind: str  # phantom | synth | mesh | labelmap | generated
    path: Path  # the file the geometry comes from
    sha256: str
    seed: int | None = None
    annotations: np.ndarray | None = None  # by the generator's rules, when the input carries them
    label_id: int | None = None
    scale: float = 1.0  # mesh units to mm
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Discovery:
    sources: list[Source]
    skipped: list[dict[str, str]]  # {name, reason}: found but not used


def _annotations_from(doc: dict[str, Any], where: Path) -> np.ndarray:
    try:
        return annotation_array(doc["landmarks"], doc["trajectories"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError("its landmarks or trajectories are incomplete", "regenerate it", where) from exc


def _phantom(json_path: Path, root: Path) -> Source:
    doc = load_json(json_path, VERTEBRA_V1)
    mesh = json_path.parent / "vertebra.vtp"
    if not mesh.is_file():
        raise UserError("vertebra.vtp is missing beside this vertebra.json", "regenerate the phantom", json_path)
    sha = sha256_file(mesh)
    expected = doc.get("files", {}).get("vertebra.vtp", {}).get("sha256")
    if expected and expected != sha:
        raise UserError("vertebra.vtp does not match its vertebra.json (hash differs)", "regenerate the phantom", mesh)
    healthy = bool(doc.get("healthy", True)) and not doc.get("out_of_family", False)
    return Source(
        name=str(json_path.parent.relative_to(root)) if json_path.parent != root else json_path.parent.name,
        level=doc["level"],
        kind="phantom",
        path=mesh,
        sha256=sha,
        seed=int(doc["seed"]),
        annotations=_annotations_from(doc, json_path),
        notes={"healthy": healthy},
    )


def _synth(manifest: Path, levels: list[str], include_abnormal: bool, skipped: list[dict[str, str]]) -> list[Source]:
    doc = load_json(manifest, MANIFEST_V1)
    out = []
    for case in doc["cases"]:
        case_dir = manifest.parent / case.get("path", case["case_id"])
        cj = load_json(case_dir / "case.json", CASE_V1)
        for v in cj["vertebrae"]:
            name = f"{cj['case_id']}/{v['level']}"
            if v["level"] not in levels:
                continue
            why = _abnormal(v) if not include_abnormal else None
            if v.get("truncated"):
                why = "incomplete (cut by the volume border)"
            elif not v.get("mesh"):
                why = "no ground-truth mesh in case.json"
            if why:
                skipped.append({"name": name, "reason": why})
                continue
            mesh = case_dir / v["mesh"]["path"]
            sha = sha256_file(mesh) if mesh.is_file() else None
            if sha is None or sha != v["mesh"]["sha256"]:
                raise UserError("mesh is missing or does not match case.json", "regenerate the case", mesh)
            seed = (v.get("parameters") or {}).get("seed", cj.get("seed"))
            out.append(
                Source(
                    name,
                    v["level"],
                    "synth",
                    mesh,
                    sha,
                    None if seed is None else int(seed),
                    annotations=_annotations_from(v, case_dir / "case.json"),
                )  # fmt: skip
            )
    return out


def _abnormal(record: dict[str, Any]) -> str | None:
    if record.get("fractured"):
        return "fractured (use --include-abnormal to keep it)"
    if record.get("cemented"):
        return "cemented (use --include-abnormal to keep it)"
    if record.get("out_of_family"):
        return "out-of-family warp (use --include-abnormal to keep it)"
    return None


def _level_from_name(path: Path) -> str | None:
    from ..anatomy.levels import LEVELS

    stem = path.name.split(".")[0]
    found = [m.upper() for m in _LEVEL_IN_NAME.findall(stem) if m.upper() in LEVELS]
    return found[-1] if found else None


def _label_map(
    path: Path, root: Path, levels: list[str], convention: str, skipped: list[dict[str, str]]
) -> list[Source]:
    from ..labelmaps import incomplete_reason, read_label_map, vertebra_levels

    labels, A = read_label_map(path)
    present = vertebra_levels(labels, A, convention, source=str(path))
    sha = sha256_file(path)
    voxel_cm3 = abs(np.linalg.det(A[:3, :3])) / 1000.0
    out = []
    rel = str(path.relative_to(root)) if path != root else path.name
    for level, label_id in present.items():
        if level not in levels:
            continue
        name = f"{rel}:{level}"
        why = incomplete_reason(labels == label_id, level, voxel_cm3)
        if why:
            skipped.append({"name": name, "reason": why})
        else:
            out.append(Source(name, level, "labelmap", path, sha, label_id=label_id, notes={"convention": convention}))
    return out


GENERATED_SPACING_MM = 1.5  # marching-cubes spacing of generated members
RESERVED_SEEDS = 1_000_000  # benchmark scenes use seeds from here up (BENCHMARK-PROTOCOL.md)


def generated_sources(levels: list[str], n: int, seed_start: int) -> list[Source]:
    """N healthy generated vertebrae, levels in turn, seeds ``seed_start`` …; hashed by their
    drawn parameters and the package version (what determines the mesh)."""
    import hashlib
    import json

    from .. import __version__
    from ..anatomy.vertebra import sample_params

    if n < 0 or seed_start < 0 or seed_start + n > RESERVED_SEEDS:
        raise UserError(
            f"generated seeds {seed_start}..{seed_start + n - 1} leave 0..{RESERVED_SEEDS - 1}",
            f"seeds from {RESERVED_SEEDS} up are reserved for benchmarks; give --generated-seeds below that",
        )
    out = []
    for i in range(n):
        level, seed = levels[i % len(levels)], seed_start + i
        params = json.dumps(sample_params(level, seed).to_dict(), sort_keys=True)
        sha = hashlib.sha256(f"{__version__}|{GENERATED_SPACING_MM}|{params}".encode()).hexdigest()
        out.append(Source(f"generated/{level}-seed{seed}", level, "generated", Path("<generator>"), sha, seed))
    return out


def discover(
    input_path: Path,
    levels: list[str],
    convention: str = "totalsegmentator",
    include_abnormal: bool = False,
    mesh_units: str = "mm",
) -> Discovery:
    """The members under ``input_path`` whose level is in ``levels`` (see the module docstring)."""
    input_path = Path(input_path)
    if mesh_units not in ("mm", "m"):
        raise UserError(f"--mesh-units {mesh_units!r} is unknown", "use mm or m")
    if not input_path.exists():
        raise UserError("input not found", "give a folder of members or a synth manifest.json", input_path)
    skipped: list[dict[str, str]] = []
    sources: list[Source] = []
    root = input_path if input_path.is_dir() else input_path.parent
    scale = 1000.0 if mesh_units == "m" else 1.0
    if input_path.is_file():
        files = [input_path]
        if input_path.name == "manifest.json":
            return Discovery(_synth(input_path, levels, include_abnormal, skipped), skipped)
    else:
        manifest = input_path / "manifest.json"
        if manifest.is_file():
            return Discovery(_synth(manifest, levels, include_abnormal, skipped), skipped)
        files = sorted(p for p in input_path.rglob("*") if p.is_file())
    # Folders a generator wrote claim their own files (a phantom's vertebra.vtp is not a plain mesh).
    claimed = {p.parent for p in files if p.name in ("vertebra.json", "case.json", "manifest.json")}
    for p in files:
        if p.name == "manifest.json" and p != input_path:
            sources += _synth(p, levels, include_abnormal, skipped)
        elif p.name == "vertebra.json":
            src = _phantom(p, root)
            if not include_abnormal and not src.notes["healthy"]:
                skipped.append({"name": src.name, "reason": "not healthy (use --include-abnormal to keep it)"})
            else:
                sources.append(src)
        elif any(c == p.parent or c in p.parents for c in claimed):
            continue
        elif p.name.lower().endswith((".nii", ".nii.gz")) and (LABEL_MAP_NAME.search(p.name) or p == input_path):
            sources += _label_map(p, root, levels, convention, skipped)
        elif p.suffix.lower() in MESH_SUFFIXES:
            level = _level_from_name(p)
            if level is None:
                skipped.append({"name": str(p.relative_to(root)), "reason": "no level in the file name"})
                continue
            _checked_mesh(p, scale)  # cheap, and a bad mesh is refused before hours of work
            sources.append(Source(str(p.relative_to(root)), level, "mesh", p, sha256_file(p), scale=scale))
    outside = [s for s in sources if s.level not in levels]
    if outside:
        s = outside[0]
        raise UserError(
            f"member {s.name} is {s.level}, outside --levels {levels[0]}-{levels[-1]}",
            "widen --levels or move that member out of the input folder",
            s.path,
        )
    names = [s.name for s in sources]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise UserError(f"two members are both named {dup}", "give each input a distinct path")
    return Discovery(sorted(sources, key=lambda s: s.name), skipped)


def _checked_mesh(path: Path, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A closed surface of a vertebra's size, in mm; refused otherwise (correspondence needs a
    closed surface, and the wrong units would make a model of the wrong size)."""
    import trimesh

    from ..mesh_io import read_mesh

    v, f = read_mesh(path)
    v = v * scale
    diag = float(np.linalg.norm(v.max(0) - v.min(0)))
    if not _PLAUSIBLE_DIAGONAL_MM[0] <= diag <= _PLAUSIBLE_DIAGONAL_MM[1]:
        hint = "give --mesh-units m" if diag < _PLAUSIBLE_DIAGONAL_MM[0] else "check the mesh is one vertebra in mm"
        raise UserError(f"mesh spans {diag:.3g} mm, not a vertebra's size", hint, path)
    if not trimesh.Trimesh(v, f, process=False).is_watertight:
        raise UserError("mesh is not watertight (open or non-manifold edges)", "close it or leave it out", path)
    return v, f


def load_member(src: Source) -> Member:
    """The member's surface (RAS mm) and its annotation points, computed by the rules where the
    input does not carry them."""
    from ..anatomy.landmarks import annotate_mask, annotate_mesh

    if src.kind == "generated":
        from ..anatomy.phantom import generate

        ph = generate(src.level, int(src.seed), GENERATED_SPACING_MM)
        an = annotate_mesh(ph.vertices, ph.faces)
        ann = annotation_array(an.landmarks, an.trajectories)
        return Member(src.name, src.level, ph.vertices, ph.faces, ann, src.sha256)

    if src.kind == "labelmap":
        from ..labelmaps import read_label_map
        from ..meshing import crop_to_mask, mesh_from_mask

        labels, A = read_label_map(src.path)
        crop, Ac = crop_to_mask(labels == src.label_id, A)
        v, f = mesh_from_mask(crop, Ac)
        an = annotate_mask(crop, Ac)
        return Member(src.name, src.level, v, f, annotation_array(an.landmarks, an.trajectories), src.sha256)
    v, f = _checked_mesh(src.path, src.scale)
    ann = src.annotations
    if ann is None:
        an = annotate_mesh(v, f)
        ann = annotation_array(an.landmarks, an.trajectories)
    return Member(src.name, src.level, v, f, ann, src.sha256)
