"""Draw the SpineDART module and extension icon (128x128 RGBA PNG).

A lumbar vertebra seen from above (axial view, anterior up): the vertebral body, the two pedicles,
the laminae, the spinous process and the transverse processes, with two cannulas entering through
the pedicles and converging in the anterior third of the body, as in bipedicular vertebroplasty.

    python tools/make_icon.py            # writes SpineDART/Resources/Icons/SpineDART.png
    python tools/make_icon.py --out x.png

Drawn at 4x and downsampled for anti-aliasing; the output is deterministic.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 128
SCALE = 4  # supersampling factor

BONE = (236, 226, 200, 255)
BONE_SHADE = (214, 198, 160, 255)
OUTLINE = (92, 76, 52, 255)
CANAL = (0, 0, 0, 0)
STEEL = (70, 110, 170, 255)
STEEL_LIGHT = (170, 200, 235, 255)
HANDLE = (214, 64, 52, 255)

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "SpineDART" / "Resources" / "Icons" / "SpineDART.png"


def _s(*xy: float) -> list[float]:
    """Icon coordinates (0..128) to supersampled canvas coordinates."""
    return [v * SCALE for v in xy]


def _polygon(draw: ImageDraw.ImageDraw, points: list[tuple[float, float]], fill, outline, width) -> None:
    flat = [c * SCALE for p in points for c in p]
    draw.polygon(flat, fill=fill)
    draw.line(flat + flat[:2], fill=outline, width=round(width * SCALE), joint="curve")


def _needle(draw: ImageDraw.ImageDraw, tip: tuple[float, float], angle_deg: float, length: float) -> None:
    """A cannula from its tip backwards along angle_deg (0 = pointing up), with a handle."""
    a = math.radians(angle_deg)
    dx, dy = math.sin(a), -math.cos(a)
    tail = (tip[0] - dx * length, tip[1] - dy * length)
    draw.line(_s(*tail, *tip), fill=OUTLINE, width=round(4.6 * SCALE))
    draw.line(_s(*tail, *tip), fill=STEEL, width=round(3.0 * SCALE))
    # highlight along the shaft
    off = 0.6
    draw.line(
        _s(tail[0] - dy * off, tail[1] + dx * off, tip[0] - dy * off, tip[1] + dx * off),
        fill=STEEL_LIGHT,
        width=round(0.9 * SCALE),
    )
    # handle: a short wide bar across the shaft at the tail
    px, py = -dy, dx  # perpendicular
    h = 6.0
    draw.line(
        _s(tail[0] - px * h, tail[1] - py * h, tail[0] + px * h, tail[1] + py * h),
        fill=OUTLINE,
        width=round(6.0 * SCALE),
    )
    draw.line(
        _s(
            tail[0] - px * (h - 0.8),
            tail[1] - py * (h - 0.8),
            tail[0] + px * (h - 0.8),
            tail[1] + py * (h - 0.8),
        ),
        fill=HANDLE,
        width=round(4.2 * SCALE),
    )


def draw_icon() -> Image.Image:
    img = Image.new("RGBA", (SIZE * SCALE, SIZE * SCALE), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    ow = 2.0  # outline width in icon pixels

    # Transverse processes (behind the arch), left and right.
    for sgn in (-1, 1):
        cx = 64 + sgn * 30
        pts = [
            (64 + sgn * 14, 70),
            (cx + sgn * 22, 66),
            (cx + sgn * 25, 71),
            (cx + sgn * 22, 76),
            (64 + sgn * 14, 80),
        ]
        _polygon(d, pts, BONE_SHADE, OUTLINE, ow)

    # Spinous process, pointing posteriorly (down).
    _polygon(d, [(58, 88), (70, 88), (67, 121), (64, 124), (61, 121)], BONE_SHADE, OUTLINE, ow)

    # Posterior arch: pedicles + laminae around the vertebral canal.
    _polygon(d, [(44, 52), (84, 52), (90, 74), (78, 94), (64, 98), (50, 94), (38, 74)], BONE, OUTLINE, ow)
    # Vertebral canal.
    d.ellipse(_s(51, 62, 77, 88), fill=OUTLINE)
    d.ellipse(_s(53, 64, 75, 86), fill=CANAL)

    # Vertebral body (kidney-shaped ellipse), anterior up.
    d.ellipse(_s(26, 8, 102, 62), fill=OUTLINE)
    d.ellipse(_s(28, 10, 100, 60), fill=BONE)
    # Cancellous texture: a darker inner ring.
    d.ellipse(_s(36, 17, 92, 53), outline=BONE_SHADE, width=round(3 * SCALE))
    # Posterior wall notch where the canal meets the body.
    d.chord(_s(50, 52, 78, 70), 180, 360, fill=OUTLINE)
    d.chord(_s(52, 55, 76, 70), 180, 360, fill=BONE)

    # Two cannulas entering through the pedicles and converging in the anterior body.
    # The left one comes from posterolateral left (bottom left), the right one mirrors it.
    _needle(d, tip=(59.0, 26.0), angle_deg=22.0, length=88.0)
    _needle(d, tip=(69.0, 26.0), angle_deg=-22.0, length=88.0)

    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output PNG (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    img = draw_icon()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    img.save(tmp, format="PNG", optimize=True)
    tmp.replace(args.out)
    print(f"wrote {args.out} ({img.width}x{img.height} {img.mode})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
