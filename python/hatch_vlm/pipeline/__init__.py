"""The HATCH recipe as one resumable run: PaStA -> QA fine-tuning -> ActoR cold start -> GRPO -> eval."""
