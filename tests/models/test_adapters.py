"""The model adapters (docs/adapters.md): one per family, found from config.json; for each family the cell of
every merged token is where the token's pixels are, a hub-style checkpoint directory loads through
`from_pretrained`, a PaStA step trains the vision tower only, and generation runs without emitting image tokens."""
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from hatch_vlm.data.record import Sample
from hatch_vlm.models.adapters import (FAMILIES, adapter_for_dir, adapter_for_family, adapter_for_model,
                                       adapter_for_model_type, adapter_for_processor)
from hatch_vlm.models.loading import load_model_and_processor
from hatch_vlm.models.tiny import build_tiny_model
from hatch_vlm.pasta.cells import cell_embeddings, cell_embeddings_from_pixels, layout_of, processor_inputs

N = 4   # the PaStA grid


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    """A tiny model of each family (seed 0), built once for this module."""
    return {f: build_tiny_model(tmp_path_factory.mktemp(f.replace(".", "")), seed=0, family=f) for f in FAMILIES}


@pytest.fixture(scope="module")
def loaded(family_dirs):
    return {f: load_model_and_processor(d) for f, d in family_dirs.items()}


def test_registry_and_unsupported_model_type(family_dirs, tmp_path):
    assert FAMILIES == ("qwen2.5-vl", "qwen3-vl", "internvl3")
    model_types = {"qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl", "internvl3": "internvl"}
    for family, d in family_dirs.items():
        assert json.loads((d / "config.json").read_text())["model_type"] == model_types[family]
        assert adapter_for_dir(d).family == family
    assert adapter_for_family("Qwen3_VL").family == "qwen3-vl" and adapter_for_family("internvl").family == "internvl3"
    bad = tmp_path / "llava"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match=r"unsupported model_type 'llava'.*qwen2_5_vl.*qwen3_vl.*internvl"):
        load_model_and_processor(bad)
    with pytest.raises(ValueError, match="unsupported model_type None"):
        adapter_for_model_type(None)
    with pytest.raises(ValueError, match="unknown model family 'gemma'.*qwen2.5-vl, qwen3-vl, internvl3"):
        adapter_for_family("gemma")


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_builds_load_and_know_their_family(loaded, family):
    model, processor = loaded[family]
    adapter = adapter_for_model(model)
    assert adapter.family == family and adapter_for_processor(processor) is adapter
    assert sum(p.numel() for p in model.parameters()) < 300_000
    vision = {id(p) for p in adapter.vision_parameters(model)}
    llm = {id(p) for p in adapter.language_model(model).parameters()}
    assert vision and llm and not vision & llm
    names = {n for n, p in model.named_parameters() if id(p) in vision}
    assert all(adapter.is_vision_parameter_name(n) for n in names)
    assert not any(adapter.is_vision_parameter_name(n) for n, p in model.named_parameters() if id(p) in llm)
    ids = adapter.never_generate_ids(processor)
    assert len(ids) == len(adapter.never_generate_tokens) == 4
    assert processor.image_token_id in ids


# Image sizes per family: aligned with the token grid (no resampling inside a token), then ones the processor
# resizes (Qwen) or tiles into several tiles + a thumbnail (InternVL: 1x2, 2x1, 2x3 tiles).
PAINT_CASES = [("qwen2.5-vl", (224, 224)), ("qwen2.5-vl", (150, 200)), ("qwen3-vl", (256, 256)),
               ("qwen3-vl", (150, 200)), ("internvl3", (112, 224)), ("internvl3", (224, 112)),
               ("internvl3", (200, 300))]


def _cells(model, processor, images):
    adapter = adapter_for_model(model)
    inputs = adapter.image_inputs(processor, [Image.fromarray(im) for im in images])
    with torch.no_grad():
        return cell_embeddings_from_pixels(model, inputs["pixel_values"], inputs[adapter.layout_key], 1, N)[:, 0]


