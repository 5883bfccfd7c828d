"""Evaluation: the benchmark registry (benchmarks.py), generation over a benchmark and its two scores per
question (run.py), and the paper-style results table (table.py). The scoring rules themselves, ours and
each benchmark's official ones, are in `hatch_vlm.scoring` (a lower layer, shared with the data readers
and ActoR's rewards)."""
