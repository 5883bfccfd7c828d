"""PaStA in the MLLM: cell embeddings of Qwen2.5-VL's vision tower, the alignment stage, its metric."""
