"""Quieting what the libraries hatch builds on say about each other, not about hatch.

transformers >= 5.24 renamed the model methods `gradient_checkpointing_enable` / `_disable` and the property
`is_gradient_checkpointing` to `activation_checkpointing*` and warns (FutureWarning) on every use of the old
names. peft 0.21 (`get_peft_model`, reading `is_gradient_checkpointing`) and TRL 1.16 (GRPO's generation,
which turns checkpointing off and on again around every `generate`) still call the old names, so each LoRA
wrap and each GRPO step repeated a warning that no setting of ours can address.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# The deprecation messages of transformers.modeling_utils for the old checkpointing names (matched at the
# start of the message); any other warning, and these from anywhere else, still shows.
_OLD_CHECKPOINTING_NAMES = r"`(is_gradient_checkpointing|gradient_checkpointing_(enable|disable))` is deprecated"


@contextmanager
def checkpointing_deprecations_ignored() -> Iterator[None]:
    """Inside the block, transformers' FutureWarnings about the old gradient-checkpointing method names are
    not shown; the warning filters are restored afterwards."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_OLD_CHECKPOINTING_NAMES, category=FutureWarning,
                                module=r"transformers\.modeling_utils")
        yield
