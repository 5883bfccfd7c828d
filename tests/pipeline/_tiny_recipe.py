"""The tiny model with one step per stage: the recipe the ablation and sweep tests run."""

TINY = {
    "model": "tiny",
    "threads": 1,
    "stages": ["pasta", "qa_sft", "actor_sft", "grpo", "eval"],
    "data": {"num_train": 4, "num_eval": 2, "size": 56, "actor_fraction": 1.0},
    "pasta": {"max_steps": 1, "per_device_train_batch_size": 2, "plot": False, "evaluate_before": False},
    "qa_sft": {"max_steps": 1, "per_device_train_batch_size": 2},
    "actor_sft": {"max_steps": 1, "per_device_train_batch_size": 2},
    "grpo": {"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2, "max_completion_length": 4,
             "plot": False},
    "eval": {"max_new_tokens": 4, "batch_size": 2},
}
