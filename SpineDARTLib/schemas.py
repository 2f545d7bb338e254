"""Versioned file formats the project exchanges, defined once and validated on read.

Each format has an id ``spinedart.<name>/<version>`` stored in the file's ``"schema"`` key. Present:
``xray-geometry/1`` (the X-ray sidecar), ``bead-phantom/1`` (a bead phantom's ground truth),
``vertebra/1`` (a generated vertebra: parameters, landmarks, trajectories, files), ``case/1`` (a
CT-like case: volume, vertebra labels, per-vertebra ground truth, views), ``view-labels/1`` (one
view's 2-D labels), ``manifest/1`` (a set of cases), ``ssm-card/1`` (a shape model's card),
``landmarks-2d/1`` (2-D vertebra landmarks and centroids per view: the fit's initialisation input).
The landmark, case, plan-report and worker-message formats are added here as they are built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from .errors import SchemaError

_NUM = {"type": "number"}
_POS = {"type": "number", "exclusiveMinimum": 0}
_VEC2 = {"type": "array", "items": _NUM, "minItems": 2, "maxItems": 2}
_VEC3 = {"type": "array", "items": _NUM, "minItems": 3, "maxItems": 3}

XRAY_GEOMETRY_V1 = "spinedart.xray-geometry/1"
BEAD_PHANTOM_V1 = "spinedart.bead-phantom/1"
VERTEBRA_V1 = "spinedart.vertebra/1"
CASE_V1 = "spinedart.case/1"
VIEW_LABELS_V1 = "spinedart.view-labels/1"
MANIFEST_V1 = "spinedart.manifest/1"
SSM_CARD_V1 = "spinedart.ssm-card/1"
LANDMARKS_2D_V1 = "spinedart.landmarks-2d/1"
PLAN_REPORT_V1 = "spinedart.plan-report/1"

_SCHEMAS: dict[str, dict[str, Any]] = {
    XRAY_GEOMETRY_V1: {
        "type": "object",
        "required": ["schema", "image_size", "pixel_spacing_mm"],
        "anyOf": [{"required": ["P"]}, {"required": ["carm"]}],
        "properties": {
            "schema": {"const": XRAY_GEOMETRY_V1},
            "geometry": {"enum": ["calibrated", "nominal"]},
            "P": {
                "type": "array",
                "minItems": 3,
                "maxItems": 3,
                "items": {"type": "array", "items": _NUM, "minItems": 4, "maxItems": 4},
            },
            "image_size": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
            "pixel_spacing_mm": {"type": "array", "items": _POS, "minItems": 2, "maxItems": 2},
            "isocenter_mm": _VEC3,
            "carm": {
                "type": "object",
                "required": ["primary_angle_deg", "secondary_angle_deg", "source_isocenter_mm", "source_detector_mm"],
                "additionalProperties": False,
                "properties": {
                    "primary_angle_deg": _NUM,
                    "secondary_angle_deg": _NUM,
                    "source_isocenter_mm": _POS,
                    "source_detector_mm": _POS,
                    "detector_offset_mm": _VEC2,
                    "flip_u": {"type": "boolean"},
                    "flip_v": {"type": "boolean"},
                    "patient_position": {"type": "string"},
                    "isocenter_mm": _VEC3,
                },
            },
            "intensity": {
                "type": "object",
                "required": ["convention"],
                "additionalProperties": False,
                "properties": {
                    # line_integral: pixels are already attenuation line integrals (bone bright);
                    # raw_linear: detector intensity (bone dark), converted by -log(I / I0);
                    # display: a display-processed image, only inverted if bone is dark.
                    "convention": {"enum": ["line_integral", "raw_linear", "display"]},
                    "bone_bright": {"type": "boolean"},
                    "scale": _NUM,
                    "offset": _NUM,
                    "i0": _POS,
                },
            },
            "provenance": {"type": "object"},
        },
    },
    # Ground truth of a bead phantom (the geometry demo case, DRR geometry checks).
    BEAD_PHANTOM_V1: {
        "type": "object",
        "required": ["schema", "beads"],
        "properties": {
            "schema": {"const": BEAD_PHANTOM_V1},
            "beads": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "center_mm", "radius_mm", "mu_per_mm"],
                    "properties": {
                        "name": {"type": "string"},
                        "center_mm": _VEC3,
                        "radius_mm": _POS,
                        "mu_per_mm": _POS,
                    },
                },
            },
            "body": {
                "type": "object",
                "required": ["center_mm", "semi_axes_mm", "mu_per_mm"],
                "properties": {"center_mm": _VEC3, "semi_axes_mm": _VEC2, "mu_per_mm": _POS},
            },
            "seed": {"type": "integer"},
            "provenance": {"type": "object"},
        },
    },
}

# The 10 vertebral landmarks (anatomy.landmarks.LANDMARKS; this module sits below anatomy).
_LANDMARK_NAMES = ["BC", "SEC", "IEC", "PCL", "PCR", "SPT", "TPL", "TPR", "VAP", "PWM"]
_LANDMARKS = {
    "type": "object",
    "required": _LANDMARK_NAMES,
    "additionalProperties": _VEC3,
}
_TRAJECTORIES = {
    "type": "object",
    "required": ["left", "right"],
    "additionalProperties": {"type": "object", "required": ["entry", "target"], "additionalProperties": _VEC3},
}

_SCHEMAS[VERTEBRA_V1] = {
    "type": "object",
    "required": ["schema", "level", "seed", "parameters", "landmarks", "trajectories", "pedicle_width_mm", "files"],
    "properties": {
        "schema": {"const": VERTEBRA_V1},
        "level": {"type": "string"},
        "seed": {"type": "integer"},
        "healthy": {"type": "boolean"},
        "parameters": {"type": "object"},
        "landmarks": _LANDMARKS,
        "trajectories": _TRAJECTORIES,
        "pedicle_width_mm": {"type": "object"},
        "part_names": {"type": "array", "items": {"type": "string"}},
        "files": {"type": "object"},
        "provenance": {"type": "object"},
    },
}

_FILE = {"type": "object", "required": ["path", "sha256"], "properties": {"path": {"type": "string"}}}
_SCHEMAS[CASE_V1] = {
    "type": "object",
    "required": ["schema", "case_id", "kind", "target_levels", "vertebrae", "files", "label_ids", "views"],
    "properties": {
        "schema": {"const": CASE_V1},
        "case_id": {"type": "string"},
        "kind": {"enum": ["synthetic", "real"]},
        "seed": {"type": ["integer", "null"]},
        "target_levels": {"type": "array", "items": {"type": "string"}},
        "label_ids": {"const": "totalsegmentator-v2"},
        "files": {"type": "object", "required": ["ct", "labels"], "additionalProperties": _FILE},
        "vertebrae": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["level", "label_id", "target", "truncated", "fractured", "landmarks", "trajectories"],
                "properties": {
                    "level": {"type": "string"},
                    "label_id": {"type": "integer"},
                    "target": {"type": "boolean"},
                    "truncated": {"type": "boolean"},
                    "fractured": {"type": "boolean"},
                    # A truncated vertebra (real data, cut by the volume) has no ground truth.
                    "landmarks": {"anyOf": [_LANDMARKS, {"type": "null"}]},
                    "trajectories": {"anyOf": [_TRAJECTORIES, {"type": "null"}]},
                    "mesh": {"anyOf": [_FILE, {"type": "null"}]},
                },
            },
        },
        "views": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "pair", "image", "labels", "masks"]},
        },
        "provenance": {"type": "object"},
    },
}
_SCHEMAS[VIEW_LABELS_V1] = {
    "type": "object",
    "required": ["schema", "image_size", "instances"],
    "properties": {
        "schema": {"const": VIEW_LABELS_V1},
        "image_size": _VEC2,
        "instances": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["level", "label_id", "mask_index", "landmarks", "trajectories"],
                "properties": {"mask_index": {"type": "integer", "minimum": 0}},
            },
        },
    },
}
_SCHEMAS[MANIFEST_V1] = {
    "type": "object",
    "required": ["schema", "cases"],
    "properties": {
        "schema": {"const": MANIFEST_V1},
        "cases": {
            "type": "array",
            "items": {"type": "object", "required": ["case_id", "path", "target_levels"]},
        },
    },
}

_SCHEMAS[SSM_CARD_V1] = {
    "type": "object",
    "required": [
        "schema",
        "levels",
        "n_surface",
        "n_vertices",
        "n_members",
        "n_modes",
        "annotations",
        "variance_explained_cumulative",
        "arrays_sha256",
    ],
    "properties": {
        "schema": {"const": SSM_CARD_V1},
        "levels": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "n_surface": {"type": "integer", "minimum": 4},
        "n_vertices": {"type": "integer", "minimum": 4},
        "n_members": {"type": "integer", "minimum": 2},
        "n_modes": {"type": "integer", "minimum": 1},
        "annotations": {"type": "array", "items": {"type": "string"}},
        "variance_explained_cumulative": {
            "type": "array",
            "items": {"type": "number", "minimum": 0, "maximum": 1.000001},
        },
        "seed_range": {"type": ["array", "null"]},
        "input_hashes": {"type": "array"},
        "build_command": {"type": ["string", "null"]},
        "arrays_sha256": {"type": "string"},
        "provenance": {"type": "object"},
    },
}

_UV_POINT = {
    "type": "object",
    "required": ["uv"],
    "additionalProperties": False,
    "properties": {"uv": _VEC2, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
}
_SCHEMAS[LANDMARKS_2D_V1] = {
    "type": "object",
    "required": ["schema", "views"],
    "properties": {
        "schema": {"const": LANDMARKS_2D_V1},
        # One entry per X-ray, in the order the X-rays are given (``image`` names it, optionally).
        "views": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["vertebrae"],
                "properties": {
                    "name": {"type": "string"},
                    "image": {"type": "string"},
                    "vertebrae": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["level"],
                            "properties": {
                                "level": {"type": "string"},
                                # The instance's 2-D centroid (its mask's centre): the backup init.
                                "centroid": _UV_POINT,
                                "landmarks": {
                                    "type": "object",
                                    "propertyNames": {"enum": _LANDMARK_NAMES},
                                    "additionalProperties": _UV_POINT,
                                },
                            },
                        },
                    },
                },
            },
        },
        "source": {"type": "string"},
        "provenance": {"type": "object"},
    },
}

_CANNULA = {
    "type": "object",
    "required": [
        "side",
        "entry_ras_mm",
        "target_ras_mm",
        "direction_ras",
        "length_mm",
        "gauge",
        "outer_diameter_mm",
        "safe",
        "reasons",
        "suggestion",
        "predicted",
        "fluoro_rule",
    ],
    "properties": {
        "side": {"enum": ["left", "right"]},
        "entry_ras_mm": _VEC3,
        "target_ras_mm": _VEC3,
        "direction_ras": _VEC3,
        "length_mm": _POS,
        "gauge": {"enum": [11, 13, 15]},
        "safe": {"type": "boolean"},
        "reasons": {"type": "array", "items": {"type": "string"}},
        "suggestion": {"type": ["string", "null"]},
        "predicted": {
            "type": "object",
            "required": ["breach_mm", "grade", "clearance_mm", "clearance_pedicle_mm", "clearance_canal_mm", "tip_ok"],
            "properties": {"grade": {"enum": ["A", "B", "C", "D", "E"]}},
        },
        "fluoro_rule": {"type": ["object", "null"]},
    },
}
_SCHEMAS[PLAN_REPORT_V1] = {
    "type": "object",
    "required": ["schema", "ok", "summary", "views", "view_angle_deg", "vertebrae", "files", "timings", "provenance"],
    "properties": {
        "schema": {"const": PLAN_REPORT_V1},
        "ok": {"type": "boolean"},  # every planned vertebra is "go"
        "summary": {"type": "object", "additionalProperties": {"enum": ["go", "no-go", "failed"]}},
        "views": {"type": "array", "minItems": 2, "maxItems": 2},
        "view_angle_deg": _NUM,
        "vertebrae": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "level",
                    "status",
                    "fit_reason",
                    "gauge",
                    "suggestion",
                    "cannulas",
                    "fit",
                    "init",
                    "files",
                ],
                "properties": {
                    "status": {"enum": ["go", "no-go", "failed"]},
                    "cannulas": {"type": "array", "maxItems": 2, "items": _CANNULA},
                    "fit": {
                        "type": "object",
                        "required": ["converged", "reason", "coeffs", "rotvec", "translation_mm"],
                    },
                },
            },
        },
        "timings": {"type": "object", "required": ["total_s"], "additionalProperties": _NUM},
        "provenance": {"type": "object", "required": ["inputs", "models", "seed"]},
    },
}

# What to tell the user for the most common mistakes, by JSON path head.
_FIXES = {
    "schema": f'set "schema": "{XRAY_GEOMETRY_V1}"',
    "P": "give P as 3 rows of 4 numbers mapping RAS mm to pixels",
    "image_size": "give image_size as [width, height] in pixels",
    "pixel_spacing_mm": "give pixel_spacing_mm as [du, dv] in mm at the detector",
    "carm": "give the C-arm angles (deg) and source-isocentre/source-detector distances (mm)",
}


def schema(schema_id: str) -> dict[str, Any]:
    return _SCHEMAS[schema_id]


def validate(obj: Any, schema_id: str, path: str | Path | None = None) -> dict[str, Any]:
    """Validate ``obj`` against a registered schema; raise :class:`SchemaError` with one line."""
    if not isinstance(obj, dict):
        raise SchemaError(f"expected a JSON object ({schema_id})", "write the file as a JSON object", path)
    found = obj.get("schema")
    if found != schema_id:
        raise SchemaError(
            f'"schema" is {found!r}, expected {schema_id!r}',
            f'set "schema": "{schema_id}" (and the fields that version defines)',
            path,
        )
    validator = jsonschema.Draft202012Validator(_SCHEMAS[schema_id])
    errors = sorted(validator.iter_errors(obj), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        err = errors[0]
        where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
        head = next(iter(err.absolute_path), None)
        if err.validator == "required" and not err.absolute_path:
            head = err.message.split("'")[1] if err.message.count("'") >= 2 else None
        if err.validator == "anyOf" and not err.absolute_path:
            msg, fix = "neither a P matrix nor C-arm parameters", 'add "P" or "carm"'
        else:
            msg = f"{where}: {err.message}"
            fix = _FIXES.get(str(head), f"see the {schema_id} format in the README")
        raise SchemaError(msg[:300], fix, path)
    return obj


def load_json(path: str | Path, schema_id: str) -> dict[str, Any]:
    """Read and validate a JSON file; every failure is a one-line :class:`SchemaError`."""
    path = Path(path)
    if path.is_dir():
        raise SchemaError("is a directory, expected a JSON file", "give the JSON file inside it", path)
    if not path.exists():
        raise SchemaError("file not found", "check the path", path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"cannot read the file ({exc.__class__.__name__})", "give a UTF-8 JSON file", path) from exc
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"not valid JSON (line {exc.lineno}: {exc.msg})", "fix the JSON syntax", path) from exc
    except ValueError as exc:
        raise SchemaError(str(exc), "replace NaN/Infinity with finite numbers", path) from exc
    return validate(obj, schema_id, path)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} in JSON")
