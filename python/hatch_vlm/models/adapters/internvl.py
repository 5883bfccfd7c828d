"""InternVL (transformers `internvl`, e.g. OpenGVLab/InternVL3-*-hf): 448-px tiles, dynamic tiling, pixel
shuffle, thumbnail.

The image processor (GOT-OCR2's, `crop_to_patches=True` as `InternVLProcessor` calls it) picks a canvas of
`cols x rows` tiles whose aspect is closest to the image's (`get_optimal_tiled_canvas`, between min_patches
and max_patches tiles), resizes the whole image to `cols*T x rows*T` and cuts it into tiles in raster order;
when there is more than one tile it appends a *thumbnail* (the whole image resized to one tile). Each tile
goes through the ViT alone; the CLS token is dropped and a 2x2 pixel shuffle (downsample_ratio 0.5) merges
patches, so a tile gives s x s merged tokens (s = T/patch/2: 16 for 448/14) in raster order over the tile.

Image coordinates: tile (tr, tc) covers the image fraction rows [tr/rows, (tr+1)/rows), cols [tc/cols, ...),
so stitching the tiles' token grids gives one (rows*s) x (cols*s) grid over the whole image, the layout PaStA's
cells need. **The thumbnail is not pooled into cells**: it is a second, coarser view of the whole image, not
a view of any cell; its tokens still reach the LLM (the processor's prompt has them), only the cell
embeddings leave them out. A single-tile image has no thumbnail.

The per-image layout (`image_tiles`, [N_img, 3]) is (tiles including the thumbnail, rows, cols); it is
recomputed from the image sizes with the processor's own tiling rule and checked against its `num_patches`.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from .base import ModelAdapter, TokenGrid
from .qwen import to_pil

INTERNVL_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>",
                           "<video>")

# InternVL3-*-hf's template, reduced to what hatch uses: an image item is "<IMG_CONTEXT>\n" (the processor
# expands it to <img><IMG_CONTEXT>*(256 per tile)</img>).
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'video' %}<video>\n"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _size_hw(size) -> tuple[int, int]:
    if isinstance(size, dict):
        return int(size["height"]), int(size["width"])
    return int(size.height), int(size.width)


def tile_layout(image_size: tuple[int, int], tile: tuple[int, int], min_patches: int, max_patches: int,
                crop_to_patches: bool = True) -> tuple[int, int, int]:
    """(tiles including the thumbnail, rows, cols) of an image of (height, width), by the image processor's
    rule (GOT-OCR2 `crop_image_to_patches`)."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    if not crop_to_patches or max_patches <= 1:
        return 1, 1, 1
    cols, rows = get_optimal_tiled_canvas(tuple(image_size), tuple(tile), min_patches, max_patches)
    n = rows * cols
    return (n + 1 if n > 1 else 1), rows, cols


