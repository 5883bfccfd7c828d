"""Loading and saving draw no progress bar of their own (the long steps keep theirs), the switch is put
back as it was, and the libraries' checkpointing deprecation noise is silenced only where asked."""
import contextlib
import warnings

import pytest
from transformers.utils import logging as hf_logging

from hatch_vlm.models.compat import checkpointing_deprecations_ignored
from hatch_vlm.models.loading import load_model_and_processor, quiet_progress, restore_weights
from hatch_vlm.models.saving import QuietSaveMixin


def test_load_and_save_draw_no_bars(tiny_dir, tmp_path, capfd):
    assert hf_logging.is_progress_bar_enabled()
    model, _ = load_model_and_processor(tiny_dir)
    restore_weights(model, tiny_dir)                      # a checkpoint directory: a second from_pretrained
    with quiet_progress():
        model.save_pretrained(tmp_path / "saved")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert hf_logging.is_progress_bar_enabled()           # restored for everyone else (the Trainer's bars)
    # Without the quiet block transformers would have drawn one (so the assertion above can fail).
    model.save_pretrained(tmp_path / "loud")
    assert "Writing model shards" in capfd.readouterr().err


def test_quiet_progress_keeps_a_callers_choice():
    hf_logging.disable_progress_bar()
    try:
        with quiet_progress():
            assert not hf_logging.is_progress_bar_enabled()
        assert not hf_logging.is_progress_bar_enabled()   # a caller that turned them off keeps them off
    finally:
        hf_logging.enable_progress_bar()
    with pytest.raises(RuntimeError), quiet_progress():
        raise RuntimeError("boom")
    assert hf_logging.is_progress_bar_enabled()           # restored after an error too


def test_quiet_save_mixin():
    class Base:
        def save_model(self, output_dir=None, _internal_call=False):
            return (output_dir, _internal_call, hf_logging.is_progress_bar_enabled())

    class Quiet(QuietSaveMixin, Base):
        pass

    assert Quiet().save_model("out", _internal_call=True) == ("out", True, False)
    assert hf_logging.is_progress_bar_enabled()


def test_checkpointing_deprecations_ignored(tiny_dir):
    model, _ = load_model_and_processor(tiny_dir)

    def checkpointing_warnings(quiet: bool):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            with checkpointing_deprecations_ignored() if quiet else contextlib.nullcontext():
                model.gradient_checkpointing_enable()
                _ = model.is_gradient_checkpointing
                model.gradient_checkpointing_disable()
                warnings.warn("something else", FutureWarning, stacklevel=1)
        return [str(w.message) for w in seen]

    assert checkpointing_warnings(quiet=True) == ["something else"]     # other warnings still show
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.24 deprecates the old names
        loud = checkpointing_warnings(quiet=False)
        assert len(loud) == 4 and all("deprecated" in m for m in loud[:3]), loud
