"""Processors that need neither the hub nor torchvision: Qwen2.5-VL (`HatchQwenProcessor`), Qwen3-VL
(`HatchQwen3VLProcessor`) and InternVL (`HatchInternVLProcessor`), with their per-family loaders. This module
knows no family dispatch (the adapters, one level up, call it): `hatch_vlm.models.loading.load_processor`
picks the family from the directory's config.json (`hatch_vlm.models.adapters`).

transformers >= 5.10's `Qwen2VLImageProcessor` and the Qwen video processor need torchvision, which has no
CPU build here; the PIL image processor (`Qwen2VLImageProcessorPil`) does the same resizing
(`smart_resize` to multiples of 28 px) and normalisation. `HatchQwenProcessor` is `Qwen2_5_VLProcessor`
without the video processor (hatch only feeds still images). `AutoProcessor.from_pretrained` on a
directory saved with it returns only the tokenizer, so `load_qwen_processor` rebuilds it explicitly from the
directory's tokenizer and image-processor config -- the same code path for the tiny model and for a
real Qwen2.5-VL-3B checkpoint. Qwen3-VL uses the same PIL image processor with 16-px patches (32-px merged
tokens); InternVL the PIL GOT-OCR2 image processor (448-px tiles, dynamic tiling + thumbnail).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from transformers import AutoTokenizer
from transformers.models.internvl.processing_internvl import InternVLProcessor
from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
# Keys of preprocessor_config.json that the PIL image processor understands.
_IMAGE_KEYS = ("min_pixels", "max_pixels", "patch_size", "temporal_patch_size", "merge_size",
               "image_mean", "image_std", "do_resize", "do_rescale", "rescale_factor", "do_normalize",
               "do_convert_rgb", "size")
_INTERNVL_IMAGE_KEYS = ("size", "crop_to_patches", "min_patches", "max_patches", "image_mean", "image_std",
                        "do_resize", "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb", "resample")


class HatchQwenProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` with an image processor and a tokenizer only (no video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if tokenizer is None or image_processor is None:
            raise ValueError("HatchQwenProcessor needs both an image_processor and a tokenizer; got "
                             f"image_processor={type(image_processor).__name__}, "
                             f"tokenizer={type(tokenizer).__name__}")
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class HatchQwen3VLProcessor(Qwen3VLProcessor):
    """`Qwen3VLProcessor` with an image processor and a tokenizer only (no video processor)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        if tokenizer is None or image_processor is None:
            raise ValueError("HatchQwen3VLProcessor needs both an image_processor and a tokenizer")
        self.image_token = getattr(tokenizer, "image_token", None) or IMAGE_TOKEN
        self.video_token = getattr(tokenizer, "video_token", None) or VIDEO_TOKEN
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
        self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
        self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


