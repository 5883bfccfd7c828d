"""`hatch-vlm data synth` / `hatch-vlm data show` and the picture."""
import numpy as np
import pytest

import hatch_ext
import hatch_ext.reference as ref
from hatch_vlm.commands.data import main
from hatch_vlm.data.show import cell_overlap, draw_sample, top_pairs
from hatch_vlm.data.spar import read_spar_bench
from hatch_vlm.data.spar7m import read_spar_rgbd
from hatch_vlm.data.mindcube import read_mindcube
from hatch_vlm.data.mmsi import read_mmsi
from hatch_vlm.data.synthetic import generate


def test_top_pairs_and_overlap():
    s = generate(1, size=32, seed=2)[0]
    S = cell_overlap(s, 4, ref.patch_overlap)
    assert S.shape == (2, 2, 16, 16) and S.max() > 0
    np.testing.assert_allclose(S[0, 1], S[1, 0].T)               # symmetric by construction
    top = top_pairs(S[0, 1], 5)
    assert len(top) == 5 and top[0][2] == pytest.approx(S[0, 1].max())
    assert all(top[k][2] >= top[k + 1][2] for k in range(4))


def test_draw_sample_png(tmp_path):
    from PIL import Image

    s = generate(1, views=3, size=48, seed=1)[0]
    out = draw_sample(s, tmp_path / "s.png", overlap_fn=ref.patch_overlap)
    with Image.open(out) as im:
        assert im.size[0] > 600 and im.size[1] > 400


def test_cli_synth_then_show(tmp_path, monkeypatch, capsys):
    out = tmp_path / "syn"
    assert main(["data", "synth", "--out", str(out), "--num", "3", "--size", "32", "--seed", "1",
                 "--bench-num", "12"]) == 0
    train, summary = read_spar_rgbd(out, split="train", strict=True)
    assert len(train) == 3 and train[0].images[0].shape == (32, 32, 3)
    bench, _ = read_spar_bench(out / "benchmarks" / "spar_bench", strict=True)       # data/test-*.parquet
    assert 1 <= len(bench) <= 12 and all(s.meta["row"]["task"] for s in bench)
    mm, _ = read_mmsi(out / "benchmarks" / "mmsi" / "MMSI_bench.parquet", strict=True)
    assert len(mm) >= 1 and not {s.id for s in mm} & {s.id for s in train}            # disjoint from training
    mc_file = out / "benchmarks" / "mindcube" / "raw" / "MindCube_tinybench.jsonl"
    if mc_file.exists():
        read_mindcube(mc_file, strict=True)                                           # images under mindcube/
    # `show` calls hatch_ext.ops.patch_overlap; use the reference here (the compiled op may be a stub).
    monkeypatch.setattr(hatch_ext.ops, "patch_overlap", ref.patch_overlap)
    png = tmp_path / "show.png"
    assert main(["data", "show", str(out), "--out", str(png), "--index", "1"]) == 0
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(out), "--num", "-2"])
