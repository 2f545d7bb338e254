"""Benchmarks (speed and accuracy), run from the ``spinedart`` CLI; results go to BENCHMARKS.md."""