class HatchInternVLProcessor(InternVLProcessor):
    """`InternVLProcessor` with an image processor and a tokenizer only (no video processor). The tokenizer
    names its image tokens (`start_image_token` `<img>`, `end_image_token` `</img>`, `context_image_token`
    `<IMG_CONTEXT>`, `video_token` `<video>`), as the hub's InternVL3-*-hf tokenizers do."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, image_seq_length: int = 256,
                 **kwargs):
        if tokenizer is None or image_processor is None:
            raise ValueError("HatchInternVLProcessor needs both an image_processor and a tokenizer")
        if chat_template is None:
            chat_template = getattr(tokenizer, "chat_template", None)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self.image_seq_length = image_seq_length
        self.start_image_token = getattr(tokenizer, "start_image_token", None) or "<img>"
        self.end_image_token = getattr(tokenizer, "end_image_token", None) or "</img>"
        self.image_token = getattr(tokenizer, "context_image_token", None) or "<IMG_CONTEXT>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<video>"
        self.start_image_token_id = tokenizer.convert_tokens_to_ids(self.start_image_token)
        self.end_image_token_id = tokenizer.convert_tokens_to_ids(self.end_image_token)
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.multimodal_pattern = re.compile(
            f"(?P<image>{re.escape(self.image_token)})|(?P<video>{re.escape(self.video_token)})")


def build_image_processor(min_pixels: int, max_pixels: int, **kwargs) -> Qwen2VLImageProcessorPil:
    """PIL Qwen2-VL image processor; images are resized so that min_pixels <= H'*W' <= max_pixels."""
    if min_pixels <= 0 or max_pixels < min_pixels:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, "
                         f"max_pixels={max_pixels}")
    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels, **kwargs)


def _image_processor_config(model_dir: Path) -> dict:
    """The image-processor settings of a saved directory: transformers 5 writes them under
    "image_processor" in processor_config.json, Qwen's hub checkpoints in preprocessor_config.json."""
    proc = model_dir / "processor_config.json"
    if proc.is_file():
        cfg = json.loads(proc.read_text()).get("image_processor")
        if cfg:
            return cfg
    pre = model_dir / "preprocessor_config.json"
    if pre.is_file():
        return json.loads(pre.read_text())
    raise FileNotFoundError(f"{model_dir} holds neither processor_config.json with an 'image_processor' "
                            "entry nor preprocessor_config.json: not a saved Qwen2.5-VL processor directory")


def _tokenizer_and_template(model_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chat_template = getattr(tokenizer, "chat_template", None)
    for name in ("chat_template.jinja", "chat_template.json"):
        path = model_dir / name
        if chat_template is None and path.is_file():
            text = path.read_text()
            chat_template = json.loads(text)["chat_template"] if name.endswith(".json") else text
    return tokenizer, chat_template


def load_qwen_processor(model_dir: str | Path, min_pixels: int | None = None, max_pixels: int | None = None,
                        processor_class=HatchQwenProcessor, default_patch_size: int = 14):
    """A Qwen2.5-VL (or, with `processor_class=HatchQwen3VLProcessor`, `default_patch_size=16`, Qwen3-VL)
    processor from a saved directory."""
    model_dir = Path(model_dir)
    cfg = _image_processor_config(model_dir)
    kwargs = {k: cfg[k] for k in _IMAGE_KEYS if k in cfg}
    # Older configs carry the bounds only in `size` ({"shortest_edge": min, "longest_edge": max}).
    size = kwargs.pop("size", None) or {}
    kwargs.setdefault("min_pixels", size.get("shortest_edge", 56 * 56))
    kwargs.setdefault("max_pixels", size.get("longest_edge", 28 * 28 * 1280))
    if min_pixels is not None:
        kwargs["min_pixels"] = min_pixels
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels
    kwargs.setdefault("patch_size", default_patch_size)
    image_processor = build_image_processor(**kwargs)
    tokenizer, chat_template = _tokenizer_and_template(model_dir)
    return processor_class(image_processor, tokenizer, chat_template=chat_template)


def load_internvl_processor(model_dir: str | Path, image_seq_length: int, min_pixels: int | None = None,
                            max_pixels: int | None = None) -> HatchInternVLProcessor:
    """An InternVL processor from a saved directory. The budget bounds the tiled canvas: min_pixels /
    max_pixels become min_patches / max_patches (tiles of the saved tile size, at least 1)."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    model_dir = Path(model_dir)
    cfg = _image_processor_config(model_dir)
    kwargs = {k: cfg[k] for k in _INTERNVL_IMAGE_KEYS if k in cfg}
    size = kwargs.get("size") or {"height": 448, "width": 448}
    tile = int(size["height"]) * int(size["width"])
    if min_pixels is not None:
        kwargs["min_patches"] = max(1, min_pixels // tile)
    if max_pixels is not None:
        kwargs["max_patches"] = max(1, max_pixels // tile)
    image_processor = GotOcr2ImageProcessorPil(**kwargs)
    tokenizer, chat_template = _tokenizer_and_template(model_dir)
    return HatchInternVLProcessor(image_processor, tokenizer, chat_template=chat_template,
                                  image_seq_length=image_seq_length)
