"""Chat formatting of multi-image `Sample`s for TRL: plain QA SFT, the ActoR cold start, and GRPO prompts.

Every row is conversational with the images as `{"type": "image"}` items (one per view, in order) ahead of
the text, and `images` a list of PIL images, the layout TRL's SFTTrainer and GRPOTrainer take (docs/notes.md):

* `qa_sft_row`        {"prompt": [user], "completion": [assistant: answer], "images": [...]}
* `cold_start_row`    {"prompt": [user], "completion": [assistant: <action>…</action><answer>…</answer>], ...}
* `grpo_row`          {"prompt": [user], "images": [...], "answer", "answer_type", "num_views",
                       "gold_motions", "task"}: the gold columns the rewards read (`hatch_vlm.actor.rewards`);
                       with `geometry=True` also "depth", "K", "cam_to_world" for the PaStA term.

`gold_motions` holds, per pair i < j in order, the motion of the teacher actions (forward, left, up metres;
yaw, pitch degrees): the teacher's own text then scores R_act = 1 exactly.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

from ..data.record import Sample
from .actions import compose_actions, format_completion, teacher_pairs

log = logging.getLogger(__name__)

ACTOR_INSTRUCTION = ("First write the camera actions from image i to image j for each image pair i<j "
                     "in <action></action>, then the answer in <answer></answer>.")
QA_INSTRUCTION = "Answer with the option's letter or a number."


def _check_sample(sample: Sample, need_poses: bool) -> None:
    if not isinstance(sample, Sample):
        raise TypeError(f"expected a hatch_vlm.data.record.Sample, got {type(sample).__name__}")
    if sample.num_views < 1:
        raise ValueError(f"sample {sample.id!r} has no images")
    if sample.answer_type not in ("mc", "numeric"):
        raise ValueError(f"sample {sample.id!r}: answer_type must be 'mc' or 'numeric' for ActoR, "
                         f"got {sample.answer_type!r}")
    if need_poses:
        poses = None if sample.cam_to_world is None else np.asarray(sample.cam_to_world)
        if poses is None or poses.shape != (sample.num_views, 4, 4):
            raise ValueError(f"sample {sample.id!r}: teacher actions need cam_to_world of shape "
                             f"[{sample.num_views}, 4, 4], got "
                             f"{None if poses is None else tuple(poses.shape)}")


def to_pil(images: Iterable[np.ndarray]) -> list[Image.Image]:
    """uint8 [H, W, 3] arrays (or PIL images) -> RGB PIL images."""
    out = []
    for k, im in enumerate(images):
        if isinstance(im, Image.Image):
            out.append(im.convert("RGB"))
            continue
        a = np.asarray(im)
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"image {k} must be [H, W, 3], got shape {a.shape}")
        if a.dtype != np.uint8:
            a = np.clip(a, 0, 255).astype(np.uint8)
        out.append(Image.fromarray(a, "RGB"))
    return out


def question_text(sample: Sample) -> str:
    """The question with its options on one line ("Options: A. … B. …") when it has any."""
    q = sample.question.strip()
    if sample.options:
        q += "\nOptions: " + " ".join(o.strip() for o in sample.options)
    return q


def answer_text(sample: Sample) -> str:
    """Gold answer as the model writes it: "C. Back, Right" (the full option) for mc, the number otherwise."""
    gold = str(sample.answer).strip()
    if sample.answer_type == "mc":
        for opt in sample.options:
            o = opt.strip()
            if o[:1].upper() == gold[:1].upper() and (len(o) == 1 or o[1:2] in ".):"):
                return o
    return gold


def user_message(sample: Sample, actor: bool) -> dict:
    """One user turn: an image item per view, then the question (and the ActoR instruction if `actor`)."""
    n = sample.num_views
    parts = [question_text(sample)]
    if actor:
        parts.append(f"{n} images, {n * (n - 1) // 2} pairs. {ACTOR_INSTRUCTION}")
    else:
        parts.append(QA_INSTRUCTION)
    return {"role": "user", "content": [{"type": "image"} for _ in range(n)] +
            [{"type": "text", "text": "\n".join(parts)}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def teacher_completion(sample: Sample) -> str:
    """The ActoR target text: teacher actions for every pair i < j, then the gold answer."""
    _check_sample(sample, need_poses=True)
    return format_completion(teacher_pairs(sample.cam_to_world, sample.world_up), answer_text(sample))


def gold_motions(sample: Sample) -> list[list[float]]:
    """Per pair i < j: the composed teacher motion [forward, left, up, yaw, pitch] (the R_act gold)."""
    _check_sample(sample, need_poses=True)
    return [compose_actions(p.actions).as_list() for p in teacher_pairs(sample.cam_to_world, sample.world_up)]


def qa_sft_row(sample: Sample) -> dict:
    """Plain QA fine-tuning row: the completion is the answer only."""
    _check_sample(sample, need_poses=False)
    return {"prompt": [user_message(sample, actor=False)], "completion": [_assistant(answer_text(sample))],
            "images": to_pil(sample.images)}


def cold_start_row(sample: Sample) -> dict:
    """ActoR cold-start row: the completion is the teacher actions, then the answer."""
    target = teacher_completion(sample)      # validates the sample first
    return {"prompt": [user_message(sample, actor=True)], "completion": [_assistant(target)],
            "images": to_pil(sample.images)}


def grpo_row(sample: Sample, geometry: bool = False) -> dict:
    """GRPO prompt row with the gold columns the rewards read; with `geometry`, also the views' depth
    [V, H, W] (float32, metres), K [V, 3, 3] and cam_to_world [V, 4, 4] (float64) that the PaStA auxiliary
    term needs (`hatch_vlm.actor.grpo.prompt_geometry_batch`). Only then: they are a lot of data per row."""
    motions = gold_motions(sample)           # validates the sample first
    row = {"prompt": [user_message(sample, actor=True)], "images": to_pil(sample.images),
           "answer": str(sample.answer), "answer_type": sample.answer_type, "num_views": sample.num_views,
           "gold_motions": motions, "task": sample.task}
    if geometry:
        if not sample.has_geometry:
            raise ValueError(f"sample {sample.id!r}: the PaStA term needs depth, K and cam_to_world")
        row.update(depth=np.asarray(sample.depth, np.float32), K=np.asarray(sample.K, np.float64),
                   cam_to_world=np.asarray(sample.cam_to_world, np.float64))
    return row


def rows_to_dataset(rows: Sequence[dict]):
    """A `datasets.Dataset` from formatted rows (images kept as a list-of-images column)."""
    from datasets import Dataset

    if not rows:
        raise ValueError("rows_to_dataset got no rows")
    return Dataset.from_list(list(rows))



class LazyRows:
    """rows[i] = make_row(samples[i]), computed when asked for: a map-style dataset for TRL's trainers that
    never holds more than a batch of decoded images (samples may be a lazily decoding `SparSamples`).

    A sample the row cannot be made from (e.g. an open-ended answer for an ActoR row, ValueError) is counted
    in `problems` and replaced by the next one (cyclically), so a few such records never stop a run; more
    than `max_substitutes` in a row raise. Each kind of problem is also logged (a warning, with the index and
    the reason) the first time a process meets it: DataLoader workers count in their own copy, so the
    warning is what reports their substitutions."""

    def __init__(self, samples: Sequence[Sample], make_row, max_substitutes: int = 32):
        self.samples = samples
        self.make_row = make_row
        self.max_substitutes = max_substitutes
        self.problems: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"LazyRows index {i} out of range for {n} rows")
        last = None
        for attempt in range(min(self.max_substitutes, n)):
            try:
                return self.make_row(self.samples[(i + attempt) % n])
            except ValueError as e:
                last = e
                key = type(e).__name__
                if key not in self.problems:
                    log.warning("row %d (%s) cannot be made, replaced by the next sample (further %s are "
                                "counted, not logged): %s", (i + attempt) % n,
                                getattr(self.make_row, "__name__", "rows"), key, e)
                self.problems[key] = self.problems.get(key, 0) + 1
        raise ValueError(f"{min(self.max_substitutes, n)} samples in a row from index {i} cannot be made into "
                         f"{getattr(self.make_row, '__name__', 'rows')}; last: {last}")


def lazy_dataset(rows):
    """A `datasets.Dataset` (TRL's trainers take no other map-style kind) whose rows are made when indexed:
    it stores only row numbers, and a transform calls `rows[i]` (e.g. a `formatting.LazyRows` over lazily
    decoded samples), so the images of the whole training set are never in memory at once."""
    from datasets import Dataset

    first = rows[0]

    def transform(batch: dict) -> dict:
        made = [rows[int(i)] for i in batch["_row"]]
        return {k: [m[k] for m in made] for k in first}

    ds = Dataset.from_dict({"_row": list(range(len(rows)))}).with_transform(transform)
    ds.column_names_of_rows = list(first)     # what the rows hold (ds.column_names is ["_row"])
    return ds
