import sys
from pathlib import Path

# `benchmarks/` (repository root) is not an installed package: make it importable under plain `pytest`.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
