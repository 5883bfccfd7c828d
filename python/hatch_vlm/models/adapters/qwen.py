"""Qwen2.5-VL (the paper's base) and Qwen3-VL.

Both resize each image to sides that are multiples of patch x merge px (Qwen2.5-VL: 14 x 2 = 28,
Qwen3-VL: 16 x 2 = 32; `smart_resize`, aspect kept, area within [min_pixels, max_pixels]) and report
`image_grid_thw[i] = (1, H'/patch, W'/patch)`. `get_image_features(...).pooler_output` is one tensor per
image of merged tokens in raster order over the (H'/(patch*merge)) x (W'/(patch*merge)) grid; the resized
image covers the whole original, so that grid covers the image. Qwen3-VL's DeepStack features (mergers of
intermediate blocks, added to the first LLM layers' hidden states) are not cell embeddings: cells pool the
final merger's output, like Qwen2.5-VL's, and PaStA leaves the DeepStack mergers frozen (they get no
gradient from the PaStA loss; a trainable parameter without one would break DDP).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .base import ModelAdapter, TokenGrid

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>")

# Qwen2.5-VL's template, reduced to what hatch uses: each image item becomes
# <|vision_start|><|image_pad|><|vision_end|>, each message <|im_start|>role\n...<|im_end|>\n.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def to_pil(images: Sequence) -> list[Image.Image]:
    return [img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
            for img in images]


class _QwenAdapter(ModelAdapter):
    """What Qwen2.5-VL and Qwen3-VL share: `image_grid_thw`, `model.visual`, the `<|...|>` vision tokens."""

    layout_key: ClassVar[str] = "image_grid_thw"
    never_generate_tokens: ClassVar[tuple[str, ...]] = (
        "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    special_tokens: ClassVar[tuple[str, ...]] = QWEN_SPECIAL_TOKENS
    chat_template: ClassVar[str] = QWEN_CHAT_TEMPLATE
    patch_size: ClassVar[int]
    tiny_min_pixels: ClassVar[int]
    tiny_max_pixels: ClassVar[int]

    def processor_class(self):
        raise NotImplementedError

    def load_processor(self, model_dir, min_pixels=None, max_pixels=None):
        from ..processor import load_qwen_processor

        return load_qwen_processor(model_dir, min_pixels=min_pixels, max_pixels=max_pixels,
                                   processor_class=self.processor_class(), default_patch_size=self.patch_size)

    def tiny_processor(self, tokenizer):
        from ..processor import build_image_processor

        image_processor = build_image_processor(self.tiny_min_pixels, self.tiny_max_pixels,
                                                patch_size=self.patch_size, **self.tiny_image_kwargs())
        return self.processor_class()(image_processor, tokenizer, chat_template=self.chat_template)

    def tiny_image_kwargs(self) -> dict:
        return {}

    def vision_modules(self, model) -> list[nn.Module]:
        return [self.core(model).visual]

    def is_vision_parameter_name(self, name: str) -> bool:
        return ".visual." in name or name.startswith("visual.")

    def merge_size(self, model) -> int:
        return int(self.core(model).visual.spatial_merge_size)

    def image_inputs(self, processor, images):
        out = processor.image_processor(images=to_pil(images), return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def image_counts(self, layout: Tensor) -> list[int]:
        return layout.prod(-1).tolist()

    def token_grids(self, model, pixel_values: Tensor, layout: Tensor) -> list[TokenGrid]:
        core = self.core(model)
        param = next(core.visual.parameters())
        pixel_values = pixel_values.to(device=param.device, dtype=param.dtype)
        out = core.get_image_features(pixel_values=pixel_values, image_grid_thw=layout.to(param.device))
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        merge = int(core.visual.spatial_merge_size)
        if isinstance(feats, Tensor):   # older transformers: one concatenated tensor
            feats = torch.split(feats, (layout.prod(-1) // merge**2).tolist())
        grids = []
        for tok, (t, gh, gw) in zip(feats, layout.tolist()):
            if t != 1:
                raise ValueError(f"expected still images (grid t = 1), got image_grid_thw t = {t}")
            grids.append(TokenGrid(tok, gh // merge, gw // merge))
        return grids


class Qwen25VLAdapter(_QwenAdapter):
    """Qwen2.5-VL: 14-px patches, 2x2 merge -> 28-px merged tokens, window attention in the tower."""

    family: ClassVar[str] = "qwen2.5-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen2_5_vl",)
    patch_size: ClassVar[int] = 14
    # Linear layers of the vision tower that LoRA adapts (blocks' attention + MLP, and the merger's MLP).
    vision_lora_targets: ClassVar[str] = (
        r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))|merger\.mlp\.(0|2))")
    # 112x112 .. 224x224 resized pixels (4x4 .. 8x8 merged tokens): n = 4 cells always get a token.
    tiny_min_pixels: ClassVar[int] = 112 * 112
    tiny_max_pixels: ClassVar[int] = 224 * 224

    def model_class(self):
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    def processor_class(self):
        from ..processor import HatchQwenProcessor

        return HatchQwenProcessor

    def tiny_config(self, tokenizer):
        from transformers import Qwen2_5_VLConfig

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        hidden = 48
        return Qwen2_5_VLConfig(
            text_config=dict(
                vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 10000.0},
                tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"]),
            vision_config=dict(
                depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=14, spatial_merge_size=2,
                temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1], out_hidden_size=hidden,
                in_channels=3),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"], tie_word_embeddings=True,
        )


class Qwen3VLAdapter(_QwenAdapter):
    """Qwen3-VL: 16-px patches, 2x2 merge -> 32-px merged tokens, DeepStack (see the module doc)."""

    family: ClassVar[str] = "qwen3-vl"
    model_types: ClassVar[tuple[str, ...]] = ("qwen3_vl",)
    patch_size: ClassVar[int] = 16
    # Blocks' attention + MLP and the final merger; not the DeepStack mergers (`deepstack_merger_list`).
    vision_lora_targets: ClassVar[str] = (
        r".*visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(linear_fc1|linear_fc2))|merger\.(linear_fc1|linear_fc2))")
    # 128x128 .. 256x256 resized pixels (4x4 .. 8x8 merged tokens of 32 px).
    tiny_min_pixels: ClassVar[int] = 128 * 128
    tiny_max_pixels: ClassVar[int] = 256 * 256

    def model_class(self):
        from transformers import Qwen3VLForConditionalGeneration

        return Qwen3VLForConditionalGeneration

    def processor_class(self):
        from ..processor import HatchQwen3VLProcessor

        return HatchQwen3VLProcessor

    def tiny_image_kwargs(self) -> dict:
        # Qwen3-VL's hub preprocessor normalises with mean = std = 0.5.
        return {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}

    def vision_modules(self, model) -> list[nn.Module]:
        visual = self.core(model).visual
        if any(True for _ in visual.parameters(recurse=False)):
            raise TypeError("Qwen3-VL vision tower with direct parameters: update Qwen3VLAdapter.vision_modules")
        return [m for name, m in visual.named_children() if name != "deepstack_merger_list"]

    def is_vision_parameter_name(self, name: str) -> bool:
        return super().is_vision_parameter_name(name) and ".deepstack_merger_list." not in name

    def tiny_config(self, tokenizer):
        from transformers import Qwen3VLConfig

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in self.special_tokens}
        hidden = 48
        return Qwen3VLConfig(
            text_config=dict(
                vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=12, max_position_embeddings=4096,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 2], "mrope_interleaved": True,
                                 "rope_theta": 10000.0},
                tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"]),
            vision_config=dict(
                depth=2, hidden_size=32, intermediate_size=64, num_heads=4, patch_size=16, spatial_merge_size=2,
                temporal_patch_size=2, out_hidden_size=hidden, in_channels=3, num_position_embeddings=64,
                deepstack_visual_indexes=[0]),
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=True,
        )
