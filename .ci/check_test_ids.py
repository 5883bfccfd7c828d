"""Every test id that ran in CI before still runs (issue #26: CI was made faster without dropping a test).

tests/ci_ids/before.txt: the ids collected on main before the speed-up (commit e67195c, 1477 ids); renamed.tsv:
ids whose name changed since (old <TAB> new: a parametrize index or a message in the id); the check fails
naming every id of before.txt that is neither collected now nor renamed to one that is. The ids collected
now are written to tests/ci_ids/after.txt (commit it when tests are added).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDS = ROOT / "tests" / "ci_ids"


def collected() -> set[str]:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
                         cwd=ROOT, capture_output=True, text=True)
    ids = {line.strip() for line in out.stdout.splitlines() if "::" in line}
    if out.returncode != 0 or not ids:
        sys.exit(f"check_test_ids: collection failed (exit {out.returncode}):\n"
                 f"{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return ids


def main() -> int:
    before = set((IDS / "before.txt").read_text().splitlines()) - {""}
    renamed = dict(line.split("\t") for line in (IDS / "renamed.tsv").read_text().splitlines() if line.strip())
    now = collected()
    (IDS / "after.txt").write_text("".join(f"{t}\n" for t in sorted(now)))
    missing = sorted(t for t in before if t not in now and renamed.get(t) not in now)
    print(f"test ids: {len(before)} before, {len(now)} now ({len(now - before)} new or renamed, "
          f"{len(renamed)} renamed), {len(missing)} missing")
    for t in missing:
        print(f"  missing: {t}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
