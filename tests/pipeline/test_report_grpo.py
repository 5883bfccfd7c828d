"""The report's GRPO section: held-out rewards per seed against the cold start, spread, seeds improved."""
import json

from hatch_vlm.actor.plot import moving_average
from hatch_vlm.pipeline.report import _grpo_section, write_report


def _log(values):
    return [{"step": k + 1, "rewards/action_reward/mean": v, "rewards/answer_reward/mean": 1 - v,
             "rewards/format_reward/mean": 1.0} for k, v in enumerate(values)]


def test_grpo_section_compares_each_seed_with_the_cold_start(tmp_path):
    cold = {"held_out_action": 0.10, "held_out_action_partial": 0.40, "held_out_answer": 0.50,
            "held_out_format": 1.0, "held_out_n": 32}
    stages = {"actor_sft": {"metrics": cold}}
    for name, action, answer in (("grpo", 0.12, 0.55), ("grpo_seed1", 0.11, 0.45), ("grpo_seed2", 0.14, 0.50)):
        log = tmp_path / f"{name}.json"
        log.write_text(json.dumps(_log([0.1, 0.2, 0.3])))
        stages[name] = {"done": True, "seconds": 1.0, "metrics": {
            "held_out_action": action, "held_out_action_partial": 0.5, "held_out_answer": answer,
            "held_out_format": 1.0, "action_reward_first": 0.4, "action_reward_last": 0.6,
            "reward_log": str(log)}}
    lines = "\n".join(_grpo_section(stages, cold))
    assert "| GRPO seed 0 (evaluated) | 0.120 |" in lines and "| GRPO seed 2 | 0.140 |" in lines
    assert "(32 samples)" in lines and "0.400 → 0.600" in lines
    # action: all three >= 0.10; answer: 0.55 and 0.50 >= 0.50, 0.45 is not
    assert "held-out action after GRPO over 3 seed(s): 0.123 ± 0.015 (min 0.110, max 0.140); >= the cold " \
           "start (0.100) in 3 of 3" in lines
    assert ">= the cold start (0.500) in 2 of 3" in lines

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "state.json").write_text(json.dumps({"stages": stages}))
    md = write_report(tmp_path / "run").read_text()
    assert "## GRPO" in md and "![grpo_rewards.png](grpo_rewards.png)" in md
    assert (tmp_path / "run" / "report" / "grpo_rewards.png").stat().st_size > 1000


def test_moving_average_is_trailing():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
