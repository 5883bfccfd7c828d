"""The PaStA stage under FSDP (configs/accelerate/fsdp_8gpu.yaml, on one GPU) saves the gathered, whole
weights: the same as an unsharded run. Needs a CUDA GPU: on CPU, transformers' Trainer runs the FSDP launch
config as plain data parallelism (parameters not sharded), so there is nothing to gather."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from scale_launch import ROOT, free_port, launch_env, run_ranks

RUN = ROOT / "tests" / "scale" / "pasta_run.py"
STEPS, GLOBAL_BATCH = 3, 4

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="FSDP needs a CUDA GPU (on CPU the Trainer runs the FSDP config unsharded)")]


def _fsdp_one_gpu_config(tmp_path: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / "accelerate" / "fsdp_8gpu.yaml").read_text())
    cfg.update(num_processes=1, mixed_precision="no")         # float32: comparable with the reference run
    cfg["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = False
    path = tmp_path / "fsdp_1gpu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_fsdp_saves_the_gathered_weights(tiny_dir, tmp_path):
    ref = run_ranks(RUN, tmp_path / "plain", tiny_dir, 1, STEPS, GLOBAL_BATCH)
    out = tmp_path / "fsdp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(_fsdp_one_gpu_config(tmp_path)),
           "--main_process_port", str(free_port()), str(RUN), "--model-dir", str(tiny_dir), "--output-dir",
           str(out), "--steps", str(STEPS), "--global-batch", str(GLOBAL_BATCH), "--batch-size", str(GLOBAL_BATCH)]
    r = subprocess.run(cmd, env=launch_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    rec = json.loads((out / "rank0.json").read_text())
    assert rec["sharded"] == [True] and ref[0]["sharded"] == [False]
    a, b = load_file(out / "final" / "model.safetensors"), load_file(tmp_path / "plain" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    start = load_file(Path(tiny_dir) / "model.safetensors")
    moved = max((b[k] - start[k]).abs().max().item() for k in b if k in start and "visual." in k)
    assert moved > 1e-3
    for k in b:                       # GPU kernels are not bitwise reproducible across wrappers: a tolerance
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4, msg=lambda m, k=k: f"{k}: {m}")
