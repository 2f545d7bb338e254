"""Regenerate the bundled demo case: python tools/make_demo_case.py [--out Resources/demo] [--seed N]."""

import argparse
from pathlib import Path

from SpineDARTLib.demo import DEMO_SEED, build_demo_case

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "Resources" / "demo")
    ap.add_argument("--seed", type=int, default=DEMO_SEED)
    a = ap.parse_args()
    print(build_demo_case(a.out, a.seed))
