"""Architecture-only directories become loadable checkpoints: the shipped configs' stand-in tokenizers put the
special tokens at the checkpoints' ids, reduced depths keep the per-layer lists consistent, and the random
model has exactly the meta model's parameters (tied embeddings stay tied)."""
from __future__ import annotations

from pathlib import Path

import pytest

from hatch_vlm.rehearse.architecture import (Depth, depth_fraction, depth_of, has_weights, layer_parameters, meta_model,
                                             random_model, read_config, shrink, stand_in_tokenizer)

MODELS = Path(__file__).resolve().parents[2] / "configs" / "models"
SHIPPED = ["Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen3-VL-4B-Instruct", "InternVL3-8B-hf"]


@pytest.mark.parametrize("name", SHIPPED)
def test_stand_in_tokenizer_uses_the_checkpoint_ids(name):
    cfg = read_config(MODELS / name)
    tok = stand_in_tokenizer(cfg)
    image = "<IMG_CONTEXT>" if cfg.model_type == "internvl" else "<|image_pad|>"
    assert tok.convert_tokens_to_ids(image) == cfg.image_token_id
    assert tok(f"a{image}b")["input_ids"].count(cfg.image_token_id) == 1
    assert len(tok) <= cfg.text_config.vocab_size
    assert not has_weights(MODELS / name)


def test_shrink_keeps_layer_lists_consistent():
    cfg = read_config(MODELS / "Qwen2.5-VL-3B-Instruct")
    small = shrink(cfg, Depth(4, 4))
    assert small.text_config.num_hidden_layers == 4 and small.vision_config.depth == 4
    assert small.vision_config.fullatt_block_indexes == [3]             # one in 8, at least one
    assert shrink(cfg, Depth(4, 16)).vision_config.fullatt_block_indexes == [7, 15]
    assert shrink(cfg, Depth(4, 32)).vision_config.fullatt_block_indexes == [7, 15, 23, 31]
    assert len(small.text_config.layer_types) == 4
    assert depth_of(cfg) == Depth(36, 32)
    q3 = read_config(MODELS / "Qwen3-VL-4B-Instruct")
    assert shrink(q3, Depth(3, 4)).vision_config.deepstack_visual_indexes == [0, 1, 2]
    assert shrink(q3, Depth(3, 12)).vision_config.deepstack_visual_indexes == [2, 5, 8]
    assert shrink(q3, Depth(3, 24)).vision_config.deepstack_visual_indexes == [5, 11, 17]
    with pytest.raises(ValueError, match="needs >= 3 vision blocks"):
        shrink(q3, Depth(3, 2))
    with pytest.raises(ValueError, match="needs >= 3 decoder layers"):
        shrink(q3, Depth(2, 4))
    with pytest.raises(ValueError, match="outside the model's"):
        shrink(cfg, Depth(40, 4))


@pytest.mark.parametrize("name, total", [("Qwen3-VL-4B-Instruct", 4_437_815_808), ("InternVL3-8B-hf", 7_944_373_760)])
def test_layer_parameters_add_up(name, total):
    """Per-layer counts from meta builds (Qwen3-VL needs 3 layers and 3 vision blocks at least: deepstack)."""
    cfg = read_config(MODELS / name)
    base, per_text, per_vision = layer_parameters(cfg)
    full = depth_of(cfg)
    assert base + full.text * per_text + full.vision * per_vision == total


def test_depth_fraction_is_the_share_of_layer_parameters():
    cfg = read_config(MODELS / "Qwen2.5-VL-3B-Instruct")
    base, per_text, per_vision = layer_parameters(cfg)
    assert base + 36 * per_text + 32 * per_vision == 3_754_622_976
    assert depth_fraction(cfg, Depth(36, 32)) == pytest.approx(1.0)
    assert depth_fraction(cfg, Depth(2, 2)) == pytest.approx((2 * per_text + 2 * per_vision)
                                                             / (36 * per_text + 32 * per_vision))


def test_random_model_matches_the_meta_model():
    from hatch_vlm.rehearse.accounting import unique_parameters
    from hatch_vlm.rehearse.architecture import meta_model

    cfg = shrink(read_config(MODELS / "Qwen2.5-VL-3B-Instruct"), Depth(1, 1))
    model = random_model(cfg)
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight     # tied as configured
    ours = sum(p.numel() for p in unique_parameters(model))
    assert ours == sum(p.numel() for p in unique_parameters(meta_model(cfg)))
    w = model.model.language_model.layers[0].mlp.up_proj.weight.float()
    assert abs(w.std().item() - cfg.text_config.initializer_range) < 0.002 and w.abs().sum() > 0


def test_missing_config_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        read_config(tmp_path)


@pytest.mark.parametrize("name", ["Qwen3-VL-2B-Instruct", "Qwen3-VL-4B-Instruct", "Qwen2.5-VL-3B-Instruct",
                                  "InternVL3-8B-hf"])
def test_the_checkpoint_dtype_is_read_where_each_config_declares_it(name):
    """Qwen3-VL's official config.json declares bfloat16 in text_config only: read from the top level alone it
    was missing, and the rehearsal built and counted Qwen3-VL in float32 (twice the weights' bytes, ~5x
    slower matmuls here). Every shipped architecture is bf16, and its meta model is built so."""
    import torch

    from hatch_vlm.models.precision import declared_dtype

    cfg = read_config(MODELS / name)
    assert declared_dtype(cfg) == torch.bfloat16
    assert {p.dtype for p in meta_model(cfg).parameters()} == {torch.bfloat16}
