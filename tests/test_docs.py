"""The docs the code cites are in the repository, and the architecture map names files that exist."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Files of other repositories that the code cites by their own path (with the repository named beside them).
EXTERNAL = {"Benchmark_Verification.md"}  # EASI's docs/, cited in scoring/official/mmsi.py


def _tracked(*patterns: str) -> list[str]:
    return subprocess.run(["git", "ls-files", *patterns], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.split()


def test_cited_docs_exist():
    missing = []
    for f in _tracked("csrc", "hatch_ext", "python", "benchmarks", "scripts"):
        if not f.endswith((".py", ".cpp", ".h", ".cu", ".cuh", ".sh")):
            continue
        for n, line in enumerate((REPO / f).read_text().splitlines(), 1):
            # docs/x.md, or a bare DESIGN.md-style name; another repository's docs are cited with its name
            for m in re.finditer(r"(?<![\w/])docs/([A-Za-z_]+\.md)|(?<![\w/])([A-Z_]{4,}\.md)\b", line):
                name = m[1] or m[2]
                if name in EXTERNAL:
                    continue
                if not any((REPO / d / name).exists() for d in ("docs", ".", str(Path(f).parent))):
                    missing.append(f"{f}:{n}: {name}")
    assert not missing, "cited but not in the repository:\n" + "\n".join(missing)


def test_architecture_map_names_real_files():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    roots = {"csrc": REPO, "hatch_ext": REPO, "tests": REPO, "benchmarks": REPO, "docs": REPO}
    missing = []
    for path in re.findall(r"`((?:csrc|hatch_ext|tests|benchmarks)/[\w/.{},]+)`", text):
        base = path.split(" ")[0]
        if "{" in base:  # a/{b,c}.h
            head, alts = base.split("{", 1)
            alts, tail = alts.split("}", 1)
            paths = [head + a + tail for a in alts.split(",")]
        else:
            paths = [base]
        missing += [p for p in paths if not (roots[p.split("/")[0]] / p).exists()]
    pkg = REPO / "python" / "hatch_vlm"
    for sub, names in re.findall(r"\| `(\w+)/` \| (.+) \|", text):
        for name in re.findall(r"`([\w/]+\.(?:py|yaml))`", names):
            if not ((pkg / sub / name).exists() or (pkg / name).exists()):
                missing.append(f"{sub}/{name}")
    assert not missing, "docs/ARCHITECTURE.md names files that do not exist: " + ", ".join(missing)
