"""The tiny Qwen2.5-VL: built offline, saved, and loaded through the one load path like a real model."""
import numpy as np
import pytest
import torch
from PIL import Image

from hatch_vlm.models.loading import load_model_and_processor, resolve_dtype
from hatch_vlm.models.tiny import SPECIAL_TOKENS, build_tiny_model

ACTOR_TEXT = ("<action>{from:0,to:1,action:[{turn right: 120 deg}{move forward: 1.2 m}]}</action>"
              "<answer>C. Back, Right</answer>")


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    return load_model_and_processor(tiny_dir)


def _images(shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*s, 3), dtype=np.uint8)) for s in shapes]


def test_tiny_model_is_tiny_and_consistent(loaded):
    model, _ = loaded
    n = sum(p.numel() for p in model.parameters())
    assert n < 300_000, n
    cfg = model.config
    assert cfg.vision_config.out_hidden_size == cfg.text_config.hidden_size
    head_dim = cfg.text_config.hidden_size // cfg.text_config.num_attention_heads
    assert sum(cfg.text_config.rope_parameters["mrope_section"]) == head_dim // 2
    assert not model.training


def test_tokenizer_covers_hatch_texts(loaded):
    _, processor = loaded
    tok = processor.tokenizer
    texts = [ACTOR_TEXT, "Which object is closer to the camera? A. Left B. Right C. Front D. Back",
             "How far is the chair from the table in metres? 0123456789"]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        # BPE learnt the corpus: far fewer tokens than bytes (byte fallback would give one per byte).
        assert len(ids) < 0.6 * len(text.encode()), (text, len(ids))
    for special in SPECIAL_TOKENS:
        assert len(tok(special)["input_ids"]) == 1
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_processor_chat_template_and_image_tokens(loaded):
    model, processor = loaded
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Which image is left?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.endswith("<|im_start|>assistant\n")
    images = _images([(120, 160), (112, 112)])
    batch = processor(text=[text], images=images, return_tensors="pt")
    # smart_resize to multiples of 28 within [112^2, 224^2] px: 120x160 -> 112x168, 112x112 stays.
    assert batch["image_grid_thw"].tolist() == [[1, 8, 12], [1, 8, 8]]
    n_pad = int((batch["input_ids"] == processor.image_token_id).sum())
    assert n_pad == (8 * 12 + 8 * 8) // 4
    with torch.no_grad():
        logits = model(**batch).logits
        assert logits.shape == (1, batch["input_ids"].shape[1], model.config.text_config.vocab_size)
        assert torch.isfinite(logits).all()
        out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


def test_build_is_deterministic_and_roundtrips(tmp_path, loaded):
    model, _ = loaded
    again, _ = load_model_and_processor(build_tiny_model(tmp_path / "same", seed=0))
    other, _ = load_model_and_processor(build_tiny_model(tmp_path / "other", seed=1))
    sd, sd_again, sd_other = model.state_dict(), again.state_dict(), other.state_dict()
    assert sd.keys() == sd_again.keys()
    assert all(torch.equal(sd[k], sd_again[k]) for k in sd)
    assert any(not torch.equal(sd[k], sd_other[k]) for k in sd)


def test_load_dtype_and_errors(tiny_dir, tmp_path):
    model, _ = load_model_and_processor(tiny_dir, dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert resolve_dtype(None) is None and resolve_dtype(torch.float16) is torch.float16
    with pytest.raises(ValueError, match="dtype"):
        load_model_and_processor(tiny_dir, dtype="int3")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_model_and_processor(tmp_path / "nothing")


def test_processor_pixel_bounds_override(tiny_dir):
    _, processor = load_model_and_processor(tiny_dir, min_pixels=224 * 224, max_pixels=224 * 224)
    out = processor.image_processor(images=_images([(112, 112)]), return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 16, 16]]


def test_loads_hub_style_directory(tiny_dir, tmp_path):
    """A Qwen/Qwen2.5-VL-3B-Instruct snapshot keeps the image settings in preprocessor_config.json and
    the template in chat_template.json; the one load path reads that layout too."""
    import json
    import shutil

    hub = tmp_path / "hub_style"
    shutil.copytree(tiny_dir, hub)
    template = (hub / "chat_template.jinja").read_text()
    (hub / "chat_template.jinja").unlink()
    (hub / "processor_config.json").unlink()
    (hub / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    tok_cfg = json.loads((hub / "tokenizer_config.json").read_text())
    tok_cfg.pop("chat_template", None)
    tok_cfg["processor_class"] = "Qwen2_5_VLProcessor"
    (hub / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    (hub / "preprocessor_config.json").write_text(json.dumps({
        "min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
        "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor"}))
    model, processor = load_model_and_processor(hub)
    assert processor.image_processor.size["shortest_edge"] == 3136
    assert processor.image_processor.size["longest_edge"] == 12845056
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    # 84x84 stays 84x84 (3x3 merged tokens) under these bounds.
    out = processor(text=[text], images=_images([(84, 84)]), return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 6, 6]]
