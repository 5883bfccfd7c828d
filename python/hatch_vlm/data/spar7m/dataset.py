"""A map-style dataset of chosen SPAR-7M records whose frames are decoded only when an item is asked for.

    refs = select_records(root, num_train=10_000, num_eval=256).train
    ds = SparSamples(refs, depth_scale={"scannet": 0.001})
    ds[0]            # -> Sample (reads that record's line, its frames, draws its markers)
    ds[:100]         # -> SparSamples of the first 100 (no decoding)

It holds only the records' (file, offset) arrays, so it pickles cheaply into DataLoader workers and a
Trainer's distributed sampler gives each rank its own indices (each rank decodes only its shard).

A record that fails while decoding (a corrupt JPEG, an implausible depth map that selection did not look
at) is not allowed to stop a training run: it is counted (`problems`), logged, and the next record
(cyclically) is returned in its place; after `max_substitutes` failures in a row a DataError stops the run
(then something is wrong with the whole tree, not one record).
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Mapping

import numpy as np

from ..common import DataError, RecordError
from ..record import Sample
from .frames import load_sample
from .index import RecordRefs, read_line
from .records import SparRecord, parse_record

log = logging.getLogger("hatch_vlm.data")


class SparSamples:
    """Sequence[Sample] over `refs`, decoded lazily (see the module doc)."""

    def __init__(self, refs: RecordRefs, depth_scale: float | Mapping[str, float] | None = None,
                 require_geometry: bool = True, draw_markers: bool = True, max_substitutes: int = 16):
        self.refs = refs
        self.depth_scale = dict(depth_scale) if isinstance(depth_scale, Mapping) else depth_scale
        self.require_geometry = require_geometry
        self.draw_markers = draw_markers
        self.max_substitutes = max_substitutes
        self.problems: Counter = Counter()
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()

    # Open file handles are per process: never pickled into workers (spawn), and not used after a fork
    # either: a forked DataLoader worker inherits the parent's open files, and their shared read position
    # made two workers read each other's bytes ("not valid JSON" records skipped at random).
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __len__(self) -> int:
        return len(self.refs)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def record(self, i: int) -> SparRecord:
        """The parsed record i (no frames)."""
        fi = int(self.refs.file_idx[i])
        if self._pid != os.getpid():            # a forked worker: its own handles
            self._handles, self._pid = {}, os.getpid()
        fh = self._handles.get(fi)
        if fh is None:
            fh = self._handles[fi] = open(self.refs.files[fi].path, "rb")
        return parse_record(read_line(fh, self.refs.offset[i]), self.refs.files[fi], int(self.refs.line[i]))

    def load(self, i: int) -> Sample:
        """Record i as a Sample; RecordError if it cannot be decoded (no substitution)."""
        return load_sample(self.record(i), self.depth_scale, self.require_geometry, self.draw_markers)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.subset(np.arange(len(self))[i])
        n = len(self)
        if not -n <= int(i) < n:
            raise IndexError(f"SparSamples index {i} out of range for {n} records")
        i = int(i) % n
        for attempt in range(min(self.max_substitutes, n)):
            j = (i + attempt) % n
            try:
                return self.load(j)
            except RecordError as e:
                self.problems[e.kind] += 1
                log.warning("skipped a record while training (%s), using the next one: %s", e.kind, e)
        raise DataError(f"{min(self.max_substitutes, n)} records in a row from index {i} could not be decoded "
                        f"({dict(self.problems)}); check the SPAR-7M tree with `hatch-vlm data stats`")

    def subset(self, idx) -> SparSamples:
        out = SparSamples(self.refs.subset(idx), self.depth_scale, self.require_geometry, self.draw_markers,
                          self.max_substitutes)
        return out
