"""SPAR-7M / SPAR-7M-RGBD (training data), read as the official release ships it (docs/formats.md).

    layout      the per-source tree, QA files, task names and groups, depth units
    records     one JSONL line -> SparRecord (question, options, answer, paths; no frames)
    markers     the points / boxes the questions refer to, drawn as SPAR's loader draws them
    frames      SparRecord -> Sample (colour, depth in metres, K, poses), with depth checks
    index       choose N records out of millions from the text alone (O(N) memory, cached offsets)
    dataset     SparSamples: a lazily decoding map-style dataset of chosen records
    reader      iter/read every record of a small tree (tools, tests)
    writer      write samples in this layout (`hatch-vlm data synth`)
    stats       `hatch-vlm data stats ROOT`
"""
from .dataset import SparSamples
from .index import RecordRefs, Selection, select_records
from .layout import MULTI_VIEW_TASKS, QAFile, TASK_GROUPS, find_sources, qa_files, resolve_tasks
from .reader import iter_spar_rgbd, read_spar_rgbd
from .records import SparRecord, parse_record

__all__ = ["SparSamples", "RecordRefs", "Selection", "select_records", "MULTI_VIEW_TASKS", "QAFile",
           "TASK_GROUPS", "find_sources", "qa_files", "resolve_tasks", "iter_spar_rgbd", "read_spar_rgbd",
           "SparRecord", "parse_record"]
