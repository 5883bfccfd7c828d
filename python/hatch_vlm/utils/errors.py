"""Errors every command may end with, importable without torch (the command line imports this module before
knowing what it will run: `hatch-vlm data synth` needs no torch, and importing it costs ~2 s)."""


class MainProcessError(RuntimeError):
    """Raised on the other ranks when the main process failed inside `distributed.on_main`."""
