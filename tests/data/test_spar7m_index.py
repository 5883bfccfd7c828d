"""Choosing records out of a SPAR-7M tree from the text alone, and the lazily decoding dataset."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from hatch_vlm.data.common import DataError
from hatch_vlm.data.record import Sample
from hatch_vlm.data.spar7m import SparSamples, select_records
from hatch_vlm.data.spar7m import index as idx

from ._spar_tree import write_tree

COUNTS = {("scannet", "depth_prediction_oo_mv", "select"): 300, ("scannet", "depth_prediction_oo_mv", "fill"): 200,
          ("scannet", "depth_prediction_oc", "select"): 150, ("structured3d", "position_matching", "select"): 100}


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("spar") / "spar", COUNTS)


def ids(sel_part) -> list[str]:
    ds = SparSamples(sel_part)
    return [ds.record(i).id for i in range(len(ds))]


def test_scan_offsets_lines_blanks_and_chunk_edges(tmp_path, monkeypatch):
    f = tmp_path / "a.jsonl"
    lines = [b'{"a": 1}', b"", b'{"b": 22}', b"\n"[:0], b'{"c": 333}']
    f.write_bytes(b"\n".join(lines))                          # no newline after the last line
    for chunk in (3, 7, 1 << 20):
        monkeypatch.setattr(idx, "CHUNK_BYTES", chunk)
        off, line = idx.scan_offsets(f)
        data = f.read_bytes()
        got = [data[o:].split(b"\n", 1)[0] for o in off]
        assert got == [b'{"a": 1}', b'{"b": 22}', b'{"c": 333}'], chunk
        assert line.tolist() == [1, 3, 5]                       # 1-based, as an editor numbers them


def test_selection_is_deterministic_disjoint_and_nested(tree, tmp_path):
    a = select_records(tree, num_train=40, num_eval=10, seed=3, cache_dir=tmp_path / "c", progress=False)
    b = select_records(tree, num_train=40, num_eval=10, seed=3, cache_dir=None, progress=False)
    assert ids(a.train) == ids(b.train) and ids(a.held_out) == ids(b.held_out)
    assert len(a.train) == 40 and len(a.held_out) == 10 and a.num_records == sum(COUNTS.values())
    assert not set(ids(a.train)) & set(ids(a.held_out))
    big = select_records(tree, num_train=200, num_eval=10, seed=3, cache_dir=tmp_path / "c", progress=False)
    assert ids(big.held_out) == ids(a.held_out)                  # the held-out part ignores num_train
    assert ids(big.train)[:40] == ids(a.train)                   # more training data extends, never reshuffles
    assert big.cached_files == len({f.path for f in big.train.files})   # second start: offsets from the cache
    other = select_records(tree, num_train=40, num_eval=10, seed=4, cache_dir=None, progress=False)
    assert ids(other.train) != ids(a.train)
    # a spread over the tree, not the first lines of the first file
    tasks = {SparSamples(big.train).record(i).task for i in range(len(big.train))}
    assert tasks == {"depth_prediction_oo_mv", "depth_prediction_oc", "position_matching"}


def test_renamed_file_keeps_the_choice(tree, tmp_path):
    import shutil

    copy = tmp_path / "spar"
    shutil.copytree(tree, copy)
    a = select_records(copy, 30, 5, seed=1, cache_dir=None, progress=False)
    before = ids(a.train), ids(a.held_out)
    f = copy / "scannet/qa_jsonl/train/depth_prediction_oo_mv/select/select_300.jsonl"
    f.rename(f.with_name("select_299.jsonl"))                   # what the official tooling does on recount
    b = select_records(copy, 30, 5, seed=1, cache_dir=None, progress=False)
    assert before == (ids(b.train), ids(b.held_out))


def test_tasks_groups_and_min_views(tree):
    mv = select_records(tree, 1000, 10, tasks=["multi_view"], cache_dir=None, progress=False)
    ds = SparSamples(mv.train)
    tasks = {ds.record(i).task for i in range(len(ds))}
    assert tasks == {"depth_prediction_oo_mv", "position_matching"}
    assert len(mv.train) + len(mv.held_out) == 600                 # fewer than asked: all of them, warned
    one = select_records(tree, 50, 5, tasks=["depth_prediction_oc"], min_views=2, cache_dir=None, progress=False)
    assert len(one.train) == 0 and one.summary.reasons["too few views"] == 150


def test_bad_candidates_are_skipped_counted_and_replaced(tree, tmp_path):
    import shutil

    copy = tmp_path / "spar"
    shutil.copytree(tree, copy)
    f = copy / "structured3d/qa_jsonl/train/position_matching/select/select_100.jsonl"
    lines = f.read_text().splitlines()
    lines[5] = lines[5][: len(lines[5]) // 2]                      # truncated line
    rec = json.loads(lines[7])
    rec["image"][0] = "scene0000_00/image_color/999.jpg"          # missing frame
    lines[7] = json.dumps(rec)
    rec = json.loads(lines[9])
    rec["red_bbox"] = [[100, 200, 400]]                           # a box with 3 coordinates
    lines[9] = json.dumps(rec)
    f.write_text("\n".join(lines) + "\n")
    sel = select_records(copy, 89, 8, tasks=["position_matching"], cache_dir=None, progress=False)
    assert len(sel.train) == 89 and len(sel.held_out) == 8         # 100 records, 3 bad: all others used
    assert sel.summary.reasons["bad json"] == 1 and sel.summary.reasons["missing image file"] == 1
    assert sel.summary.reasons["bad marker"] == 1                 # checked without decoding a frame
    with pytest.raises(DataError, match=r"select_100.jsonl line (6|8|10)"):
        select_records(copy, 99, 1, tasks=["position_matching"], cache_dir=None, strict=True, progress=False)


def test_lazy_dataset_decodes_on_demand_and_substitutes(tree, tmp_path):
    import shutil

    copy = tmp_path / "spar"
    shutil.copytree(tree, copy)
    sel = select_records(copy, 20, 2, tasks=["multi_view"], cache_dir=None, progress=False)
    ds = SparSamples(sel.train)
    s = ds[0]
    assert isinstance(s, Sample) and s.has_geometry and s.depth.shape == (s.num_views, 48, 64)
    assert s.depth.max() == pytest.approx(2.0) and s.depth.min() == pytest.approx(1.5)   # mm -> m
    assert len(ds[:5]) == 5 and ds[:5].record(3).id == ds.record(3).id
    clone = pickle.loads(pickle.dumps(ds))                        # DataLoader workers get a copy
    assert clone.record(1).id == ds.record(1).id
    # a frame that disappears after selection: the item is replaced by the next one and counted
    bad = ds.record(4)
    Path(bad.images[1]).unlink()
    got = ds[4]
    assert got.id != bad.id and ds.problems["missing image file"] >= 1
    assert np.isfinite(got.depth).all()


def test_cache_is_rebuilt_when_the_file_changes(tree, tmp_path):
    import shutil
    import time

    copy = tmp_path / "spar"
    shutil.copytree(tree, copy)
    cache = tmp_path / "cache"
    a = select_records(copy, 10, 2, cache_dir=cache, progress=False)
    f = copy / "scannet/qa_jsonl/train/depth_prediction_oc/select/select_150.jsonl"
    time.sleep(0.01)
    with open(f, "a") as fh:
        fh.write(f.read_text().splitlines()[0].replace('"id": "', '"id": "extra_') + "\n")
    b = select_records(copy, 10, 2, cache_dir=cache, progress=False)
    assert b.num_records == a.num_records + 1


def test_a_forked_worker_reads_through_its_own_file_handles(tree):
    """A DataLoader worker forked after the parent read a record inherits the parent's open file; sharing
    its read position, two workers read each other's bytes (seen as random "not valid JSON" skips in a
    rehearsal with 8 workers). A forked process opens its own, and reads every record right."""
    import json
    import os

    sel = select_records(tree, num_train=40, num_eval=4, seed=0, cache_dir=None, progress=False)
    ds = SparSamples(sel.train)
    ds.record(0)                                     # the parent opens the file
    fi = int(ds.refs.file_idx[0])
    parent_fd = ds._handles[fi].fileno()
    offset = os.lseek(parent_fd, 0, os.SEEK_CUR)     # shared with a forked child that reads through it
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # the child: read everything, report
        try:
            ids = [ds.record(i).id for i in range(len(ds))]
            os.write(w, json.dumps({"n": len(ids)}).encode())
        finally:
            os._exit(0)
    os.close(w)
    got = json.loads(os.read(r, 4096).decode())
    os.waitpid(pid, 0)
    assert got["n"] == len(ds)
    assert os.lseek(parent_fd, 0, os.SEEK_CUR) == offset, "the child moved the parent's read position"
    assert [ds.record(i).id for i in range(3)] == [ds.record(i).id for i in range(3)]   # the parent still reads
