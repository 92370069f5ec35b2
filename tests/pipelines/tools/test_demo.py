"""The README's main command, shrunk: every stage runs and the report says where things are."""
import json

from click.testing import CliRunner

from stagecache.pipelines.commands.demo import demo_cli


def test_demo_runs_every_stage_and_prints_the_table(tmp_path):
    out = tmp_path / "demo"
    args = ["--out", str(out), "--videos", "2", "--seconds", "6", "--short-side", "64", "--extract-epochs", "1",
            "--feature-videos", "3", "--keyframes-per-video", "8", "--ablation-epochs", "1", "--device", "cpu",
            "--no-progress"]
    r = CliRunner().invoke(demo_cli, args)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "demo_report.json").read_text())
    assert report["extract_train"]["done"] == 2 and not report["extract_train"]["failed"]
    assert set(report["video_runs"]) == {"linear", "stage"}
    for name in ("results.csv", "results.md", "gain_stage_vs_linear.png"):
        assert (out / "ablation" / name).exists(), name
    # The random-init backbone is said loudly, and the printed report holds the ablation table.
    assert "RANDOM" in r.output or "random" in r.output
    assert "STAGE w/o boxes proximity" in r.output
    # The printout is plain-text tables and file paths, not a list repr or markdown.
    assert "failed []" not in r.output and "![" not in r.output and "|---" not in r.output
    stage1 = r.output.split("Stage 1:")[1].splitlines()
    assert stage1[1].split() == ["split", "videos", "keyframes", "boxes", "objects", "failed"]
    assert stage1[3].split()[:2] == ["train", "2"] and stage1[3].split()[-1] == "0"
    assert str(out / "ablation" / "gain_stage_vs_linear.png") in r.output
    # The store records that its features come from random weights.
    from stagecache.extract.store import open_store

    attrs = open_store(str(out / "cache" / "train.zarr")).groups["slowfast_r50"]
    assert attrs.get("random_init") is True
    # A rerun resumes: nothing is extracted or trained again.
    r2 = CliRunner().invoke(demo_cli, args)
    assert r2.exit_code == 0, r2.output
    assert json.loads((out / "demo_report.json").read_text())["extract_train"]["skipped"] == 2


def test_jhmdb_demo_runs_every_stage(tmp_path):
    """`demo --dataset jhmdb`, shrunk: GT pickle + frame folders -> stores -> linear and stage ->
    frame-mAP and video-mAP, on extracted and on feature-level stores."""
    out = tmp_path / "jd"
    args = ["--dataset", "jhmdb", "--out", str(out), "--videos", "1", "--seconds", "5", "--short-side", "32",
            "--extract-epochs", "1", "--feature-videos", "2", "--keyframes-per-video", "4",
            "--ablation-epochs", "1", "--device", "cpu", "--no-progress"]
    r = CliRunner().invoke(demo_cli, args)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "demo_report.json").read_text())
    assert report["dataset"] == "jhmdb"
    for side in ("extract_train1", "extract_test1"):
        assert report[side]["done"] > 0 and not report[side]["failed"] and report[side]["random_init"] is True
    for runs in (report["video_runs"], report["feature_runs"]):
        assert set(runs) == {"linear", "stage"}
        for metrics in runs.values():
            assert set(metrics) == {"frame_mAP", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75"}
            assert all(0.0 <= v <= 1.0 for v in metrics.values())
    assert "video-mAP" in r.output