@pytest.mark.parametrize(("family", "size"), PAINT_CASES)
def test_bright_region_changes_its_own_cell_most(loaded, family, size):
    """Paint one cell's area bright in a flat image, for each of the 16 cells: the cell whose pooled
    embedding changes most is the painted one."""
    model, processor = loaded[family]
    H, W = size
    flat = np.full((H, W, 3), 100, np.uint8)
    images = [flat]
    for k in range(N * N):
        r, c = divmod(k, N)
        im = flat.copy()
        im[r * H // N:(r + 1) * H // N, c * W // N:(c + 1) * W // N] = 255
        images.append(im)
    emb = _cells(model, processor, images)
    change = (emb[1:] - emb[:1]).norm(dim=-1)            # [painted cell, cell]
    assert change.argmax(1).tolist() == list(range(N * N)), change.argmax(1).tolist()
    if size in ((224, 224), (256, 256), (112, 224), (224, 112)):  # token boundaries on cell boundaries
        first, second = change.topk(2, dim=1).values.unbind(1)
        assert (second < 0.5 * first).all(), (second / first).max()


@pytest.mark.parametrize(("family", "size", "grid"), [("qwen2.5-vl", (224, 224), (8, 8)),
                                                     ("qwen3-vl", (256, 256), (8, 8)),
                                                     ("internvl3", (112, 224), (4, 8))])
def test_every_merged_token_sits_on_its_pixels(loaded, family, size, grid):
    """Token level: paint exactly one merged token's pixel box (28 / 32 px; InternVL: 28 px of a 112-px
    tile, two tiles side by side): that token of the adapter's image grid changes most."""
    model, processor = loaded[family]
    adapter = adapter_for_model(model)
    (H, W), (h, w) = size, grid
    flat = np.full((H, W, 3), 100, np.uint8)
    images = [flat]
    for r in range(h):
        for c in range(w):
            im = flat.copy()
            im[r * H // h:(r + 1) * H // h, c * W // w:(c + 1) * W // w] = 255
            images.append(im)
    inputs = adapter.image_inputs(processor, [Image.fromarray(im) for im in images])
    with torch.no_grad():
        grids = adapter.token_grids(model, inputs["pixel_values"], inputs[adapter.layout_key])
    assert all((g.h, g.w) == grid for g in grids)
    base = grids[0].tokens
    moved = torch.stack([(g.tokens - base).norm(dim=-1).argmax() for g in grids[1:]])
    assert moved.tolist() == list(range(h * w))


def test_internvl_tiles_map_to_image_positions_and_the_thumbnail_is_not_pooled(loaded):
    model, processor = loaded["internvl3"]
    adapter = adapter_for_model(model)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
              for H, W in [(112, 112), (112, 224), (200, 300)]]
    inputs = adapter.image_inputs(processor, images)
    # (tiles incl. thumbnail, rows, cols): one tile has no thumbnail; 1x2 and 2x3 canvases get one each.
    assert inputs["image_tiles"].tolist() == [[1, 1, 1], [3, 1, 2], [7, 2, 3]]
    assert inputs["pixel_values"].shape == (11, 3, 112, 112)
    with torch.no_grad():
        grids = adapter.token_grids(model, inputs["pixel_values"], inputs["image_tiles"])
        assert [(g.h, g.w) for g in grids] == [(4, 4), (4, 8), (8, 12)]
        # The stitched grid is the tiles' own grids side by side: tile (0, 1) of image 1 is columns 4..7.
        per_tile = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
        torch.testing.assert_close(grids[1].tokens.reshape(4, 8, -1)[:, 4:], per_tile[2].reshape(4, 4, -1))
        before = cell_embeddings_from_pixels(model, inputs["pixel_values"], inputs["image_tiles"], 1, N)
        # Changing the thumbnails (indices 3 and 10) changes no cell; changing a tile does.
        pv = inputs["pixel_values"].clone()
        pv[[3, 10]] = torch.randn_like(pv[[3, 10]])
        torch.testing.assert_close(cell_embeddings_from_pixels(model, pv, inputs["image_tiles"], 1, N), before)
        pv[4] += 1.0                                        # first tile of image 2 (its top-left sixth)
        after = cell_embeddings_from_pixels(model, pv, inputs["image_tiles"], 1, N)
    changed = (after - before).norm(dim=-1)[2, 0] > 1e-6
    # Tile (0, 0) of a 2x3 canvas covers rows [0, 1/2), cols [0, 1/3): cells (0..1, 0..1) of a 4x4 grid.
    assert changed.reshape(N, N)[:2, :2].all() and not changed.reshape(N, N)[2:].any()
    # The prompt's image tokens still include every tile and the thumbnail (16 tokens per tile).
    text = processor.apply_chat_template([{"role": "user", "content": [adapter.image_item()] * 3}],
                                         add_generation_prompt=True, tokenize=False)
    enc = processor(text=[text], images=images, return_tensors="pt")
    assert int((enc["input_ids"] == processor.image_token_id).sum()) == 11 * 16


# ------------------------------------------------------------------------------------ hub-style checkpoints
def _hub_dir(tiny, dest, config: dict, preprocessor: dict, processor_config: dict | None = None):
    """A copy of a tiny build laid out like the hub snapshot: the card's config.json structure, the image
    settings in preprocessor_config.json, the template in chat_template.json."""
    shutil.copytree(tiny, dest)
    (dest / "config.json").write_text(json.dumps(config))
    template = (dest / "chat_template.jinja").read_text()
    (dest / "chat_template.jinja").unlink()
    (dest / "processor_config.json").unlink()
    if processor_config is not None:
        (dest / "processor_config.json").write_text(json.dumps(processor_config))
    (dest / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (dest / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return dest


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_qwen3_vl_hub_style_directory_loads(loaded, family_dirs, tmp_path):
    """config.json as Qwen/Qwen3-VL-2B/4B-Instruct publish it (old `rope_scaling` key, vision model_type
    "qwen3_vl", transformers 4.57 fields), tiny sizes; preprocessor_config.json as published."""
    tiny_model, tiny_proc = loaded["qwen3-vl"]
    tok = tiny_proc.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>",
                                                     "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")}
    config = {
        "architectures": ["Qwen3VLForConditionalGeneration"], "image_token_id": ids["<|image_pad|>"],
        "model_type": "qwen3_vl",
        "text_config": {
            "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": ids["<|endoftext|>"],
            "dtype": "bfloat16", "eos_token_id": ids["<|im_end|>"], "head_dim": 12, "hidden_act": "silu",
            "hidden_size": 48, "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 4096,
            "model_type": "qwen3_vl_text", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": [2, 2, 2], "rope_type": "default"},
            "rope_theta": 10000.0, "tie_word_embeddings": True, "use_cache": True, "vocab_size": len(tok)},
        "tie_word_embeddings": True, "transformers_version": "4.57.0.dev0", "video_token_id": ids["<|video_pad|>"],
        "vision_config": {
            "deepstack_visual_indexes": [0], "depth": 2, "hidden_act": "gelu_pytorch_tanh", "hidden_size": 32,
            "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 64, "model_type": "qwen3_vl",
            "num_heads": 4, "num_position_embeddings": 64, "out_hidden_size": 48, "patch_size": 16,
            "spatial_merge_size": 2, "temporal_patch_size": 2},
        "vision_end_token_id": ids["<|vision_end|>"], "vision_start_token_id": ids["<|vision_start|>"],
    }
    preprocessor = {"size": {"longest_edge": 16777216, "shortest_edge": 65536}, "patch_size": 16,
                    "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                    "image_std": [0.5, 0.5, 0.5], "processor_class": "Qwen3VLProcessor",
                    "image_processor_type": "Qwen2VLImageProcessorFast"}
    hub = _hub_dir(family_dirs["qwen3-vl"], tmp_path / "Qwen3-VL-tiny", config, preprocessor)
    model, processor = load_model_and_processor(hub, dtype="float32")
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration" and adapter_for_model(model).family == "qwen3-vl"
    _same_weights(model, tiny_model)
    assert model.config.text_config.rope_parameters["mrope_section"] == [2, 2, 2]
    assert processor.image_processor.patch_size == 16
    # 112x112 is resized up to the 256x256 minimum area: a 16x16 patch grid, 8x8 merged tokens of 32 px.
    img = Image.fromarray(np.full((112, 112, 3), 100, np.uint8))
    assert processor_inputs(processor, [Sample(images=[np.asarray(img)])])["image_grid_thw"].tolist() == [[1, 16, 16]]
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False,
                                         add_generation_prompt=True)
    enc = processor(text=[text], images=[img], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()


def test_internvl3_hub_style_directory_loads(loaded, family_dirs, tmp_path):
    """config.json as OpenGVLab/InternVL3-1B-hf publishes it (InternViT with qkv biases and layer scale, a
    qwen2 text config), tiny sizes; preprocessor_config.json (GOT-OCR2, crop_to_patches false: the
    processor's call turns tiling on) and processor_config.json (image_seq_length) as published."""
    tiny_model, tiny_proc = loaded["internvl3"]
    tok = tiny_proc.tokenizer
    config = {
        "architectures": ["InternVLForConditionalGeneration"], "downsample_ratio": 0.5, "image_seq_length": 16,
        "image_token_id": tok.convert_tokens_to_ids("<IMG_CONTEXT>"), "model_type": "internvl",
        "projector_hidden_act": "gelu",
        "text_config": {
            "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
            "bos_token_id": tok.convert_tokens_to_ids("<|endoftext|>"),
            "eos_token_id": tok.convert_tokens_to_ids("<|im_end|>"), "hidden_act": "silu", "hidden_size": 48,
            "initializer_range": 0.02, "intermediate_size": 64, "max_position_embeddings": 4096,
            "max_window_layers": 2, "model_type": "qwen2", "num_attention_heads": 4, "num_hidden_layers": 2,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 10000.0,
            "sliding_window": None, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
            "vocab_size": len(tok)},
        "tie_word_embeddings": True, "torch_dtype": "bfloat16", "transformers_version": "4.52.0.dev0",
        "vision_config": {
            "architectures": ["InternVisionModel"], "attention_bias": True, "attention_dropout": 0.0,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "hidden_size": 32, "image_size": [112, 112],
            "initializer_factor": 0.1, "initializer_range": 1e-10, "intermediate_size": 64,
            "layer_norm_eps": 1e-06, "layer_scale_init_value": 0.1, "model_type": "internvl_vision",
            "norm_type": "layer_norm", "num_attention_heads": 4, "num_channels": 3, "num_hidden_layers": 2,
            "patch_size": [14, 14], "projection_dropout": 0.0, "use_absolute_position_embeddings": True,
            "use_mask_token": False, "use_mean_pooling": True, "use_qk_norm": False},
        "vision_feature_layer": -1, "vision_feature_select_strategy": "default",
    }
    preprocessor = {"crop_size": None, "crop_to_patches": False, "data_format": "channels_first",
                    "default_to_square": True, "do_center_crop": None, "do_convert_rgb": True, "do_normalize": True,
                    "do_rescale": True, "do_resize": True, "image_mean": [0.485, 0.456, 0.406],
                    "image_processor_type": "GotOcr2ImageProcessorFast", "image_std": [0.229, 0.224, 0.225],
                    "max_patches": 12, "min_patches": 1, "processor_class": "InternVLProcessor", "resample": 3,
                    "rescale_factor": 0.00392156862745098, "size": {"height": 112, "width": 112}}
    hub = _hub_dir(family_dirs["internvl3"], tmp_path / "InternVL3-tiny-hf", config, preprocessor,
                   {"image_seq_length": 16, "processor_class": "InternVLProcessor"})
    model, processor = load_model_and_processor(hub, dtype="float32")
    assert type(model).__name__ == "InternVLForConditionalGeneration"
    _same_weights(model, tiny_model)
    assert processor.image_seq_length == 16 and processor.image_processor.max_patches == 12
    img = Image.fromarray(np.full((112, 336, 3), 100, np.uint8))      # 1x3 tiles + thumbnail
    assert processor_inputs(processor, [Sample(images=[np.asarray(img)])])["image_tiles"].tolist() == [[4, 1, 3]]
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False,
                                         add_generation_prompt=True)
    enc = processor(text=[text], images=[img], return_tensors="pt")
    assert int((enc["input_ids"] == processor.image_token_id).sum()) == 4 * 16
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()


