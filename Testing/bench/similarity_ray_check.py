"""How the learned similarity reads instances that one view cannot tell from the truth: the ray
samples of held-out cases (reference + instances moved 2-10 mm along one view's ray, see
``nets/similarity_data``) predicted by each set of weights; prints one JSON object.

    python Testing/bench/similarity_ray_check.py --weights A.safetensors B.safetensors \
        --cases H/case_0000 H/case_0001 [--per-pair 4] [--seed 0] [--out R.json] [--threads 2]

Per weights: over the moved instances, the median of predicted / true MASD (1 is right; the
underestimate is the false minimum), the fraction predicted below 0.6 × true, and the mean
within-group Spearman ρ (reference and its moved instances: is the reference ranked nearest?).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from SpineDARTLib.atomic import atomic_write_json
from SpineDARTLib.fit.similarity_net import SimilarityConfig, load_similarity
from SpineDARTLib.nets.similarity_data import groups_of, prepare_case
from SpineDARTLib.nets.similarity_train import predict, rank_metrics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, nargs="+", required=True)
    ap.add_argument("--cases", type=Path, nargs="+", required=True)
    ap.add_argument("--per-pair", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    nets = [load_similarity(w) for w in a.weights]
    configs = {json.dumps(card["config"], sort_keys=True) for _, card in nets}
    if len(configs) != 1:
        raise SystemExit("the weights have different window configurations: compare like with like")
    config = SimilarityConfig.from_dict(nets[0][1]["config"])
    parts = [prepare_case(c, config, 8, a.seed, ray_samples=a.per_pair) for c in a.cases]
    samples = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    per_case = [groups_of(p["magnitude"], p["level"]) for p in parts]
    offsets = np.cumsum([0] + [int(g[-1]) + 1 for g in per_case[:-1]])
    groups = np.concatenate([g + o for g, o in zip(per_case, offsets, strict=True)])
    moved = samples["magnitude"] > 0
    true = samples["masd"]
    report = {"cases": [str(c) for c in a.cases], "n_moved": int(moved.sum()), "n_groups": int(groups.max() + 1),
              "true_masd_moved_median": float(np.median(true[moved])), "weights": {}}  # fmt: skip
    for path, (net, card) in zip(a.weights, nets, strict=True):
        pred = predict(net, samples)
        ratio = pred[moved] / true[moved]
        report["weights"][str(path)] = {
            "sha256": card["weights_sha256"],
            "pred_over_true_median": float(np.median(ratio)),
            "under_0.6": float(np.mean(ratio < 0.6)),
            "spearman_within": rank_metrics(pred, true, groups).get("spearman_within"),
        }
    if a.out:
        atomic_write_json(a.out, report)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
