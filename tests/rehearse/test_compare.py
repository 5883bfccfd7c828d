"""`hatch-vlm rehearse --compare`: a CPU rehearsal's plan for one GPU against a rehearsal on that GPU, by hand,
and its refusals (a measured report made without a GPU, a file that is not a report)."""
from __future__ import annotations

import json

import pytest

from hatch_vlm.cli import main
from hatch_vlm.rehearse.compare import compare_reports
from hatch_vlm.rehearse.plan import GIB
from hatch_vlm.utils.config import ConfigError

from test_plan import _summary          # the plan tests' hand-computable stage summary


def _report(stages, gpu=None):
    return {"machine": {"cpu": "AMD EPYC", "gpu": gpu, "date": "2026-12-07 10:00 UTC", "torch": "2.13.0"},
            "stages": stages}


def _measured(stage, b, peak_gib, how="measured"):
    return {"stage": stage, "micro_batch": b, "peak": {"value": peak_gib * GIB, "how": how}}


def test_one_gpu_prediction_against_the_measured_peak_by_hand():
    # qa_sft, 1e9 trained float32 params on one GPU: 4 + 4 + 8 bytes each (no DDP bucket on one process) and
    # 10 - 1 GiB of activations; the 3 GiB headroom is not compared (max_memory_allocated does not see it)
    pred = _report([_summary("qa_sft"), _summary("eval", b=8), _summary("grpo", b=8),
                    {**_summary("pasta"), "rest": {"value": None}}])
    meas = _report([_measured("qa_sft", 4, 25.0), _measured("eval", 8, 4.0, "extrapolated"),
                    _measured("grpo", 4, 30.0)], gpu="NVIDIA H100 80GB HBM3")
    rows = {r["stage"]: r for r in compare_reports(pred, meas)}
    assert rows["qa_sft"]["predicted"] == 16e9 + 9 * GIB
    assert rows["qa_sft"]["error"] == pytest.approx((16e9 + 9 * GIB) / (25 * GIB) - 1)
    assert rows["eval"]["predicted"] == 4e9 + 9 * GIB and rows["eval"]["measured_how"] == "extrapolated"
    assert rows["grpo"]["why"] == "micro-batch 8 predicted, 4 measured" and "error" not in rows["grpo"]
    assert rows["pasta"]["why"].startswith("no prediction")


def test_the_command_writes_the_table_and_refuses_a_cpu_measurement(tmp_path, capsys):
    pred, meas = tmp_path / "rehearsal_cpu.json", tmp_path / "rehearsal_gpu.json"
    pred.write_text(json.dumps(_report([_summary("qa_sft")])))
    meas.write_text(json.dumps(_report([_measured("qa_sft", 4, 25.0)], gpu="NVIDIA H100 80GB HBM3")))
    assert main(["rehearse", "--compare", str(pred), str(meas)]) == 0
    md = (tmp_path / "compare_rehearsal_cpu_vs_rehearsal_gpu.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| qa_sft"))
    assert f"| {(16e9 + 9 * GIB) / GIB:.2f} | 25.00 (m) |" in row and "NVIDIA H100" in md
    assert "1 of 1 stages compared" in capsys.readouterr().out

    meas.write_text(json.dumps(_report([_measured("qa_sft", 4, 25.0)], gpu=None)))
    with pytest.raises(ConfigError, match="not made on a GPU"):
        compare_reports(json.loads(pred.read_text()), json.loads(meas.read_text()))
    assert main(["rehearse", "--compare", str(pred), str(meas)]) == 2          # one clear line, no traceback
    assert "not made on a GPU" in capsys.readouterr().err
    (tmp_path / "x.json").write_text("[1, 2]")
    assert main(["rehearse", "--compare", str(pred), str(tmp_path / "x.json")]) == 2
    assert "is not a rehearsal report" in capsys.readouterr().err
    assert main(["rehearse", "--compare", str(pred), str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
