"""PaStA in the MLLM: cell embeddings of Qwen2.5-VL's vision tower (`cells`), the alignment stage split by
job: its options (`config`: `PastaConfig`), scenes and batches (`data`: `make_samples`, `PastaCollator`),
the loss (`objective`: `pasta_loss`, and `pasta_aux_loss` for the SFT / GRPO stages), what trains and how
(`trainer`: `freeze_for_pasta`, `PastaTrainer`), and the runner (`stage`: `run_pasta_stage`; on the command
line `hatch-vlm pasta`); the correspondence metric (`metrics`) and its picture (`plot`). The loss itself
comes from `hatch_vlm.pasta.loss` (the compiled `hatch_ext` ops)."""
