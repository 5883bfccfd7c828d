"""Past one node, simulated on this host: 2 "nodes" x 1 process (accelerate --num_machines 2, localhost) train
the same PaStA weights as 1 process on the same global batch; each node's first process builds its own
node-local state (the SPAR-7M index cache) when the nodes share no filesystem, and writes nothing when they do;
the SLURM script starts such a job (with stand-in srun / scontrol); a launch without --multi_gpu, which would
leave each node training alone, is refused at start."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scale_launch import CPU_2PROC, ROOT, free_port, launch_env, needs_gloo, node_cmd, run_ranks

pytestmark = [pytest.mark.slow, needs_gloo]
RUN = ROOT / "tests" / "scale" / "pasta_run.py"
STEPS, GLOBAL_BATCH = 2, 4


def _vision(model_dir: Path) -> dict:
    return {k: v for k, v in load_file(model_dir / "model.safetensors").items() if "visual." in k}


def test_two_nodes_train_the_same_weights_as_one_process(tiny_dir, tmp_path):
    run_ranks(RUN, tmp_path / "one", tiny_dir, 1, STEPS, GLOBAL_BATCH)
    port = free_port()
    args = [str(RUN), "--model-dir", str(tiny_dir), "--output-dir", str(tmp_path / "nodes"), "--steps", str(STEPS),
            "--global-batch", str(GLOBAL_BATCH), "--batch-size", str(GLOBAL_BATCH // 2)]
    nodes = [subprocess.Popen(node_cmd(k, port, *args), env=launch_env(), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-3000:] for o in outs)
    v1, v2, v0 = _vision(tmp_path / "one" / "final"), _vision(tmp_path / "nodes" / "final"), _vision(Path(tiny_dir))
    assert max((v1[k] - v0[k]).abs().max().item() for k in v1) > 1e-3          # it trained
    diff = max((v2[k] - v1[k]).abs().max().item() for k in v1)
    print(f"2 nodes x 1 process vs 1 process: max weight difference {diff:.2e}")
    for k in v1:
        torch.testing.assert_close(v2[k], v1[k], atol=1e-5, rtol=0)
    assert sorted(p.name for p in (tmp_path / "nodes").glob("rank*.json")) == ["rank0.json", "rank1.json"]


def test_each_node_builds_its_own_index_cache_unless_shared(tmp_path):
    """Node k's HATCH_CACHE_DIR is its own (no shared filesystem): rank 0 builds node 0's cache choosing the
    records, node 1's first process then builds node 1's (same records). With one cache directory for both,
    node 1 finds every file there and writes nothing."""
    from data._spar_tree import write_tree

    tree = write_tree(tmp_path / "spar", {("scannet", "depth_prediction_oo_mv", "select"): 40,
                                          ("scannet", "depth_prediction_oo_mv", "fill"): 30})
    files = sorted(p.name for p in tree.rglob("*.jsonl"))
    assert len(files) == 2
    port, out, shared = free_port(), tmp_path / "out", tmp_path / "shared_cache"
    args = [str(ROOT / "tests" / "scale" / "node_cache_run.py"), "--data", str(tree), "--shared-cache", str(shared),
            "--output-dir", str(out)]
    nodes = [subprocess.Popen(node_cmd(k, port, *args), cwd=ROOT,
                              env={**launch_env(), "HATCH_CACHE_DIR": str(tmp_path / f"node{k}")}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-3000:] for o in logs)
    ranks = [json.loads((out / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert ranks[0] == ranks[1] and len(ranks[0]["own"][0]) == 6            # every rank trains on the same choice
    assert ranks[0]["own"] == ranks[0]["shared"]
    # node-local: each node's own directory holds the offsets of both files, built there
    for k in (0, 1):
        assert len(list((tmp_path / f"node{k}" / "spar7m_index").glob("*.npy"))) == 2, k
    said = [line for line in logs[1].splitlines() if "first process of its node" in line]
    assert len(said) == 2 and "0 of the 2 QA files' offsets were in this node's index cache" in said[0], said
    # shared: rank 0 wrote the two files, node 1 found both and wrote nothing (no leftover temporary files either)
    assert "2 of the 2 QA files' offsets were in this node's index cache" in said[1], said
    assert sorted(p.suffix for p in shared.iterdir()) == [".npy", ".npy"]
    assert "first process of its node" not in logs[0]                     # rank 0 does not check itself


def test_nodes_whose_copies_of_the_data_differ_are_stopped(tmp_path):
    """A node whose copy of data.path gives another choice (here: another seed stands in for another copy)
    stops the job naming it, instead of reading records at offsets found in rank 0's copy."""
    from data._spar_tree import write_tree

    from hatch_vlm.data.spar7m import select_records
    from hatch_vlm.pipeline.config import DataSection
    from hatch_vlm.pipeline.runner import _same_choice_here
    from hatch_vlm.utils.config import ConfigError

    tree = write_tree(tmp_path / "spar", {("scannet", "depth_prediction_oo_mv", "select"): 40})
    d = DataSection(kind="spar", path=str(tree), num_train=6, num_eval=2, index_cache=None)
    main, other = (select_records(tree, 6, 2, seed=s, cache_dir=None) for s in (0, 1))
    _same_choice_here(select_records(tree, 6, 2, seed=0, cache_dir=None), main, d)
    with pytest.raises(ConfigError, match="gives other held_out records than on the main node: the nodes' copies"):
        _same_choice_here(other, main, d)


def test_a_node_launched_without_multi_gpu_is_refused(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: tiny\noutput_dir: {tmp_path / 'run'}\nstages: [pasta]\n")
    p = subprocess.run(node_cmd(0, free_port(), "-m", "hatch_vlm.cli", "train", "--config", str(cfg),
                                 multi_gpu=False), env=launch_env(), cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    # our process exits 2; accelerate's plain launcher reports that as its own failure (exit 1)
    assert p.returncode != 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "hatch-vlm train: bad config: launch: accelerate was asked for several processes" in p.stderr
    assert "add --multi_gpu to `accelerate launch`" in p.stderr
    assert not (tmp_path / "run" / "state.json").exists()


def test_the_slurm_script_starts_one_job_over_the_nodes(tmp_path):
    """scripts/slurm_train.sbatch with a stand-in `srun` (the command once per node, SLURM_NODEID set) and
    `scontrol` (the node list): a 2-node job of the tiny config, one process per node."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\npids=()\n"
        "for ((i=0; i<SLURM_NNODES; i++)); do SLURM_NODEID=$i \"$@\" & pids+=($!); done\n"
        "rc=0; for p in \"${pids[@]}\"; do wait $p || rc=1; done; exit $rc\n")
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'localhost\\nlocalhost\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: tiny\noutput_dir: {out}\nthreads: 1\nstages: [pasta]\n"
                   "data: {num_train: 8, num_eval: 2, size: 56}\n"
                   "pasta: {max_steps: 2, per_device_train_batch_size: 2, plot: false, evaluate_before: false}\n")
    env = {**launch_env(), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_NNODES": "2",
           "SLURM_JOB_NODELIST": "node[0-1]", "GPUS_PER_NODE": "1", "ACCELERATE_CONFIG": str(CPU_2PROC),
           "MAIN_PORT": str(free_port())}
    p = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_train.sbatch"), str(cfg)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    text = p.stdout + p.stderr
    assert p.returncode == 0, text[-4000:]
    assert "2 processes: every rank trains, rank 0 writes" in text
    assert text.count("[1/1] pasta: finished") == 1                # said once, by rank 0
    assert (out / "state.json").exists() and (out / "stages" / "pasta" / "model").is_dir()