# ------------------------------------------------------------------------------------ a PaStA step, generation
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("tune", ["full", "lora"])
def test_one_pasta_step_trains_the_vision_tower_only(family_dirs, family, tune):
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.data import make_samples
    from hatch_vlm.pasta.loss import patch_align
    from hatch_vlm.pasta.metrics import geometry_tensors
    from hatch_vlm.pasta.trainer import freeze_for_pasta, llm_state

    model, processor = load_model_and_processor(family_dirs[family], dtype="float32")
    cfg = PastaConfig(model_dir="", output_dir="", tune=tune, data="toy_room")
    samples = make_samples(cfg, 2, seed=3)
    frozen = llm_state(model)
    model = freeze_for_pasta(model, cfg)
    model.train()
    adapter = adapter_for_model(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(adapter.is_vision_parameter_name(n) for n, _ in trainable)
    # The collator's inputs (PastaCollator uses processor_inputs), cells, the fused loss, one SGD step.
    inputs = processor_inputs(processor, samples)
    emb = cell_embeddings_from_pixels(model, inputs["pixel_values"], layout_of(inputs), 2, cfg.grid)
    depth, K, T = geometry_tensors(samples)
    loss, valid = patch_align(emb.float(), depth, K, T, cfg.grid, cfg.grid, cfg.tau_t, cfg.tau_p, cfg.abs_tol,
                              cfg.rel_tol, cfg.stride, cfg.min_overlap, return_num_valid=True)
    assert valid > 0 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in trainable)
    before = [p.detach().clone() for _, p in trainable]
    torch.optim.SGD([p for _, p in trainable], lr=1e-2).step()
    assert any(not torch.equal(b, p) for b, (_, p) in zip(before, trainable))
    after = llm_state(model.merge_and_unload() if tune == "lora" else model)
    assert after.keys() == frozen.keys() and all(torch.equal(after[k], frozen[k]) for k in frozen)


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_and_sft_lora_targets(loaded, family_dirs, family):
    from peft import get_peft_model

    from hatch_vlm.actor.generation import generate_completions, vision_token_ids
    from hatch_vlm.actor.sft import make_lora_config
    from hatch_vlm.models.compat import checkpointing_deprecations_ignored

    model, processor = loaded[family]
    adapter = adapter_for_model(model)
    assert vision_token_ids(processor) == adapter.never_generate_ids(processor)
    rng = np.random.default_rng(1)
    rows = [{"prompt": [{"role": "user", "content": [adapter.image_item(), adapter.image_item(),
                                                     {"type": "text", "text": "Which image is left?"}]}],
             "images": [Image.fromarray(rng.integers(0, 256, (112, 112 * (1 + k), 3), dtype=np.uint8))
                        for k in range(2)]}]
    out = generate_completions(model, processor, rows, max_new_tokens=4)
    assert len(out) == 1 and isinstance(out[0], str)
    # SFT's default LoRA reaches the LLM's attention only (InternViT has q_proj / v_proj too).
    with checkpointing_deprecations_ignored():
        peft_model = get_peft_model(load_model_and_processor(family_dirs[family])[0], make_lora_config({}, model))
    lora = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert lora and all(".language_model." in n and ("q_proj" in n or "v_proj" in n) for n in lora)


