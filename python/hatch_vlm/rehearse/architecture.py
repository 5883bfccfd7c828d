"""Architecture-only checkpoints: a directory with a real model's config.json and processor settings but no
weights (configs/models/*), made loadable by `from_pretrained` with random weights, at full or reduced depth.

* `materialise(src, out, layers=None)`: writes `out`, a normal checkpoint directory (safetensors + config +
  processor + tokenizer) of the architecture in `src`, random weights in the config's dtype, built fast:
  the modules are constructed with every initialiser switched off (transformers' `no_init_weights`) and
  each parameter is then filled from one shared pool of N(0, initializer_range²) values (norm weights 1,
  biases 0). The values are not a trained model's; their cost is: same shapes, dtypes, tokens, steps.
  `layers=(text, vision)` keeps that many decoder layers / vision blocks (`shrink`), full width.
* A directory without tokenizer files gets a stand-in tokenizer (`stand_in_tokenizer`): our byte-level BPE,
  padded with never-matched filler entries so that the family's special tokens sit at the checkpoint's ids
  (image, video, vision start/end, bos / eos from config.json). Visual token counts are exact; text token
  counts are those of a 1k-entry BPE, more tokens per word than the real tokenizer (an overestimate), and
  the rehearsal report says so.
"""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model")
POOL_SIZE = 1 << 24            # values in the shared random pool (32 MiB in bf16)


def has_weights(model_dir: str | Path) -> bool:
    d = Path(model_dir)
    return any(any(d.glob(p)) for p in WEIGHT_PATTERNS)


def has_tokenizer(model_dir: str | Path) -> bool:
    d = Path(model_dir)
    return (d / "tokenizer.json").is_file() or (d / "vocab.json").is_file() or (d / "tokenizer.model").is_file()


def read_config(model_dir: str | Path):
    """The transformers config of a directory; a clear error without config.json."""
    from transformers import AutoConfig

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no config.json (a checkpoint or an architecture-only directory "
                                "needs one; see configs/models/)")
    return AutoConfig.from_pretrained(str(model_dir), local_files_only=True)


# ------------------------------------------------------------------------------------------------ depth
@dataclass(frozen=True)
class Depth:
    """Layer counts of a model: text decoder layers and vision blocks."""
    text: int
    vision: int


def _vision_key(vision_config) -> str:
    return "depth" if hasattr(vision_config, "depth") else "num_hidden_layers"


def depth_of(config) -> Depth:
    return Depth(int(config.text_config.num_hidden_layers), int(getattr(config.vision_config,
                                                                        _vision_key(config.vision_config))))


def min_vision_blocks(config) -> int:
    """Qwen3-VL taps len(deepstack_visual_indexes) distinct vision blocks."""
    return max(1, len(getattr(config.vision_config, "deepstack_visual_indexes", None) or []))


def min_text_layers(config) -> int:
    """Qwen3-VL adds its deepstack features to the first len(deepstack_visual_indexes) decoder layers."""
    return max(1, len(getattr(config.vision_config, "deepstack_visual_indexes", None) or []))


def _full_attention_blocks(indexes: list[int], old: int, new: int) -> list[int]:
    """Qwen2.5-VL's full-attention blocks (7, 15, 23, 31 of 32: one in 8, the rest windowed) on `new` blocks:
    the same share, at least one, evenly spaced (4 of 32 -> 1 of 4: block 3)."""
    count = max(1, round(len(indexes) * new / old))
    return [round((k + 1) * new / count) - 1 for k in range(count)]


def _deepstack_blocks(indexes: list[int], old: int, new: int) -> list[int]:
    """Qwen3-VL's deepstack taps (5, 11, 17 of 24): each has a merger of its own (parameters) feeding one
    decoder layer, so all of them stay, at the same relative positions, distinct."""
    if new < len(indexes):
        raise ValueError(f"this model needs >= {len(indexes)} vision blocks (deepstack taps {indexes}), got {new}")
    out = [min(new - 1, round((i + 1) * new / old) - 1) for i in indexes]
    for k in range(1, len(out)):          # keep them distinct and increasing
        out[k] = max(out[k], out[k - 1] + 1)
    shift = max(0, out[-1] - (new - 1))
    return [i - shift for i in out]


