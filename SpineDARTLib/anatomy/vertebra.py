"""Procedural vertebrae: level- and seed-driven signed-distance models, meshed by marching cubes.

Frame: the vertebra's anatomical frame in RAS mm — origin near the body centre, +x patient right,
+y anterior, +z cranial. Parts (body, pedicles, laminae, spinous process, transverse and articular
processes) are signed-distance primitives joined by smooth unions; the canal, an elliptic cylinder
through the whole vertebra, is subtracted last, which makes the surface a genus-1 solid (tested).
Dimensions come from the morphometry table (:mod:`.levels`) with a shared size factor, so they
correlate as in real spines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import UserError
from . import sdf
from .levels import MORPHOMETRY, check_level, is_thoracic, sp_inclination_deg

PART_NAMES = (
    "body",
    "pedicle_left",
    "pedicle_right",
    "laminae",
    "spinous_process",
    "transverse_process_left",
    "transverse_process_right",
    "articular_processes",
    "canal_wall",
)
FRACTURE_TYPES = ("wedge", "biconcave", "crush")
# Genant grades: height loss ~20–25 % (1), 25–40 % (2), > 40 % (3); a value inside each band.
GENANT_HEIGHT_LOSS = {1: (0.20, 0.25), 2: (0.25, 0.40), 3: (0.40, 0.55)}

SIZE_CV = 0.08  # shared size factor (all lengths scale together)
LENGTH_CV = 0.05  # each length on top of it
ANGLE_SD_DEG = 3.5
WARP_MAX_MM = 5.0  # out-of-family warps: largest amplitude that stays a diffeomorphism (see Warp)
_UNION_K = 2.0  # fillet size of the smooth unions (mm)


@dataclass(frozen=True)
class Fracture:
    kind: str  # wedge | biconcave | crush
    grade: int  # Genant 1-3
    height_loss: float  # fraction of the affected height lost

    @classmethod
    def parse(cls, text: str, rng: np.random.Generator) -> Fracture:
        """``wedge:2`` → a wedge fracture of Genant grade 2 with a height loss drawn in its band."""
        try:
            kind, grade_s = str(text).split(":")
            grade = int(grade_s)
        except ValueError as exc:
            raise UserError(
                f"fracture {text!r} is not TYPE:GRADE", "write e.g. wedge:2 (wedge|biconcave|crush, 1-3)"
            ) from exc
        if kind not in FRACTURE_TYPES or grade not in GENANT_HEIGHT_LOSS:
            raise UserError(f"fracture {text!r} is unknown", "use wedge, biconcave or crush with a Genant grade 1-3")
        lo, hi = GENANT_HEIGHT_LOSS[grade]
        return cls(kind, grade, float(rng.uniform(lo, hi)))


@dataclass(frozen=True)
class VertebraParams:
    level: str
    seed: int
    size_factor: float
    body_width: float
    body_depth: float
    body_height: float  # posterior
    wedge_deg: float  # physiological: anterior height = posterior − depth·tan(wedge)
    endplate_concavity: float
    pedicle_width: float
    pedicle_height: float
    pedicle_transverse_deg: float
    pedicle_sagittal_deg: float
    canal_width: float
    canal_depth: float
    tp_span: float
    sp_length: float
    sp_inclination_deg: float
    lamina_thickness: float
    cortex_mm: float
    cortical_hu: float
    cancellous_hu: float
    fracture: Fracture | None = None
    osteoporotic: bool = False
    cemented: bool = False
    warp_mm: float = 0.0  # out-of-family: amplitude of a smooth random non-linear warp (0 = none)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def thoracic(self) -> bool:
        return is_thoracic(self.level)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fracture"] = None if self.fracture is None else asdict(self.fracture)
        return d


def sample_params(
    level: str,
    seed: int,
    fracture: str | None = None,
    osteoporotic: bool = False,
    cemented: bool = False,
    warp_mm: float = 0.0,
    size_factor: float | None = None,
) -> VertebraParams:
    """Draw a vertebra of ``level`` (deterministic for a seed). ``warp_mm`` > 0 adds a smooth random
    non-linear warp of that amplitude (an out-of-family shape for stress tests). ``size_factor``
    replaces the drawn one (a spine's vertebrae share one, as neighbours correlate in size)."""
    level = check_level(level)
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise UserError(f"seed {seed!r} is not a non-negative integer", "give e.g. --seed 7")
    if not (np.isfinite(warp_mm) and 0.0 <= warp_mm <= WARP_MAX_MM):
        raise UserError(f"warp amplitude {warp_mm} mm is out of range", f"give 0 to {WARP_MAX_MM:g} mm")
    rng = np.random.default_rng([int(seed), 17 + list(MORPHOMETRY).index(level)])
    if size_factor is not None and not (np.isfinite(size_factor) and 0.5 <= size_factor <= 1.5):
        raise UserError(f"size factor {size_factor} is out of range", "give 0.5 to 1.5")
    return _draw(level, int(seed), rng, fracture, osteoporotic, cemented, warp_mm, size_factor)


def mean_params(level: str) -> VertebraParams:
    """The population's mean vertebra of ``level``: every length at its table mean, every angle at
    its mean, HU at the middle of their ranges (seed 0, healthy, no warp)."""
    return _draw(check_level(level), 0, None)


def _draw(
    level: str,
    seed: int,
    rng: np.random.Generator | None,
    fracture: str | None = None,
    osteoporotic: bool = False,
    cemented: bool = False,
    warp_mm: float = 0.0,
    size_factor: float | None = None,
) -> VertebraParams:
    """Parameters from the morphometry table with the population's variation drawn from ``rng``
    (``rng`` None: the mean, no variation)."""

    def normal(mean: float, sd: float, lo: float, hi: float) -> float:
        return mean if rng is None else float(np.clip(rng.normal(mean, sd), lo, hi))

    def uniform(lo: float, hi: float) -> float:
        return 0.5 * (lo + hi) if rng is None else float(rng.uniform(lo, hi))

    m = MORPHOMETRY[level]
    size = normal(1.0, SIZE_CV, 0.75, 1.3)  # drawn even when replaced: the stream stays the same
    if size_factor is not None:
        size = float(size_factor)

    def length(mean: float) -> float:
        return float(mean * size * normal(1.0, LENGTH_CV, 0.8, 1.2))

    def angle(mean: float, sd: float = ANGLE_SD_DEG) -> float:
        return float(mean + normal(0.0, sd, -2.5 * sd, 2.5 * sd))

    thoracic = is_thoracic(level)
    frac = None if fracture is None else Fracture.parse(fracture, rng)
    return VertebraParams(
        level=level,
        seed=seed,
        size_factor=size,
        body_width=length(m.body_width),
        body_depth=length(m.body_depth),
        body_height=length(m.body_height_posterior),
        wedge_deg=angle(3.0 if thoracic else 1.0, 1.5),
        endplate_concavity=normal(1.5, 0.3, 0.8, 2.5),
        pedicle_width=length(m.pedicle_width),
        pedicle_height=length(m.pedicle_height),
        pedicle_transverse_deg=angle(m.pedicle_transverse_deg),
        pedicle_sagittal_deg=angle(m.pedicle_sagittal_deg),
        canal_width=length(m.canal_width),
        canal_depth=length(m.canal_depth),
        tp_span=length(m.tp_span),
        sp_length=length(m.sp_length),
        sp_inclination_deg=angle(sp_inclination_deg(level), 4.0),
        lamina_thickness=length(5.5 if thoracic else 8.0),
        cortex_mm=normal(1.0, 0.15, 0.6, 1.5),
        cortical_hu=uniform(1000, 1500),
        cancellous_hu=uniform(50, 120) if osteoporotic else uniform(200, 300),
        fracture=frac,
        osteoporotic=bool(osteoporotic),
        cemented=bool(cemented),
        warp_mm=float(warp_mm),
    )


class Warp:
    """A smooth random displacement field u(p) = Σ a_k sin(ω_k·p + φ_k), k = 1..4, with
    wavelengths 40–80 mm (a vertebra-sized bend, not a ripple). The shape is drawn through
    sdf(p − u(p)): while ‖∂u/∂p‖ < 1 the map p ↦ p − u(p) is a diffeomorphism, so the warped
    solid keeps its topology (genus 1). ‖∂u/∂p‖ ≤ Σ |a_k|·|ω_k| ≤ WARP_MAX_MM·2π/40 ≈ 0.79 for
    any seed (the amplitudes split the total over the N terms)."""

    N = 4
    WAVELENGTH_MM = (40.0, 80.0)

    def __init__(self, amplitude_mm: float, seed: int) -> None:
        rng = np.random.default_rng([int(seed), 4242])
        dirs = rng.normal(size=(self.N, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        self.omega = dirs * (2 * np.pi / rng.uniform(*self.WAVELENGTH_MM, size=(self.N, 1)))
        self.phase = rng.uniform(0, 2 * np.pi, size=self.N)
        a = rng.normal(size=(self.N, 3))
        # Each component's amplitude vector, scaled so the summed displacement has ``amplitude_mm``
        # at most (triangle inequality over the N terms).
        self.amp = a / np.linalg.norm(a, axis=1, keepdims=True) * (amplitude_mm / self.N)

    def max_gradient(self) -> float:
        """Upper bound of the spectral norm of ∂u/∂p over all of space."""
        return float(sum(np.linalg.norm(a) * np.linalg.norm(w) for a, w in zip(self.amp, self.omega, strict=True)))

    def __call__(self, p: np.ndarray) -> np.ndarray:
        return np.sin(p @ self.omega.T + self.phase) @ self.amp


class VertebraSDF:
    """The signed-distance model of one vertebra: ``parts(p)`` and ``__call__(p)``."""

    def __init__(self, params: VertebraParams) -> None:
        self.p = params
        pr = params
        self.warp = Warp(pr.warp_mm, pr.seed) if pr.warp_mm > 0 else None
        D, H = pr.body_depth, pr.body_height
        cw, cd = pr.canal_width, pr.canal_depth
        # Body: an ellipse in plan whose posterior side is cut flat at y = −D/2 (the posterior wall).
        self.body_b = D / 1.85
        self.body_yc = D / 2 - self.body_b
        self.wedge_delta = np.tan(np.radians(pr.wedge_deg)) / 2  # endplate slope per mm of y
        self.canal_yc = -D / 2 - cd / 2 + 0.5
        self.post_scale = 1.0  # posterior body height factor after a fracture
        if pr.fracture is not None and pr.fracture.kind == "crush":
            self.post_scale = 1.0 - pr.fracture.height_loss
        z_bot = -H / 2
        zp_nominal = H / 2 - pr.pedicle_height / 2 - (1.0 if pr.thoracic else 2.0)
        self.pedicle_z = z_bot + (max(zp_nominal, 0.0) - z_bot) * self.post_scale
        self.lamina_z = (self.pedicle_z + pr.pedicle_height / 2 + 1.0, self.pedicle_z - 0.55 * H)
        self.isthmus = {}
        self.pedicle_axis = {}
        for side, sx in (("left", -1.0), ("right", 1.0)):
            th, sg = np.radians(pr.pedicle_transverse_deg), np.radians(pr.pedicle_sagittal_deg)
            # Anterior-going axis: medial by the transverse angle, caudal by the sagittal angle.
            d = np.array([-sx * np.sin(th) * np.cos(sg), np.cos(th) * np.cos(sg), -np.sin(sg)])
            iso = np.array([sx * (cw / 2 + 0.45 * pr.pedicle_width), self.canal_yc + 0.15 * cd, self.pedicle_z])
            self.isthmus[side] = iso
            self.pedicle_axis[side] = d

    # --- parts -------------------------------------------------------------------------------
    def _body(self, p: np.ndarray) -> np.ndarray:
        pr = self.p
        W, D, H = pr.body_width, pr.body_depth, pr.body_height
        q = p
        f = pr.fracture
        if f is not None:
            # Height factor per point (posterior wall kept for wedge/biconcave), scaled about the
            # inferior endplate: the superior endplate collapses.
            yn = np.clip((p[:, 1] + D / 2) / D, 0.0, 1.0)
            if f.kind == "wedge":
                s = 1.0 - f.height_loss * yn
            elif f.kind == "biconcave":
                r2 = (p[:, 0] / (W / 2)) ** 2 + ((p[:, 1] - self.body_yc) / self.body_b) ** 2
                s = 1.0 - f.height_loss * np.clip(1.0 - r2, 0.0, 1.0)
            else:
                s = np.full(len(p), 1.0 - f.height_loss)
            q = p.copy()
            q[:, 2] = -H / 2 + (p[:, 2] + H / 2) / s
        ell = sdf.elliptic_cylinder_z(q, (0.0, self.body_yc), W / 2, self.body_b)
        post = sdf.plane(q, (0.0, -D / 2, 0.0), (0.0, -1.0, 0.0))
        top = sdf.plane(q, (0.0, -D / 2, H / 2), (0.0, self.wedge_delta, 1.0))
        bottom = sdf.plane(q, (0.0, -D / 2, -H / 2), (0.0, self.wedge_delta, -1.0))
        body = sdf.smooth_intersection(sdf.smooth_intersection(ell, post, 2.0), np.maximum(top, bottom), 1.5)
        # Endplate concavities: shallow dishes in both endplates.
        c = pr.endplate_concavity
        for sign in (1.0, -1.0):
            zc = sign * (H / 2 - self.wedge_delta * D / 2 + 4.0 - c)
            dish = sdf.ellipsoid(q, (0.0, self.body_yc, zc), (0.36 * W, 0.36 * D, 4.0))
            body = sdf.smooth_subtraction(body, dish, 1.0)
        if self.p.thoracic:  # costal demifacets at the posterolateral corners
            for sx in (-1.0, 1.0):
                for sz in (-1.0, 1.0):
                    body = sdf.smooth_subtraction(body, sdf.sphere(q, (sx * 0.5 * W, -0.3 * D, sz * 0.5 * H), 3.0), 0.8)
        return body

    def _pedicle(self, p: np.ndarray, side: str) -> np.ndarray:
        pr = self.p
        iso, d = self.isthmus[side], self.pedicle_axis[side]
        t_front = (-pr.body_depth / 2 + 5.0 - iso[1]) / d[1]
        a = iso + t_front * d
        b = iso - 0.45 * pr.canal_depth * d
        return sdf.elliptic_segment(p, a, b, pr.pedicle_width / 2, pr.pedicle_height / 2, round_mm=1.5)

    def _laminae(self, p: np.ndarray) -> np.ndarray:
        pr = self.p
        cw, cd, t = pr.canal_width, pr.canal_depth, pr.lamina_thickness
        ring = sdf.elliptic_cylinder_z(p, (0.0, self.canal_yc), cw / 2 + t, cd / 2 + t)
        z_top, z_bot = self.lamina_z
        slab = np.maximum(p[:, 2] - z_top, z_bot - p[:, 2])
        front = sdf.plane(p, (0.0, self.canal_yc + 0.2 * cd, 0.0), (0.0, 1.0, 0.0))
        return sdf.smooth_intersection(sdf.smooth_intersection(ring, slab, 1.5), front, 1.5)

    def _spinous(self, p: np.ndarray) -> np.ndarray:
        pr = self.p
        phi = np.radians(pr.sp_inclination_deg)
        start = np.array([0.0, self.canal_yc - pr.canal_depth / 2 - pr.lamina_thickness / 2, np.mean(self.lamina_z)])
        direction = np.array([0.0, -np.cos(phi), -np.sin(phi)])
        up = np.array([0.0, -np.sin(phi), np.cos(phi)])
        R = np.stack([np.array([1.0, 0.0, 0.0]), direction, up], axis=1)
        height = (0.6 if not pr.thoracic else 0.3) * pr.body_height
        # Lumbar: the table's spinous-process length is read as running from the canal's anterior
        # border to the tip of the process as drawn here (its box starts inside the laminae), which
        # brings the generated AP lengths to the VHP lumbar ones. Thoracic: no real thoracic shape
        # to calibrate against here, so the full length is kept.
        length = pr.sp_length
        if not pr.thoracic:
            length = max(pr.sp_length - pr.canal_depth, 0.45 * pr.sp_length)
        centre = start + direction * length / 2
        half_width = 2.6 if pr.thoracic else 3.2
        return sdf.rounded_box(p, centre, (half_width, length / 2, height / 2), R, radius=2.2)

    def _transverse(self, p: np.ndarray, side: str) -> np.ndarray:
        pr = self.p
        sx = -1.0 if side == "left" else 1.0
        x0 = pr.canal_width / 2 + 0.5 * pr.pedicle_width
        y0 = self.canal_yc + 0.05 * pr.canal_depth
        z0 = self.pedicle_z + (1.5 if pr.thoracic else 0.0)
        reach = pr.tp_span / 2 - x0
        back = np.tan(np.radians(35.0)) * reach if pr.thoracic else 3.0
        a = np.array([sx * x0, y0, z0])
        # Thoracic: the capsule's 4 mm end cap carries the tip to the span; lumbar: the bar's flat
        # rounded end sits at the span (it used to stop 3.5 mm short a side: TP spans 7 mm short).
        b = np.array([sx * (pr.tp_span / 2 - (3.5 if pr.thoracic else 0.5)), y0 - back, z0 + 1.0])
        if pr.thoracic:
            tp = sdf.capsule(p, a, b, 4.5, 4.0)
            # Costal facet of the transverse process: a dimple on the anterior side of the tip.
            facet = sdf.sphere(p, b + np.array([0.0, 4.5, 0.0]), 2.5)
            return sdf.smooth_subtraction(tp, facet, 0.8)
        return sdf.elliptic_segment(p, a, b, 3.0, 5.5, round_mm=2.0)

    def _articular(self, p: np.ndarray) -> np.ndarray:
        pr = self.p
        H = pr.body_height
        xf = pr.canal_width / 2 + 0.35 * pr.pedicle_width
        yf = self.canal_yc - 0.1 * pr.canal_depth
        out = None
        for sx in (-1.0, 1.0):
            sup_a = np.array([sx * xf, yf, self.pedicle_z + pr.pedicle_height / 2 - 2.0])
            r_ap = 3.6 if pr.thoracic else 4.8  # lumbar articular pillars are massive
            sup = sdf.capsule(p, sup_a, sup_a + np.array([0.0, -3.0, 8.0 + 0.1 * H]), r_ap, r_ap - 0.6)
            inf_a = np.array(
                [sx * (pr.canal_width / 2 - 1.0), self.canal_yc - pr.canal_depth / 2 - 1.0, self.lamina_z[1] + 2.5]
            )
            inf = sdf.capsule(p, inf_a, inf_a + np.array([0.0, -2.0, -(8.0 + 0.1 * H)]), r_ap, r_ap - 0.6)
            both = np.minimum(sup, inf)
            out = both if out is None else np.minimum(out, both)
        return out

    def _canal(self, p: np.ndarray) -> np.ndarray:
        return sdf.elliptic_cylinder_z(p, (0.0, self.canal_yc), self.p.canal_width / 2, self.p.canal_depth / 2)

    def _unwarp(self, p: np.ndarray) -> np.ndarray:
        """Where a world point falls in the unwarped model (identity without a warp)."""
        return p if self.warp is None else p - self.warp(p)

    def parts(self, p: np.ndarray) -> dict[str, np.ndarray]:
        """Each part's signed distance at the points (before the canal is cut)."""
        return self._parts(self._unwarp(p))

    def canal(self, p: np.ndarray) -> np.ndarray:
        """Signed distance to the canal (the cylinder cut out of the vertebra)."""
        return self._canal(self._unwarp(p))

    def _parts(self, p: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "body": self._body(p),
            "pedicle_left": self._pedicle(p, "left"),
            "pedicle_right": self._pedicle(p, "right"),
            "laminae": self._laminae(p),
            "spinous_process": self._spinous(p),
            "transverse_process_left": self._transverse(p, "left"),
            "transverse_process_right": self._transverse(p, "right"),
            "articular_processes": self._articular(p),
        }

    def __call__(self, p: np.ndarray) -> np.ndarray:
        q = self._unwarp(p)
        parts = self._parts(q)
        d = parts["body"]
        for name in PART_NAMES[1:-1]:
            d = sdf.smooth_union(d, parts[name], _UNION_K)
        return sdf.smooth_subtraction(d, self._canal(q), 0.8)

    def cement(self, p: np.ndarray) -> np.ndarray:
        """A PMMA deposit in the anterior two thirds of the body (a previously cemented level)."""
        pr = self.p
        return sdf.ellipsoid(
            self._unwarp(p),
            (0.0, 0.1 * pr.body_depth, 0.0),
            (0.3 * pr.body_width, 0.28 * pr.body_depth, 0.3 * pr.body_height),
        )

    def bounds(self, margin: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
        pr = self.p
        y_back = self.canal_yc - pr.canal_depth / 2 - pr.lamina_thickness - pr.sp_length - 6.0
        z_extent = pr.body_height / 2 + 14.0 + 0.1 * pr.body_height
        drop = pr.sp_length * np.sin(np.radians(pr.sp_inclination_deg)) + 0.3 * pr.body_height
        margin += pr.warp_mm  # a warp moves the surface by at most its amplitude
        lo = np.array([-pr.tp_span / 2 - margin, y_back - margin, -max(z_extent, drop + 5.0) - margin])
        hi = np.array([pr.tp_span / 2 + margin, pr.body_depth / 2 + margin, z_extent + margin])
        return lo, hi


def with_fracture(params: VertebraParams, fracture: str, seed_offset: int = 1) -> VertebraParams:
    rng = np.random.default_rng([params.seed, 991, seed_offset])
    return replace(params, fracture=Fracture.parse(fracture, rng))
