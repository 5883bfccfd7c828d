"""Nothing in the repository calls our command `hatch` or imports our package as `hatch` (pypa's Hatch owns
both names; see test_beside_pypa_hatch.py). The op namespace `torch.ops.hatch` and `hatch_ext` stay."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Our subcommands after a bare `hatch`, our package imported as `hatch`, or run as `python -m hatch`.
OLD = re.compile(r"(?<![\w./-])hatch (demo|train|eval|data|ablate)\b|\bfrom hatch[. ]|\bimport hatch(?![\w])"
                 r"|python -m hatch\b(?!_)|python/hatch\b(?!_)|\bhatch\.(cli|pipeline|pasta|actor|eval|data)\b")


def test_no_old_name_left():
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    hits = []
    for f in files:
        if f.startswith(("tests/data/fixtures/", "benchmarks/results/")) or f == "tests/install/test_names.py":
            continue  # fixtures are datasets' own text; results are records of past runs
        try:
            text = (REPO / f).read_text()
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OLD.search(line) and "import hatch, hatch.cli" not in line:
                hits.append(f"{f}:{n}: {line.strip()}")
    assert not hits, "the old name is still used:\n" + "\n".join(hits)