def shrink(config, depth: Depth):
    """A copy of `config` with `depth.text` decoder layers and `depth.vision` vision blocks, full width;
    the per-layer lists (layer_types, full-attention and deepstack indexes) follow."""
    full = depth_of(config)
    if not (1 <= depth.text <= full.text and 1 <= depth.vision <= full.vision):
        raise ValueError(f"depth {depth} is outside the model's {full}")
    if depth.text < min_text_layers(config):
        raise ValueError(f"this model needs >= {min_text_layers(config)} decoder layers (deepstack), got {depth.text}")
    c = copy.deepcopy(config)
    t = c.text_config
    t.num_hidden_layers = depth.text
    if getattr(t, "layer_types", None):
        t.layer_types = list(t.layer_types)[:depth.text]
    if getattr(t, "max_window_layers", None) is not None:
        t.max_window_layers = min(t.max_window_layers, depth.text)
    v = c.vision_config
    setattr(v, _vision_key(v), depth.vision)
    if getattr(v, "fullatt_block_indexes", None):
        v.fullatt_block_indexes = _full_attention_blocks(list(v.fullatt_block_indexes), full.vision, depth.vision)
    if getattr(v, "deepstack_visual_indexes", None):
        v.deepstack_visual_indexes = _deepstack_blocks(list(v.deepstack_visual_indexes), full.vision,
                                                       depth.vision)
    if getattr(c, "deepstack_visual_indexes", None):          # some versions keep it at the top level
        c.deepstack_visual_indexes = list(v.deepstack_visual_indexes)
    return c


def layer_parameters(config) -> tuple[int, int, int]:
    """(parameters outside the repeated layers, per decoder layer, per vision block), exact: counted on two
    meta-device builds of the model at two depths."""
    full = depth_of(config)
    lo = Depth(min_text_layers(config), min_vision_blocks(config))
    hi = Depth(lo.text + 1, lo.vision + 1)
    n_lo, n_t, n_v = (_count(shrink(config, d)) for d in (lo, Depth(hi.text, lo.vision), Depth(lo.text, hi.vision)))
    per_text, per_vision = n_t - n_lo, n_v - n_lo
    base = n_lo - lo.text * per_text - lo.vision * per_vision
    assert base + full.text * per_text + full.vision * per_vision > 0
    return base, per_text, per_vision


def depth_fraction(config, depth: Depth) -> float:
    """The share of the repeated layers' parameters that a model of `depth` keeps (1 for the full model):
    the `x` of hatch_vlm.rehearse.fit."""
    _, pt, pv = layer_parameters(config)
    full = depth_of(config)
    return (depth.text * pt + depth.vision * pv) / (full.text * pt + full.vision * pv)


def _model_class(config):
    from hatch_vlm.models.adapters import adapter_for_model_type

    return adapter_for_model_type(config.model_type).model_class()


def meta_model(config):
    """The model of `config` on the meta device: shapes and dtypes, no memory."""
    cls = _model_class(config)
    with torch.device("meta"):
        return cls._from_config(config, dtype=_dtype(config))


def _count(config) -> int:
    from .accounting import unique_parameters

    return sum(p.numel() for p in unique_parameters(meta_model(config)))


def _dtype(config) -> torch.dtype:
    from hatch_vlm.models.precision import declared_dtype

    return declared_dtype(config) or torch.float32


# ------------------------------------------------------------------------------------------------ weights
def random_model(config, seed: int = 0):
    """The model of `config` on the CPU in the config's dtype, random weights built fast (module doc)."""
    from transformers.initialization import no_init_weights

    cls = _model_class(config)
    dtype = _dtype(config)
    gen = torch.Generator().manual_seed(seed)
    std = float(getattr(config.text_config, "initializer_range", None) or getattr(config, "initializer_range", 0.02))
    pool = (torch.randn(POOL_SIZE, generator=gen) * std).to(dtype)
    with no_init_weights():
        model = cls._from_config(config, dtype=dtype)
    # no_init_weights also skips the tying of the LM head to the embeddings (tie_word_embeddings): tie now, or
    # the saved model would carry two different matrices and load untied (a bigger model than the real one)
    model.tie_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.zero_()
            elif p.dim() == 1 and ("norm" in name or "ln" in name.split(".")[-2]):
                p.fill_(1.0)
            else:
                _fill_from_pool(p, pool, gen)
    model.eval()
    return model


def _fill_from_pool(p: torch.Tensor, pool: torch.Tensor, gen: torch.Generator) -> None:
    """p <- consecutive pool values from a random offset, the pool repeated as often as p needs."""
    flat = p.view(-1)
    n, m = flat.numel(), pool.numel()
    start = int(torch.randint(0, m, (1,), generator=gen))
    done = 0
    while done < n:
        take = min(n - done, m - start)
        flat[done:done + take].copy_(pool[start:start + take])
        done += take
        start = 0


