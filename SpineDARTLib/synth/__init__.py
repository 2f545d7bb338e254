"""The data engine: spine scenes and real CTs as cases with simulated views and 2-D labels
(``spinedart synth``)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_json
from ..errors import UserError
from ..provenance import provenance, sha256_file
from ..schemas import CASE_V1, MANIFEST_V1, load_json, validate
from .case import HU_RANGE, vertebra_record, write_case_json, write_nifti, write_views
from .ct_appearance import randomize_ct
from .views import DETECTOR_PX, protocol_views

VIEW_KINDS = ("ort", "random", "both", "separation")


def synthetic_case(
    case_dir: Path,
    case_id: str,
    target: str,
    seed: int,
    fractured: bool,
    views: str = "ort",
    detector_px: int = DETECTOR_PX,
    spacing_mm: float = 1.0,
    degraded: bool = False,
    randomized: bool = False,
    ct_appearance: bool = False,
    detailed_body: bool = False,
) -> dict[str, Any]:
    """Build one scene around ``target`` and write it as a case with its views. ``ct_appearance``
    (randomised cases only): vary the CT's bone density, texture and resolution too. ``detailed_body``:
    the torso and thorax in detail (:mod:`SpineDARTLib.anatomy.chest`; same vertebrae and labels as without)."""
    from ..anatomy.scene import build_scene
    from ..mesh_io import write_mesh

    scene = build_scene(
        target,
        seed,
        fractured=fractured,
        spacing_mm=spacing_mm,
        options={"detailed_body": True} if detailed_body else None,
    )
    hu, ct_record = scene.hu, None
    if randomized and ct_appearance:  # what the X-ray sees varies too (bone density, texture, CT resolution)
        hu, ct_record = randomize_ct(scene.hu, scene.affine, np.random.default_rng([int(seed), 13]))
    case_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "ct": write_nifti(case_dir / "ct.nii.gz", np.clip(np.round(hu), *HU_RANGE).astype(np.int16), scene.affine),
        "labels": write_nifti(case_dir / "labels.nii.gz", scene.labels, scene.affine),
    }
    (case_dir / "meshes").mkdir(exist_ok=True)
    vertebrae = []
    for v in scene.vertebrae:
        mesh_path = case_dir / "meshes" / f"{v.level}.vtp"
        write_mesh(mesh_path, v.world_vertices, v.phantom.faces, v.phantom.labels)
        pr = v.phantom.params
        vertebrae.append(
            vertebra_record(
                v.level,
                v.annotation,
                v.target,
                truncated=False,  # a scene's vertebrae are whole by construction
                fractured=pr.fracture is not None,
                fracture=None if pr.fracture is None else pr.to_dict()["fracture"],
                osteoporotic=pr.osteoporotic,
                cemented=pr.cemented,
                out_of_family=pr.warp_mm > 0,
                annotation_grid_mm=v.annotation_grid_mm,
                mesh={"path": f"meshes/{v.level}.vtp", "sha256": sha256_file(mesh_path)},
                parameters=pr.to_dict(),
            )
        )
    rng = np.random.default_rng([int(seed), 7])
    centre = scene.vertebra(target).annotation.landmarks["BC"]
    # Domain randomisation varies the detector too; protocol sets keep its 300 mm panel.
    view_list = protocol_views(centre, rng, views, px=detector_px, detector_mm=(200.0, 300.0) if randomized else None)
    doc = {
        "case_id": case_id,
        "kind": "synthetic",
        "seed": int(seed),
        "options": case_options(degraded, randomized, ct_appearance, detailed_body),
        "target_levels": [target],
        "label_ids": "totalsegmentator-v2",
        "files": files,
        "ct": {"spacing_mm": float(spacing_mm), "shape": list(scene.hu.shape), "hu_range": list(HU_RANGE)},
        "scene": _jsonable({**scene.extras, **({"ct_appearance": ct_record} if ct_record else {})}),
        "vertebrae": vertebrae,
        "views": write_views(
            case_dir, hu, scene.labels, scene.affine, view_list, vertebrae, seed, degraded, randomized
        ),
    }
    return write_case_json(case_dir, doc)


def case_options(
    degraded: bool, randomized: bool, ct_appearance: bool = False, detailed_body: bool = False
) -> dict[str, bool]:
    """The settings a case was made with (a resumed run rebuilds a case made otherwise). Randomised
    cases made before the CT's appearance was randomised lack ``ct_appearance``: they are rebuilt.
    ``detailed_body`` is recorded only when on, so cases made before it existed resume as they are."""
    options = {"degraded": bool(degraded), "randomized": bool(randomized)}
    if randomized:
        options["ct_appearance"] = bool(ct_appearance)
    if detailed_body:
        options["detailed_body"] = True
    return options


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float):
        return round(x, 4)
    return x


def _plan(seed: int, i: int, levels: list[str], fractured: float) -> tuple[str, int, bool]:
    """Case i's target level, scene seed and fracture flag: from (seed, i) alone, so a case is the
    same whatever the number of workers or cases before it."""
    rng = np.random.default_rng([int(seed), i, 99])
    target = str(rng.choice(levels))
    scene_seed = int(rng.integers(0, 2**31 - 1))
    return target, scene_seed, bool(rng.random() < fractured)


def _finished(done: Path, scene_seed: int, options: dict[str, bool]) -> dict[str, Any] | None:
    if not done.is_file():
        return None
    try:
        doc = load_json(done, CASE_V1)
    except UserError:
        return None
    return doc if doc.get("seed") == scene_seed and doc.get("options") == options else None


def _build_case(args: tuple) -> dict[str, Any]:
    """One case from its task tuple (see ``run_synth``)."""
    *positional, degraded, randomized, ct_appearance, detailed_body = args
    return synthetic_case(
        *positional, degraded=degraded, randomized=randomized, ct_appearance=ct_appearance, detailed_body=detailed_body
    )


def _case_task(args: tuple) -> dict[str, Any]:
    """One case in a worker process (one torch thread each: the cores go to the processes)."""
    import torch

    torch.set_num_threads(1)
    return _build_case(args)


def run_synth(
    out: Path,
    n: int,
    levels: list[str],
    views: str,
    seed: int,
    fractured: float = 0.0,
    detector_px: int = DETECTOR_PX,
    progress: bool = True,
    degraded: bool = False,
    randomized: bool = False,
    workers: int = 1,
    ct_appearance: bool = False,
    detailed_body: bool = False,
) -> dict[str, Any]:
    """N cases into ``out`` (+ ``manifest.json``), on ``workers`` processes. Resumes: a case whose
    case.json is already there, valid and made with the same settings is kept, so an interrupted
    run continues where it stopped. Each case depends only on (seed, its index)."""
    if n <= 0:
        raise UserError(f"--n {n} must be a positive number of cases", "give e.g. --n 20")
    if views not in VIEW_KINDS:
        raise UserError(f"--views {views!r} is unknown", "use ort, random or both")
    if not 0.0 <= fractured <= 1.0:
        raise UserError(f"--fractured {fractured} is not a probability", "give 0 to 1, e.g. 0.3")
    if workers < 1:
        raise UserError(f"--workers {workers} must be at least 1", "give e.g. --workers 2")
    out.mkdir(parents=True, exist_ok=True)
    options = case_options(degraded, randomized, ct_appearance, detailed_body)
    flags = (degraded, randomized, ct_appearance, detailed_body)
    t0 = time.time()
    docs: dict[int, dict[str, Any]] = {}
    todo = []
    plans = [_plan(seed, i, levels, fractured) for i in range(n)]
    for i, (target, scene_seed, frac) in enumerate(plans):
        case_id = f"case_{i:04d}"
        doc = _finished(out / case_id / "case.json", scene_seed, options)
        if doc is not None:
            docs[i] = doc
        else:
            todo.append((i, (out / case_id, case_id, target, scene_seed, frac, views, detector_px, *flags)))

    def record(i: int, doc: dict[str, Any]) -> None:
        docs[i] = doc
        cases = [
            {
                "case_id": f"case_{k:04d}",
                "path": f"case_{k:04d}",
                "target_levels": docs[k]["target_levels"],
                "fractured": plans[k][2],
                "seed": plans[k][1],
                "views": len(docs[k]["views"]),
            }
            for k in sorted(docs)
        ]
        write_manifest(
            out, cases, seed, n=n, levels=levels, views=views, fractured=fractured, detector_px=detector_px,
            options=options,
        )  # fmt: skip
        if progress:
            bar = "#" * int(20 * len(docs) / n)
            print(f"\r[{bar:<20}] {len(docs)}/{n} cases, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)

    for i in sorted(docs):
        record(i, docs[i])
    if workers == 1 or len(todo) <= 1:
        for i, args in todo:
            record(i, _build_case(args))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_case_task, args): i for i, args in todo}
            for fut in as_completed(futures):
                record(futures[fut], fut.result())
    if progress:
        print(file=sys.stderr)
    cases = [
        {"case_id": f"case_{k:04d}", "target_levels": docs[k]["target_levels"], "fractured": plans[k][2]}
        for k in sorted(docs)
    ]
    return {"cases": cases, "seconds": round(time.time() - t0, 1)}


def write_real_manifest(out: Path, doc: dict[str, Any], seed: int) -> None:
    """The manifest of a folder holding one converted real case."""
    case = {
        "case_id": doc["case_id"],
        "path": doc["case_id"],
        "kind": "real",
        "target_levels": doc["target_levels"],
        "views": len(doc["views"]),
    }
    write_manifest(out, [case], seed)


def write_manifest(out: Path, cases: list[dict[str, Any]], seed: int, **settings: Any) -> None:
    """``out/manifest.json`` (``spinedart.manifest/1``): the cases and the settings they were made with."""
    doc = {"schema": MANIFEST_V1, "seed": seed, **settings, "cases": cases, "provenance": provenance(seed=seed)}
    validate(doc, MANIFEST_V1, out / "manifest.json")
    atomic_write_json(out / "manifest.json", doc)
