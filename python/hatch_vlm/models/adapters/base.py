"""The model-adapter interface: everything hatch needs to know about one model family, in one class.

An adapter is stateless (one instance per family, in `hatch_vlm.models.adapters.ADAPTERS`) and is found from a
checkpoint's `config.json` `model_type` (`adapter_for_dir`), from a loaded model (`adapter_for_model`) or from
a hatch processor (`adapter_for_processor`). See docs/adapters.md.

Image inputs travel as a dict (`image_inputs`): `pixel_values` and one per-image *layout* tensor under
`layout_key` (Qwen: `image_grid_thw`; InternVL: `image_tiles`). `token_grids` turns them into one `TokenGrid`
per image: merged tokens (LLM width) in raster order over an h x w grid that covers the whole image, so that
token (r, c) sees the image fraction rows [r/h, (r+1)/h), cols [c/w, (c+1)/w) -- what PaStA's cell pooling
(`hatch_vlm.pasta.cells`) needs, whatever the resizing or tiling.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn


@dataclass(frozen=True)
class TokenGrid:
    """One image's merged tokens `[h*w, D]`, raster order over an h x w grid covering the whole image."""

    tokens: Tensor
    h: int
    w: int

    def __post_init__(self):
        if self.tokens.dim() != 2 or self.tokens.shape[0] != self.h * self.w:
            raise ValueError(f"TokenGrid: tokens must be [h*w, D] = [{self.h * self.w}, D], "
                             f"got {tuple(self.tokens.shape)}")


def unwrap_model(model):
    """The transformers model inside distributed wrappers (DDP / DataParallel / DeepSpeed `.module`) and
    peft (`get_base_model`)."""
    while isinstance(model, nn.parallel.DistributedDataParallel | nn.DataParallel) or (
            type(model).__name__ == "DeepSpeedEngine"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


class ModelAdapter:
    """What is model-specific, for one family. Subclasses set the class attributes and the methods marked
    'family-specific'."""

    family: ClassVar[str]                    # the name users write ("qwen2.5-vl")
    model_types: ClassVar[tuple[str, ...]]   # config.json model_type values it serves
    layout_key: ClassVar[str]                # the per-image layout tensor's key in `image_inputs`
    # PaStA: names (substrings of parameter names) of the modules that make the cell embeddings; full
    # tuning trains exactly `vision_parameters`, LoRA targets `vision_lora_targets` (a peft regex).
    vision_lora_targets: ClassVar[str]
    # SFT / GRPO LoRA default: the LLM's attention q / v projections only (a list of names or a peft regex).
    llm_lora_targets: ClassVar[list[str] | str] = ["q_proj", "v_proj"]
    # Special tokens generation must never emit (an image placeholder breaks the feature / token count).
    never_generate_tokens: ClassVar[tuple[str, ...]] = ()

    # -------------------------------------------------------------------------------- model and processor
    def model_class(self):
        """The transformers ForConditionalGeneration class (family-specific)."""
        raise NotImplementedError

    def load_model(self, model_dir: str | Path, **kwargs):
        return self.model_class().from_pretrained(model_dir, local_files_only=True, **kwargs)

    def load_processor(self, model_dir: str | Path, min_pixels: int | None = None,
                       max_pixels: int | None = None):
        """The torchvision-free processor of a saved directory (family-specific). min_pixels / max_pixels:
        the image-size budget (Qwen: resized area bounds; InternVL: bounds on the tiled canvas area)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- modules
    def core(self, model):
        """The inner `*Model` (vision tower + LLM, no LM head) of a possibly wrapped model."""
        inner = unwrap_model(model)
        inner = getattr(inner, "model", inner)
        if not hasattr(inner, "get_image_features"):
            raise TypeError(f"{type(model).__name__} has no get_image_features: expected a {self.family} model")
        return inner

    def vision_modules(self, model) -> list[nn.Module]:
        """The modules whose output is the cell embeddings (family-specific): what PaStA trains."""
        raise NotImplementedError

    def vision_parameters(self, model) -> list[nn.Parameter]:
        seen, out = set(), []
        for m in self.vision_modules(model):
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def language_model(self, model) -> nn.Module:
        return self.core(model).language_model

    def is_vision_parameter_name(self, name: str) -> bool:
        """Whether a (possibly peft-prefixed) parameter name lies in `vision_modules`."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- images
    def image_inputs(self, processor, images: Sequence) -> dict[str, Tensor]:
        """`pixel_values` and the layout (`layout_key`) of PIL images, exactly as the processor's own call
        makes them for a prompt with these images (family-specific)."""
        raise NotImplementedError

    def token_grids(self, model, pixel_values: Tensor, layout: Tensor) -> list[TokenGrid]:
        """One `TokenGrid` per image (family-specific)."""
        raise NotImplementedError

    def image_counts(self, layout: Tensor) -> list[int]:
        """pixel_values rows per image (to slice a batch's pixel_values per image; family-specific)."""
        raise NotImplementedError

    # -------------------------------------------------------------------------------- chat and generation
    def image_item(self) -> dict[str, Any]:
        """The content item of one image in a chat message (every supported template reads this one)."""
        return {"type": "image"}

    def never_generate_ids(self, processor) -> list[int]:
        """Ids of `never_generate_tokens` that the processor's tokenizer knows."""
        tok = getattr(processor, "tokenizer", processor)
        ids = []
        for t in self.never_generate_tokens:
            i = tok.convert_tokens_to_ids(t)
            if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
                ids.append(i)
        return ids

    # -------------------------------------------------------------------------------- tiny offline build
    special_tokens: ClassVar[tuple[str, ...]] = ()

    def tiny_config(self, tokenizer):
        """The tiny model's config for a tokenizer with `special_tokens` (family-specific)."""
        raise NotImplementedError

    def tiny_processor(self, tokenizer):
        """The tiny model's processor (family-specific)."""
        raise NotImplementedError

    def tiny_tokenizer_kwargs(self) -> dict[str, Any]:
        """Extra `PreTrainedTokenizerFast` kwargs of the tiny tokenizer (e.g. named special tokens)."""
        return {}

    chat_template: ClassVar[str] = ""