def materialise(src: str | Path, out: str | Path, depth: Depth | None = None, seed: int = 0) -> Path:
    """Writes a loadable checkpoint of the architecture in `src` (random weights; `depth`: fewer layers) to
    `out` atomically; returns `out`. Reuses `out` when it holds a complete one for the same source and depth."""
    from hatch_vlm.models.loading import quiet_progress
    from hatch_vlm.utils.io import atomic_directory

    src, out = Path(src), Path(out)
    config = read_config(src)
    full = depth_of(config)
    depth = depth or full
    cfg = shrink(config, depth) if depth != full else config
    import hashlib

    stamp = {"source": str(src.resolve()), "depth": [depth.text, depth.vision], "seed": seed,
             "tokenizer": "checkpoint" if has_tokenizer(src) else "stand-in",
             "config": hashlib.sha256(cfg.to_json_string().encode()).hexdigest()[:16]}
    marker = out / "rehearsal_model.json"
    if marker.is_file() and json.loads(marker.read_text()) == stamp:
        return out
    if out.exists():
        shutil.rmtree(out)
    with atomic_directory(out) as tmp:
        for f in src.iterdir():
            if f.is_file() and f.name != "config.json" and not any(f.match(p) for p in WEIGHT_PATTERNS):
                shutil.copy2(f, tmp / f.name)
        if not has_tokenizer(src):
            stand_in_tokenizer(cfg).save_pretrained(tmp)
        model = random_model(cfg, seed)
        with quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        del model
        (tmp / "rehearsal_model.json").write_text(json.dumps(stamp))
    return out


# ------------------------------------------------------------------------------------------------ tokenizer
def _special_ids(config, specials: tuple[str, ...]) -> dict[str, int]:
    """The checkpoint's ids of the family's special tokens, where config.json gives them; the others take the
    first free ids from the smallest known one on (their ids change no cost)."""
    text = config.text_config
    known = {"<|image_pad|>": "image_token_id", "<IMG_CONTEXT>": "image_token_id",
             "<|video_pad|>": "video_token_id", "<video>": "video_token_id",
             "<|vision_start|>": "vision_start_token_id", "<|vision_end|>": "vision_end_token_id"}
    ids: dict[str, int] = {}
    for tok, key in known.items():
        if tok in specials and getattr(config, key, None) is not None:
            ids[tok] = int(getattr(config, key))
    for tok, key in (("<|endoftext|>", "bos_token_id"), ("<|im_end|>", "eos_token_id")):
        value = getattr(config, key, None) or getattr(text, key, None)
        if tok in specials and isinstance(value, int) and value not in ids.values():
            ids[tok] = value
    nxt = min(ids.values()) if ids else int(text.vocab_size) - len(specials)
    for tok in specials:
        if tok not in ids:
            while nxt in ids.values():
                nxt += 1
            ids[tok] = nxt
    if max(ids.values()) >= int(text.vocab_size):
        raise ValueError(f"special token ids {ids} do not fit the vocabulary of {text.vocab_size}")
    return ids


def stand_in_tokenizer(config):
    """A tokenizer for an architecture without one: our BPE (hatch_vlm.models.tiny) with filler entries, the
    family's special tokens at the checkpoint's ids, the family's chat template (module doc)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from hatch_vlm.models.adapters import adapter_for_model_type
    from hatch_vlm.models.tiny import build_tokenizer

    adapter = adapter_for_model_type(config.model_type)
    base = build_tokenizer(family=adapter.family)
    spec = json.loads(base.backend_tokenizer.to_str())
    specials = tuple(adapter.special_tokens) + tuple(
        v for v in adapter.tiny_tokenizer_kwargs().get("extra_special_tokens", {}).values()
        if v not in adapter.special_tokens)
    ids = _special_ids(config, specials)
    regular = [t for t, _ in sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1]) if t not in specials]
    first_special = min(ids.values())
    if len(regular) > first_special:
        raise ValueError(f"the stand-in BPE has {len(regular)} entries, more than the first special id {first_special}")
    vocab = {t: i for i, t in enumerate(regular)}
    # fillers: never produced by a merge (no merge yields them), so they only pad the id range
    for i in range(len(regular), first_special):
        vocab[f"<|hatch_filler_{i}|>"] = i
    spec["model"]["vocab"] = vocab
    # added tokens take consecutive ids: the gaps between the checkpoint's special ids are fillers too
    by_id = {i: t for t, i in ids.items()}
    spec["added_tokens"] = [{"id": i, "content": by_id.get(i, f"<|hatch_filler_{i}|>"), "single_word": False,
                             "lstrip": False, "rstrip": False, "normalized": False, "special": True}
                            for i in range(first_special, max(ids.values()) + 1)]
    tok = Tokenizer.from_str(json.dumps(spec))
    extra = adapter.tiny_tokenizer_kwargs()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=adapter.chat_template, padding_side="left", **extra)
    for t, i in ids.items():
        got = fast.convert_tokens_to_ids(t)
        if got != i:
            raise RuntimeError(f"stand-in tokenizer: {t!r} got id {got}, the checkpoint's is {i}")
    return fast
