"""`hatch-vlm data stats` on the hand-written SPAR-7M fixture (tests/data/fixtures/spar7m/README.md lists what
each record is): counts from the text alone, skips by reason, and the --check-files lookups."""
import json
from pathlib import Path

from hatch_vlm.commands.data import main
from hatch_vlm.data.spar7m.stats import dataset_stats

ROOT = Path(__file__).parent / "fixtures" / "spar7m" / "spar"


def test_stats_from_the_text_alone():
    st = dataset_stats(ROOT, progress=False)
    assert st["files"] == 13 and st["records"] == 22
    # no frame is read: the missing frame / pose and the wrong depth unit are not visible here
    assert st["skip_reasons"] == {"bad json": 1, "no options": 1, "bad answer": 1, "bad conversations": 1,
                                  "bad marker": 1}
    assert st["read"] == 17 and st["by_source"] == {"scannet": 15, "structured3d": 2}
    assert st["by_kind"]["judge"] == 2 and st["by_kind"]["select"] == 2
    assert st["views"] == {"1": 9, "2": 6, "3": 2}
    assert st["with_markers"] == 16 and st["by_task"]["obj_spatial_relation_oo"] == 1   # folder name, no `type`
    assert st["with_scene_geometry"] == 17 and st["with_depth_field"] < 17
    assert any("fill_3.jsonl line 3" in e for e in st["skip_examples"]["bad json"])
    assert any("fill_2.jsonl line 2" in e and "point_img_idx" in e for e in st["skip_examples"]["bad marker"])


def test_stats_check_files_and_cli(tmp_path, capsys):
    st = dataset_stats(ROOT / "scannet", split="train", check_files=True, progress=False)
    assert st["skip_reasons"]["missing image file"] == 1 and st["skip_reasons"]["missing pose file"] == 1
    assert st["read"] == 12 and st["skipped"] == 7
    out = tmp_path / "stats.json"
    assert main(["data", "stats", str(ROOT), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "22 records, 17 readable, 5 skipped" in text and "skipped, by reason" in text
    assert json.loads(out.read_text())["records"] == 22
    assert main(["data", "stats", str(tmp_path)]) == 2                   # not a SPAR-7M tree: one clear line
    assert "qa_jsonl" in capsys.readouterr().err
    assert main(["data", "stats", str(ROOT), "--strict"]) == 2          # stops at the first bad record
    assert "line" in capsys.readouterr().err
