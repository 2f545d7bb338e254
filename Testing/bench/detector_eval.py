"""Evaluate trained detector weights on data-engine views; prints one JSON object (records in --out).

    python Testing/bench/detector_eval.py --weights Resources/models/detector.safetensors \
        --data DIR [--split all|validation] [--limit N] [--out results.json] [--threads 2] \
        [--refiner refiner.safetensors] [--centre-threshold 0.2]

DIR: a training folder (``--split validation``: its held-out cases), the benchmark's scenes
(``spinedart bench --work`` folder: healthy-*, fractured-*) or the real CT's case (real-ct-*).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from SpineDARTLib.atomic import atomic_write_json
from SpineDARTLib.bench.detector_eval import evaluate
from SpineDARTLib.nets.detect import CENTRE_THRESHOLD
from SpineDARTLib.nets.detector_train import load_detector


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", choices=("all", "validation"), default="all")
    ap.add_argument("--limit", type=int, help="at most this many views")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--refiner", type=Path, help="second-stage weights: every detection refined before scoring")
    ap.add_argument("--centre-threshold", type=float, default=CENTRE_THRESHOLD, help="detector peak threshold")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, card = load_detector(a.weights)
    refiner = None
    if a.refiner:
        from SpineDARTLib.nets.refiner_train import load_refiner

        refiner, refiner_card = load_refiner(a.refiner)
    res = evaluate(model, a.data, a.split, a.limit, refiner, a.centre_threshold)
    res["centre_threshold"] = a.centre_threshold
    res["weights_sha256"] = card["weights_sha256"]
    if refiner is not None:
        res["refiner_sha256"] = refiner_card["weights_sha256"]
    if a.out:
        atomic_write_json(a.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "records"}))


if __name__ == "__main__":
    main()
