"""The architecture-only checkpoint directories under configs/models (config.json + processor settings of real
checkpoints, no weights): each config loads with AutoConfig, the model builds on the meta device (nothing is
allocated), its parameter count equals the published count recorded in configs/models/SOURCES.md, and hatch
recognises the family from the directory."""
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from hatch_vlm.models.adapters import adapter_for_dir

MODELS = Path(__file__).resolve().parents[2] / "configs" / "models"
# | `dir` | published count | exact or ±0.5 % | family |  -- the table in SOURCES.md
_ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|\s*([\d,.]+)\s*(B?)\s*\|\s*(exact|±0\.5 %)\s*\|\s*([\w.\-]+)\s*\|")


def _published() -> dict[str, tuple[int, bool, str]]:
    rows = {}
    for line in (MODELS / "SOURCES.md").read_text().splitlines():
        m = _ROW.match(line)
        if m:
            name, num, billions, kind, family = m.groups()
            count = float(num.replace(",", "")) * 1e9 if billions else int(num.replace(",", ""))
            rows[name] = (int(count), kind == "exact", family)
    return rows


PUBLISHED = _published()
DIRS = sorted(p.name for p in MODELS.iterdir() if (p / "config.json").is_file())


def test_every_directory_has_a_published_count():
    assert DIRS and set(DIRS) == set(PUBLISHED), (DIRS, sorted(PUBLISHED))


@pytest.mark.parametrize("name", DIRS)
def test_builds_on_meta_with_the_published_parameter_count(name):
    model_dir = MODELS / name
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    assert all(p.is_meta for p in model.parameters())
    total = sum(p.numel() for p in model.parameters())   # shared (tied) tensors counted once
    published, exact, _ = PUBLISHED[name]
    if exact:
        assert total == published
    else:
        assert abs(total - published) <= 0.005 * published, (total, published)


@pytest.mark.parametrize("name", DIRS)
def test_family_is_recognised(name):
    assert adapter_for_dir(MODELS / name).family == PUBLISHED[name][2]


@pytest.mark.parametrize("name", DIRS)
def test_no_weights_or_tokenizer_files(name):
    files = {p.name for p in (MODELS / name).iterdir()}
    assert "preprocessor_config.json" in files
    assert not {f for f in files if f.endswith((".safetensors", ".bin", ".pt")) or f.startswith(("tokenizer", "vocab",
                                                                                                  "merges"))}
