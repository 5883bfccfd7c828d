"""The stage console (pipeline/console.py): the live line on a terminal, nothing on a pipe, the log file,
and `--verbose` leaving the Trainer's own printing."""
import io
import json
from types import SimpleNamespace

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from hatch_vlm.pipeline import console
from hatch_vlm.utils.probes import attach_probes


class _Tty(io.StringIO):
    def isatty(self):
        return True


def _state(step, total=10):
    return SimpleNamespace(global_step=step, max_steps=total, is_world_process_zero=True)


def test_live_line_rewrites_itself_and_logs_go_to_the_file(tmp_path):
    out, log = _Tty(), tmp_path / "s" / "log.jsonl"
    c = console.StageConsole("[1/5] pasta", log, live=True, stream=out)
    c.on_train_begin(None, _state(0), None)
    c.on_log(None, _state(1), None, logs={"loss": 2.5, "grad_norm": 1.0})
    c.on_step_end(None, _state(1), None)
    c.on_log(None, _state(2), None, logs={"reward": 0.25, "loss": 0.0})
    c.on_step_end(None, _state(2), None)
    c.on_train_end(None, _state(2), None)
    text = out.getvalue()
    assert "\n" not in text                                    # one line, rewritten with \r
    frames = text.split("\r")
    assert any(f.startswith("[1/5] pasta: step 1/10 loss 2.5") and "ETA" in f for f in frames)
    assert any(f.startswith("[1/5] pasta: step 2/10 reward 0.25") for f in frames)   # GRPO's key metric
    assert text.endswith("\r") and frames[-2].strip() == ""    # cleared at the end for the finished line
    assert [json.loads(x) for x in log.read_text().splitlines()] == [
        {"step": 1, "loss": 2.5, "grad_norm": 1.0}, {"step": 2, "reward": 0.25, "loss": 0.0}]


def test_nothing_on_a_pipe_and_verbose_keeps_the_trainer_printing(tmp_path):
    out = io.StringIO()                                        # not a terminal
    c = console.StageConsole("[1/5] pasta", None, live=out.isatty(), stream=out)
    c.on_train_begin(None, _state(0), None)
    c.on_step_end(None, _state(1), None)
    c.on_train_end(None, _state(1), None)
    assert out.getvalue() == ""

    class FakeTrainer:
        def __init__(self):
            self.callbacks = [PrinterCallback, ProgressCallback]

        def remove_callback(self, cb):
            self.callbacks.remove(cb)

        def add_callback(self, cb):
            self.callbacks.append(cb)

    with console.stage_console("[1/1] grpo", tmp_path / "log.jsonl"):
        t = FakeTrainer()
        attach_probes(t)
    assert len(t.callbacks) == 1 and isinstance(t.callbacks[0], console.StageConsole)
    console.set_verbose(True)
    try:
        with console.stage_console("[1/1] grpo", tmp_path / "log.jsonl"):
            t = FakeTrainer()
            attach_probes(t)
        assert t.callbacks == [PrinterCallback, ProgressCallback]
    finally:
        console.set_verbose(False)
