"""Smoke test of the benchmark harness (benchmarks/): a toy shape through the real subprocess path,
checking the rows' schema and values, the ratios against naive, and the out-of-memory skip."""
import math

import pytest

from benchmarks.cases import Case
from benchmarks.harness import ROW_FIELDS, Settings, run_cases
from benchmarks.render import markdown, with_ratios
from benchmarks.targets import MEM_FLOOR


@pytest.mark.timeout(120)
def test_harness_rows_schema_values_and_ratios(tmp_path):
    # cell_similarity's output [1, 2, 2, 256, 256] float32 is 1 MiB: the measured forward peak must see it.
    toy = Case("cell_similarity", "toy", B=1, V=2, grid=16, D=16, providers=("naive", "hatch"))
    # patch_align at a size whose naive estimate is far above the (tiny) limit: skipped, never started.
    huge = Case("patch_align", "huge", B=64, V=8, H=448, W=448, grid=32, D=8, providers=("naive",),
                passes=("forward+backward",))
    settings = Settings(target_s=0.05, min_reps=3, max_reps=3, warmup=1, naive_limit_gib=4.0, threads=1,
                        case_timeout_s=100)
    rows = run_cases([toy, huge], "cpu", settings, tmp_path, progress=False)

    assert [(r["op"], r["provider"], r["pass"]) for r in rows] == [
        ("cell_similarity", p, s) for p in ("naive", "hatch") for s in ("forward", "backward", "forward+backward")
    ] + [("patch_align", "naive", "forward+backward")]
    assert all(list(r) == ROW_FIELDS for r in rows)
    assert all(r["device"] == "cpu" and r["shape"] == "B1 V2 P256 D16" for r in rows[:6])

    naive = {r["pass"]: r for r in rows if r["provider"] == "naive" and r["op"] == "cell_similarity"}
    for r in naive.values():
        assert r["status"] == "ok", r
        assert r["reps"] == 3 and r["warmup_reps"] == 1 and r["num_threads"] == 1
        assert 0 < r["time_min_ms"] <= r["time_q25_ms"] <= r["time_median_ms"] <= r["time_q75_ms"]
        assert math.isclose(r["time_iqr_ms"], r["time_q75_ms"] - r["time_q25_ms"], rel_tol=1e-9)
        assert r["peak_mem_bytes"] >= r["peak_mem_median_bytes"] >= 0
    assert naive["forward"]["peak_mem_bytes"] >= 2 ** 20              # saw the 1 MiB output
    assert naive["forward+backward"]["peak_mem_bytes"] >= naive["forward"]["peak_mem_bytes"]
    assert naive["forward+backward"]["time_median_ms"] >= naive["forward"]["time_median_ms"]

    hatch = [r for r in rows if r["provider"] == "hatch"]
    assert all(r["status"] in ("ok", "error: not implemented") for r in hatch), hatch

    skipped = rows[-1]
    assert skipped["status"].startswith("skipped: naive needs ~") and "> limit 4 GiB" in skipped["status"]
    assert skipped["naive_est_peak_bytes"] > 4 * 2 ** 30 and skipped["time_median_ms"] is None

    rated = with_ratios(rows)
    for r in rated:
        if r["provider"] == "naive" and r["status"] == "ok":
            assert r["speedup"] == 1.0 and r["mem_saving"] == 1.0
        elif r["provider"] == "hatch" and r["status"] == "ok":
            base = naive[r["pass"]]
            assert r["speedup"] == pytest.approx(base["time_median_ms"] / r["time_median_ms"])
            assert r["mem_saving"] == pytest.approx(
                max(base["peak_mem_bytes"], MEM_FLOOR) / max(r["peak_mem_bytes"], MEM_FLOOR))
        else:
            assert r["speedup"] is None and r["mem_saving"] is None
    md = markdown(rows, {"device": "cpu"})
    assert "| toy | B1 V2 P256 D16 | forward | naive |" in md and "skipped: naive needs" in md