def test_cell_embeddings_of_samples_any_family(loaded):
    """The sample-level entry point (`cell_embeddings`) works on every family, two views."""
    for family, (model, processor) in loaded.items():
        samples = [Sample(images=[np.full((112, 112, 3), v, np.uint8) for v in (50, 200)])]
        with torch.no_grad():
            emb = cell_embeddings(model, processor, samples, N)
        assert emb.shape == (1, 2, N * N, 48), family


def test_config_model_family(family_dirs):
    """`model: {path: tiny, family: ...}` picks the tiny model's family; with a directory it must agree with
    the directory's config.json."""
    from hatch_vlm.pipeline.config import HatchConfig
    from hatch_vlm.utils.config import ConfigError

    assert HatchConfig().model.tiny_family == "qwen2.5-vl"
    assert HatchConfig(model={"path": "tiny", "family": "Qwen3-VL"}).model.tiny_family == "qwen3-vl"
    assert HatchConfig(model={"path": str(family_dirs["internvl3"]), "family": "internvl3"}).model.family == "internvl3"
    with pytest.raises(ConfigError, match="unknown model family 'llava'"):
        HatchConfig(model={"path": "tiny", "family": "llava"})
    with pytest.raises(ConfigError, match="holds a qwen3-vl model"):
        HatchConfig(model={"path": str(family_dirs["qwen3-vl"]), "family": "internvl3"})


def test_qwen3_vl_pasta_stage_end_to_end(family_dirs, tmp_path):
    """`run_pasta_stage` on Qwen3-VL (the Trainer, the collator, the fused loss, the saved model reloaded):
    everything outside the tower, DeepStack mergers included, leaves bit-identical."""
    from hatch_vlm.pasta.config import PastaConfig
    from hatch_vlm.pasta.stage import run_pasta_stage

    metrics = run_pasta_stage(PastaConfig(model_dir=str(family_dirs["qwen3-vl"]), output_dir=str(tmp_path / "p"),
                                          data="toy_room", num_train=8, num_eval=2, max_steps=2,
                                          per_device_train_batch_size=4, plot=False, evaluate_before=False))
    assert metrics["steps"] == 2 and metrics["llm_unchanged"] is True
    model, _ = load_model_and_processor(metrics["checkpoint"])
    assert adapter_for_model(model).family == "qwen3-vl"
