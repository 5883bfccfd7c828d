"""A built capture tree is training data as it is: `hatch-vlm train` with stages [pasta, actor_sft] on the tiny
model runs on it (a few samples, two steps each), PaStA finds valid rows (real overlap from the written depth
and poses) and the ActoR cold start trains on the capture's questions."""
import json

from hatch_vlm.cli import main as cli_main
from hatch_vlm.data.captures.build import BuildConfig, build
from hatch_vlm.data.captures.select import SelectConfig

from ._scene import orbit_poses, write_nerfstudio


def test_train_pasta_and_actor_sft_on_a_built_capture(tmp_path):
    src = write_nerfstudio(tmp_path / "room", orbit_poses(16, degrees_per_frame=6), H=48, W=64)
    build(BuildConfig("nerfstudio", str(src), str(tmp_path / "spar"), contact_sheet=0,
                      select=SelectConfig(frame_step=1, window=4, max_tuples=12)), progress=False)
    cfg = {"model": {"path": "tiny", "max_pixels": 112 * 112}, "output_dir": str(tmp_path / "run"),
           "stages": ["pasta", "actor_sft"],
           "data": {"kind": "spar", "path": str(tmp_path / "spar"), "tasks": ["multi_view"],
                    "answer_types": ["mc", "numeric"], "num_train": 6, "num_eval": 2,
                    "index_cache": str(tmp_path / "cache"), "num_workers": 0, "actor_fraction": 1.0},
           "pasta": {"max_steps": 2, "per_device_train_batch_size": 2, "plot": False},
           "actor_sft": {"max_steps": 2, "per_device_train_batch_size": 2}}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert cli_main(["train", "--config", str(tmp_path / "config.json")]) == 0
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert set(state["stages"]) == {"pasta", "actor_sft"}
    assert state["stages"]["pasta"]["metrics"]["num_eval_rows"] > 0
    assert state["stages"]["pasta"]["metrics"]["steps"] == 2
