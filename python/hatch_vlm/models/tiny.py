"""Tiny models (~0.1-0.2M parameters) built offline, for tests, CI and quick experiments: Qwen2.5-VL (the
default), Qwen3-VL or InternVL3 (`family=`; the sizes live in each family's adapter,
`hatch_vlm.models.adapters`).

`build_tiny_model(out_dir, family=...)` trains a byte-level BPE tokenizer on an in-memory corpus (the
prompts, options, answers and ActoR action texts hatch produces) with the family's special tokens, builds
the family's ForConditionalGeneration from a config, and saves model + tokenizer + processor config with
`save_pretrained`, so that `hatch_vlm.models.loading.load_model_and_processor(out_dir)` loads it exactly as
it loads a real checkpoint of that family. Sizes follow docs/notes.md (vision out_hidden_size = text hidden_size;
sum(mrope_section) = head_dim / 2).
"""
from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .adapters import adapter_for_family
from .loading import quiet_progress

_QWEN25 = adapter_for_family("qwen2.5-vl")
SPECIAL_TOKENS = list(_QWEN25.special_tokens)
CHAT_TEMPLATE = _QWEN25.chat_template

# Image-size bounds of the tiny Qwen2.5-VL processor: 112x112 .. 224x224 resized pixels (4x4 .. 8x8 merged
# tokens), so n = 4 cells always get at least one token and the vision tower stays cheap on CPU.
TINY_MIN_PIXELS = _QWEN25.tiny_min_pixels
TINY_MAX_PIXELS = _QWEN25.tiny_max_pixels

_WORDS = """the a an of to in on at from with and or is are was be which what where how many much far
left right front back behind above below up down forward backward turn move rotate camera view image
images first second third fourth last object objects table chair sofa bed door window wall floor ceiling
lamp shelf desk cabinet plant picture tv box bag cup bottle book person room scene near nearest farthest
distance between height width length size metres meters meter m cm deg degrees angle direction
clockwise counterclockwise relative position positions orientation facing face you your if when
after before then would should could does do did it its this that these those there here than closer
further same different both neither all none answer question options option choose select correct
following please based taken standing while looking observer north south east west center middle
corner side top bottom yes no true false number count total visible appears shown seen frame frames
between motion translation rotation around among perspective viewpoint change moved""".split()

_ACTIONS = ["turn left", "turn right", "turn up", "turn down", "move forward", "move up", "move down"]


def tokenizer_corpus() -> list[str]:
    """Texts the tokenizer is trained on: prompts, options, answers, action blocks, numbers."""
    lines = [" ".join(_WORDS), " ".join(w.capitalize() for w in _WORDS)]
    letters = "ABCD"
    options = ["Left", "Right", "Front", "Back", "Back, Right", "Front, Left", "Above", "Below"]
    for i, (l, o) in enumerate(itertools.product(letters, options)):
        lines.append(f"<answer>{l}. {o}</answer> ({l}) {l}. {l}")
        lines.append(f"Options: A. {o} B. {options[i % 8]} C. {options[(i + 3) % 8]} D. {options[(i + 5) % 8]}")
    for k in range(200):
        a, b = divmod(k, 7)
        deg, dist = (k * 37) % 361, (k * 13 % 60) / 10
        lines.append(
            f"<action>{{from:{a % 4},to:{b % 4 + 1},action:[{{{_ACTIONS[k % 7]}: {deg} deg}}"
            f"{{{_ACTIONS[(k + 3) % 7]}: {dist:.1f} m}}]}}</action><answer>{letters[k % 4]}. "
            f"{options[k % 8]}</answer>")
        lines.append(f"{k} {k * 10} {k / 10:.1f} {k / 100:.2f} -{k} +{k} {k}%")
    lines.append("<action>{from:0,to:1,action:[{turn right: 120 deg}{move forward: 1.2 m}]}</action>"
                 "<answer>C. Back, Right</answer>")
    lines += [
        "Which object is closer to the camera in the second image?",
        "How far is the chair from the table in metres?",
        "From the viewpoint of the first image, where is the door? Answer with the option's letter.",
        "The images are taken from different positions in the same room.",
        "You are standing where image 1 was taken, facing the sofa. Where is the lamp?",
        "What is the distance between the camera positions of image 1 and image 2?",
        "Think about the camera motion first: " + " ".join(f"{{{a}: 30 deg}}" for a in _ACTIONS),
        "0123456789 .,:;!?()[]{}<>/\"'-_+=*%#@&",
    ]
    return lines


def build_tokenizer(vocab_size: int = 1024, family: str = "qwen2.5-vl") -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `tokenizer_corpus()` with the family's special tokens and chat template."""
    adapter = adapter_for_family(family)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(adapter.special_tokens),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=adapter.chat_template, padding_side="left",
                                   **adapter.tiny_tokenizer_kwargs())
    return fast


def tiny_config(tokenizer: PreTrainedTokenizerFast, family: str = "qwen2.5-vl"):
    """The tiny model's config (a `Qwen2_5_VLConfig` for the default family)."""
    return adapter_for_family(family).tiny_config(tokenizer)


def build_tiny_model(out_dir: str | Path, seed: int = 0, family: str = "qwen2.5-vl") -> Path:
    """Build the tiny model, tokenizer and processor of `family` ("qwen2.5-vl", "qwen3-vl", "internvl3") and
    save them to `out_dir`; returns the path.

    Deterministic for a given seed and family. Load it back with
    `hatch_vlm.models.loading.load_model_and_processor`.
    """
    adapter = adapter_for_family(family)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(family=adapter.family)
    config = adapter.tiny_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapter.model_class()(config)
    text = config.text_config
    model.generation_config.pad_token_id = text.pad_token_id
    model.generation_config.eos_token_id = text.eos_token_id
    with quiet_progress():
        model.save_pretrained(out_dir)
    processor = adapter.tiny_processor(tokenizer)
    processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
