"""PaStA in the MLLM: cell embeddings of Qwen2.5-VL's vision tower (`cells`), the alignment stage
(`stage`: `PastaConfig`, `run_pasta_stage`, `pasta_aux_loss`), the correspondence metric (`metrics`) and
its picture (`plot`). The loss itself comes from `hatch_vlm.pasta.loss` (the compiled `hatch_ext` ops)."""
