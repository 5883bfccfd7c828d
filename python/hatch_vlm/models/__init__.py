"""Model building and loading: the tiny Qwen2.5-VL, the torchvision-free processor, the one load path
(`loading`, quiet: `quiet_progress`), saving what a Trainer trained (`saving`), and `compat` (library
deprecation noise that hatch cannot act on)."""
from .loading import load_model_and_processor
from .processor import HatchQwenProcessor, load_processor

__all__ = ["HatchQwenProcessor", "load_model_and_processor", "load_processor"]
