"""``spinedart build-ssm``: find the members, load them (cached), build the model, write it with
its card.

A real build is long (seconds per member per iteration), so it is resumable: loaded members
(surface + rule-based annotations) and every correspondence are cached under ``--cache``
(default: ``OUT.cache/`` beside the model), one file each; running the same command again skips
what is done. The cache is keyed by content, so a changed member or template is recomputed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_npz
from ..errors import UserError
from .build import Member, build_model
from .members import Discovery, Source, discover, generated_sources, load_member
from .model import ANNOTATIONS, annotation_array

TEMPLATE_SPACING_MM = 2.5  # marching-cubes spacing of the template (~2.9k vertices at L3)
_MEMBER_CACHE_VERSION = "member/1"


def _template_level(levels: list[str]) -> str:
    return levels[len(levels) // 2]


def template(
    level: str, spacing_mm: float = TEMPLATE_SPACING_MM
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The generator's mean vertebra of ``level`` in its anatomical frame: vertices, faces, part
    labels, annotation points. Its part labels become the model's (carried by correspondence)."""
    from ..anatomy.landmarks import annotate_mesh
    from ..anatomy.phantom import generate
    from ..anatomy.vertebra import mean_params

    ph = generate(level, 0, spacing_mm, params=mean_params(level))
    an = annotate_mesh(ph.vertices, ph.faces)
    return ph.vertices, ph.faces, ph.labels, annotation_array(an.landmarks, an.trajectories)


def _load_cached(src: Source, cache: Path | None) -> Member:
    path = None if cache is None else cache / "members" / f"{src.sha256[:16]}-{_safe(src.name)}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                if str(z["version"]) == _MEMBER_CACHE_VERSION and float(z["scale"]) == src.scale:
                    return Member(src.name, src.level, z["vertices"], z["faces"], z["annotations"], src.sha256)
        except Exception:  # torn or foreign: reload
            pass
    m = load_member(src)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_npz(
            path,
            {"vertices": m.vertices, "faces": m.faces, "annotations": m.annotations,
             "version": np.array(_MEMBER_CACHE_VERSION), "scale": np.array(src.scale)},
        )  # fmt: skip
    return m


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[-60:]


class _Bar:
    """A one-line progress bar on stderr (a build runs for minutes to hours)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.time()

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        if not self.enabled:
            return
        bar = "#" * int(20 * done / max(total, 1))
        line = f"\r{stage:<14} [{bar:<20}] {done}/{total}  {time.time() - self.t0:5.0f} s  {note[:50]:<50}"
        print(line, end="", file=sys.stderr, flush=True)
        if done == total:
            print(file=sys.stderr)


def build_ssm(
    input_path: Path | None,
    levels: list[str],
    n_modes: int,
    out: Path,
    convention: str = "totalsegmentator",
    include_abnormal: bool = False,
    mesh_units: str = "mm",
    iterations: int = 3,
    seed: int = 0,
    template_spacing_mm: float = TEMPLATE_SPACING_MM,
    cache: Path | None = None,
    progress: bool = True,
    build_command: str | None = None,
    generated: int = 0,
    generated_seeds: int = 0,
    workers: int = 1,
) -> dict[str, Any]:
    """Build and save a shape model; returns a summary (members used, skipped, excluded). ``workers``
    processes register the members (the model does not depend on their number)."""
    from ..provenance import provenance
    from .io import save_model

    out = Path(out)
    if not out.name.endswith(".npz"):
        raise UserError("the model file must end in .npz", "give e.g. --out lumbar.npz", out)
    if n_modes < 1:
        raise UserError(f"--modes {n_modes} must be at least 1", "give e.g. --modes 15")
    if not 1 <= iterations <= 20:
        raise UserError(f"--iterations {iterations} is out of range", "give 1 to 20 (default 3)")
    if not 1.0 <= template_spacing_mm <= 5.0:
        raise UserError(f"--template-spacing {template_spacing_mm} mm is out of range", "give 1 to 5 mm")
    if not 1 <= workers <= 64:
        raise UserError(f"--workers {workers} is out of range", "give 1 to the number of cores")
    if out.exists() and out.is_dir():
        raise UserError("--out is a folder", "give a file name ending in .npz", out)
    if input_path is None and generated <= 0:
        raise UserError("no members given", "give --input FOLDER|MANIFEST and/or --generated N")
    found = Discovery([], [])
    if input_path is not None:
        found = discover(input_path, levels, convention, include_abnormal, mesh_units)
    found.sources += generated_sources(levels, generated, generated_seeds)
    if len(found.sources) < n_modes + 1:
        raise UserError(
            f"{len(found.sources)} members of {levels[0]}-{levels[-1]} found, {n_modes} modes need {n_modes + 1}",
            "add members (e.g. spinedart synth or phantom) or ask for fewer --modes",
            input_path,
        )
    cache = Path(cache) if cache is not None else out.with_name(out.name[: -len(".npz")] + ".cache")
    bar = _Bar(progress)
    members = []
    for k, src in enumerate(found.sources):
        members.append(_load_cached(src, cache))
        bar("loading", k + 1, len(found.sources), src.name)
    tv, tf, tl, ta = template(_template_level(levels), template_spacing_mm)
    seeds = [s.seed for s in found.sources if s.seed is not None]
    card = {
        "levels_requested": list(levels),
        "template": {"level": _template_level(levels), "spacing_mm": template_spacing_mm, "source": "generator mean"},
        "seed": seed,
        "iterations_max": iterations,
        "seed_range": [min(seeds), max(seeds)] if seeds else None,
        "input_hashes": [{"name": s.name, "kind": s.kind, "sha256": s.sha256} for s in found.sources],
        "skipped_inputs": found.skipped,
        "build_command": build_command,
        "provenance": provenance(seed=seed),
    }
    details: dict[str, Any] = {}
    model, excluded = build_model(
        members, tv, tf, tl, ta, ANNOTATIONS, n_modes, seed=seed, iterations=iterations, card=card,
        cache_dir=cache / "correspondences", details=details, workers=workers,
        progress=lambda it, done, total, note: bar(f"iteration {it}", done, total, note),
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, out)
    # The corresponded members themselves (not shipped): what the quality report works on.
    atomic_write_npz(
        cache / "members_in_correspondence.npz",
        {"rows": details["rows"], "names": np.array(details["names"]), "levels": np.array(details["levels"])},
    )
    return {
        "model": str(out),
        "levels": list(model.levels),
        "n_members": int(model.card["n_members"]),
        "n_modes": model.n_modes,
        "variance_explained_cumulative": model.card["variance_explained_cumulative"],
        "excluded_members": excluded,
        "skipped_inputs": found.skipped,
        "cache": str(cache),
    }
