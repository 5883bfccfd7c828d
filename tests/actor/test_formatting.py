"""Formatting of samples into TRL rows, and the reward plot (no model needed)."""
import json

import numpy as np
import pytest

from hatch_vlm.actor.actions import parse_completion
from hatch_vlm.actor.formatting import (answer_text, cold_start_row, gold_motions, grpo_row, qa_sft_row,
                                    rows_to_dataset, to_pil)
from hatch_vlm.actor.plot import plot_rewards, reward_series
from hatch_vlm.actor.rewards import action_reward, answer_reward, format_reward
from hatch_vlm.data.record import Sample

from ._samples import random_samples


def test_cold_start_row_is_teacher_then_answer_and_scores_one():
    for s in random_samples(6, seed=5):
        row, g = cold_start_row(s), grpo_row(s)
        user = row["prompt"][0]
        assert user["role"] == "user" and [c["type"] for c in user["content"]] == ["image"] * s.num_views + ["text"]
        assert f"{s.num_views} images" in user["content"][-1]["text"] and "Options: A. Left B. Right" in \
            user["content"][-1]["text"]
        assert len(row["images"]) == s.num_views and row["images"][0].size == (112, 112)
        text = row["completion"][0]["content"][0]["text"]
        parsed = parse_completion(text, s.num_views)
        assert parsed.ok and parsed.value.answer == answer_text(s) and answer_text(s)[0] == s.answer
        assert g["prompt"] == row["prompt"] and len(g["gold_motions"]) == s.num_views * (s.num_views - 1) // 2
        cols = {k: [g[k]] for k in ("answer", "answer_type", "num_views", "gold_motions")}
        comp = [row["completion"]]                       # conversational, as TRL passes it
        assert format_reward(completions=comp, **cols) == [1.0]
        assert answer_reward(completions=comp, **cols) == [1.0]
        assert action_reward(completions=comp, **cols) == [1.0]


def test_qa_row_is_answer_only():
    s = random_samples(1, seed=2)[0]
    s.answer_type, s.answer, s.options = "numeric", "2.5", []
    row = qa_sft_row(s)
    assert row["completion"][0]["content"][0]["text"] == "2.5"
    assert "<action>" not in row["prompt"][0]["content"][-1]["text"]


def test_dataset_keeps_images_and_gold():
    rows = [grpo_row(s) for s in random_samples(3, seed=7)]
    ds = rows_to_dataset(rows)
    assert len(ds) == 3 and len(ds[0]["images"]) == rows[0]["num_views"]
    assert np.allclose(ds[1]["gold_motions"], rows[1]["gold_motions"])


def test_bad_samples_are_clear_errors():
    s = random_samples(1, seed=3)[0]
    s.cam_to_world = None
    with pytest.raises(ValueError, match="cam_to_world"):
        cold_start_row(s)
    qa_sft_row(s)                                        # plain QA needs no poses
    s2 = random_samples(1, seed=3)[0]
    s2.answer_type = "open"
    with pytest.raises(ValueError, match="answer_type"):
        gold_motions(s2)
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_pil([np.zeros((4, 4), np.uint8)])
    with pytest.raises(TypeError, match="Sample"):
        grpo_row({"images": []})
    with pytest.raises(ValueError, match="no images"):
        qa_sft_row(Sample(images=[], answer="A", answer_type="mc"))


def test_plot_rewards(tmp_path):
    log = [{"step": 2, "rewards/action_reward/mean": 0.5, "rewards/answer_reward/mean": 0.25},
           {"step": 1, "rewards/action_reward/mean": 0.25, "rewards/answer_reward/mean": 0.0},
           {"step": 2, "train_runtime": 3.0}]
    assert reward_series(log, "rewards/action_reward/mean") == ([1, 2], [0.25, 0.5])
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    png = plot_rewards(path, tmp_path / "r.png", smooth=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no reward entries"):
        plot_rewards([{"step": 1, "loss": 1.0}], tmp_path / "x.png")
    with pytest.raises(ValueError, match="curves"):
        plot_rewards(log, tmp_path / "x.png", curves=("speed",))
