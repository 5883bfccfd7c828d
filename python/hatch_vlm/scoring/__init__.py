"""Scoring: every rule that reads an answer or puts a question into a benchmark category, in one layer
below the data readers, ActoR and evaluation (it imports nothing of hatch_vlm), so that all of them use
the same rules and none has to import another's.

    hatch_vlm.scoring.answers      our rules: `answer_span` (the last <answer>), `reply_letter` (a model's
                                   reply), `label_letter` (a dataset's gold label), numbers and SPAR's mean
                                   relative accuracy, `score_answer`
    hatch_vlm.scoring.official     each benchmark's own rules, transcribed from its official code
                                   (`spar_bench`, `mindcube`, `mmsi`): extraction, score, category, prompt,
                                   aggregation; plus the category a reader records (`mmsi.family`)

Which is used where:

* ActoR's answer reward (hatch_vlm.actor.rewards) and the synthetic benchmark: `answers.score_answer`.
* The three published benchmarks (hatch_vlm.eval.run): `official.<benchmark>.score` on the raw reply
  ("official") and on `answers.answer_span` of it ("answer_span").
* Dataset readers (hatch_vlm.data): `answers.label_letter` for gold letters, and the official category
  rules (SPAR-Bench task lists, MindCube `setting`, MMSI `family`) for `Sample.category`.
"""
