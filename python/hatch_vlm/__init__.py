"""hatch_vlm: HATCH training for multi-image spatial reasoning (PaStA + ActoR) on transformers / TRL.

The fused ops live in `hatch_ext` (`torch.ops.hatch.*`); this package holds the training framework.
"""

__version__ = "0.1.0"
