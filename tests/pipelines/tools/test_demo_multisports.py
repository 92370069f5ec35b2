"""`demo --dataset multisports`: every stage runs on the synthetic MultiSports layout and the report
holds MultiSports' metrics."""
import json

import pytest
from click.testing import CliRunner

from stagecache.pipelines.commands.demo import demo_cli


@pytest.mark.slow  # ~20 s of CPU (two extractions, two heads)
def test_multisports_demo_runs_and_reports_its_metrics(tmp_path):
    out = tmp_path / "demo"
    r = CliRunner().invoke(demo_cli, ["--dataset", "multisports", "--out", str(out), "--videos", "2",
                                      "--extract-epochs", "1", "--short-side", "48", "--device", "cpu",
                                      "--no-progress"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "demo_report.json").read_text())
    assert report["extract_test1"]["videos"] == 2 and report["extract_train1"]["videos"] == 2
    for head in ("linear", "stage"):
        m = report["runs"][head]
        assert set(m) == {"frame_mAP@0.5", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.1:0.9"}
        assert 0 < m["frame_mAP@0.5"] <= 1 and all(0 <= x <= 1 for x in m.values())
    assert "frame-mAP@0.5" in r.output and "MultiSports' evaluator" in r.output
