"""Model building and loading: the model adapters (`adapters`: one class per supported family, Qwen2.5-VL,
Qwen3-VL, InternVL3, holding everything model-specific), the tiny offline models (`tiny`), the
torchvision-free processors (`processor`), the one load path (`loading`, quiet: `quiet_progress`), saving
what a Trainer trained (`saving`), and `compat` (library deprecation noise that hatch cannot act on)."""
from .adapters import adapter_for_dir, adapter_for_family, adapter_for_model, adapter_for_processor
from .loading import load_model_and_processor, load_processor
from .processor import HatchInternVLProcessor, HatchQwen3VLProcessor, HatchQwenProcessor

__all__ = ["HatchInternVLProcessor", "HatchQwen3VLProcessor", "HatchQwenProcessor", "adapter_for_dir",
           "adapter_for_family", "adapter_for_model", "adapter_for_processor", "load_model_and_processor",
           "load_processor"]
