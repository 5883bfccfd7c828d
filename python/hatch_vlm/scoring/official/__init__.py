"""The benchmarks' own scoring rules, transcribed from their official evaluation code (each module cites the
repository and file it follows). One module per benchmark, all with the same face:

    SOURCE: str                    where the rules come from ("owner/repo path", commit when known)
    POST_PROMPT: str               the official instruction appended to a question (non-ActoR prompts)
    CATEGORIES: tuple[str, ...]    the table's columns, in the official order
    category(row) -> str | None    the column of a row (None: not counted, e.g. MindCube translation)
    extract(reply, row)            what the official code extracts from a raw reply (a letter, a number, ...)
    score(reply, row) -> float     the official per-question score in [0, 1]; never raises, whatever the text
    aggregate(pairs) -> dict       official aggregation of [(row, score), ...]:
                                   {"categories": {col: %}, "Avg": %, "per_question": %, "n": int}
    build_prompt(row) -> str       (optional) the whole official text prompt, for a benchmark whose
                                   instruction does not simply follow the question (MindCube)

Beside the official face, a module may hold the non-official category a data reader records for the same
benchmark (`mmsi.family`), so that a benchmark's categories have one home; each such name says it is ours.

`row` is the benchmark's record as it ships (its own field names: SPAR-Bench `task`, `format_type`,
`answer`...; MindCube `id`, `gt_answer`...; MMSI `question_type`, `answer`...), without the images.
"""