class InternVLAdapter(ModelAdapter):
    family: ClassVar[str] = "internvl3"
    model_types: ClassVar[tuple[str, ...]] = ("internvl",)
    layout_key: ClassVar[str] = "image_tiles"
    vision_lora_targets: ClassVar[str] = (
        r".*(vision_tower\.encoder\.layer\.\d+\.(attention\.(q_proj|k_proj|v_proj|projection_layer)"
        r"|mlp\.(fc1|fc2))|multi_modal_projector\.(linear_1|linear_2))")
    # The ViT's attention has q_proj / v_proj too: the LLM default must name the language model.
    llm_lora_targets: ClassVar[str] = r".*language_model\.layers\.\d+\.self_attn\.(q_proj|v_proj)"
    never_generate_tokens: ClassVar[tuple[str, ...]] = ("<IMG_CONTEXT>", "<img>", "</img>", "<video>")
    special_tokens: ClassVar[tuple[str, ...]] = INTERNVL_SPECIAL_TOKENS
    chat_template: ClassVar[str] = INTERNVL_CHAT_TEMPLATE
    # Tiny build: 112-px tiles (8x8 patches of 14 px -> 4x4 merged tokens), at most 6 tiles + thumbnail.
    tiny_tile: ClassVar[int] = 112
    tiny_max_patches: ClassVar[int] = 6

    def model_class(self):
        from transformers import InternVLForConditionalGeneration

        return InternVLForConditionalGeneration

    def load_processor(self, model_dir, min_pixels=None, max_pixels=None):
        import json
        from pathlib import Path

        from ..processor import load_internvl_processor

        cfg = json.loads((Path(model_dir) / "config.json").read_text())
        return load_internvl_processor(model_dir, image_seq_length=int(cfg.get("image_seq_length", 256)),
                                       min_pixels=min_pixels, max_pixels=max_pixels)

    def vision_modules(self, model) -> list[nn.Module]:
        core = self.core(model)
        return [core.vision_tower, core.multi_modal_projector]

    def is_vision_parameter_name(self, name: str) -> bool:
        return any(part in name or name.startswith(part[1:])
                   for part in (".vision_tower.", ".multi_modal_projector."))

    def tokens_per_side(self, model) -> int:
        cfg = self.core(model).config
        side = cfg.vision_config.image_size[0] // cfg.vision_config.patch_size[0]
        return int(round(side * cfg.downsample_ratio))

    def image_inputs(self, processor, images):
        ip = processor.image_processor
        pil = to_pil(images)
        out = ip(images=pil, crop_to_patches=True, return_tensors="pt")
        tile = _size_hw(ip.size)
        layout = torch.tensor([tile_layout((im.height, im.width), tile, ip.min_patches, ip.max_patches)
                               for im in pil])
        got = [int(n) for n in out["num_patches"]]
        if layout[:, 0].tolist() != got:
            raise RuntimeError(f"InternVL tiling: expected {layout[:, 0].tolist()} tiles per image, the image "
                               f"processor made {got}")
        return {"pixel_values": out["pixel_values"], "image_tiles": layout}

    def image_counts(self, layout: Tensor) -> list[int]:
        return layout[:, 0].tolist()

    def token_grids(self, model, pixel_values: Tensor, layout: Tensor) -> list[TokenGrid]:
        core = self.core(model)
        param = next(core.vision_tower.parameters())
        pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
        layout = layout.cpu()
        if int(layout[:, 0].sum()) != pixel_values.shape[0]:
            raise ValueError(f"image_tiles accounts for {int(layout[:, 0].sum())} tiles, pixel_values has "
                             f"{pixel_values.shape[0]}")
        out = core.get_image_features(pixel_values=pixel_values)
        feats = out.pooler_output if hasattr(out, "pooler_output") else out     # [tiles, s*s, D]
        s = self.tokens_per_side(model)
        if feats.shape[1] != s * s:
            raise ValueError(f"expected {s * s} merged tokens per tile, got {feats.shape[1]}")
        grids, start = [], 0
        for n, rows, cols in layout.tolist():
            tiles = feats[start:start + rows * cols]        # the thumbnail (index rows*cols) is left out
            start += n
            grid = tiles.reshape(rows, cols, s, s, -1).permute(0, 2, 1, 3, 4).reshape(rows * s * cols * s, -1)
            grids.append(TokenGrid(grid, rows * s, cols * s))
        return grids

    # ---------------------------------------------------------------------------------- tiny build
    def tiny_tokenizer_kwargs(self):
        return {"extra_special_tokens": {"start_image_token": "<img>", "end_image_token": "</img>",
                                         "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"}}

    def tiny_processor(self, tokenizer):
        from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

        from ..processor import HatchInternVLProcessor

        ip = GotOcr2ImageProcessorPil(size={"height": self.tiny_tile, "width": self.tiny_tile},
                                      crop_to_patches=True, min_patches=1, max_patches=self.tiny_max_patches,
                                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
        s = self.tiny_tile // 14 // 2
        return HatchInternVLProcessor(ip, tokenizer, chat_template=self.chat_template, image_seq_length=s * s)

    def tiny_config(self, tokenizer):
        from transformers import InternVLConfig

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        hidden = 48
        s = self.tiny_tile // 14 // 2
        return InternVLConfig(
            text_config=dict(
                model_type="qwen2", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=True,
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
            vision_config=dict(
                hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                image_size=self.tiny_tile, patch_size=14, attention_bias=True),   # InternViT: qkv biases
            image_token_id=ids["<IMG_CONTEXT>"], image_seq_length=s * s, downsample_ratio=0.5,
            tie_word_embeddings=True,
        )
