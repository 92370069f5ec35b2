"""`evaluate` on files: protocols, skipped rows, and every bad input as a one-line error naming the file."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from stagecache.extract.ava_io import AvaFormatError
from stagecache.pipelines.commands.cli import load_command, run
from stagecache.pipelines.evaluation.ava import DEFAULT_LABEL_MAP, evaluate_files

GT = "v,0902,0.0,0.0,0.5,0.5,1,0\nv,0902,0.5,0.5,1.0,1.0,1,1\n"
# 0.9 TP, 0.8 FP (SMALL box), 0.7 TP -> official AP 0.5 + 0.5 * 2/3
PRED = "v,902,0.0,0.0,0.5,0.45,1,0.9\nv,902,0.0,0.0,0.25,0.25,1,0.8\nv,902,0.5,0.5,1.0,1.0,1,0.7\n"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


def run_cli(*args):
    return CliRunner().invoke(load_command("evaluate"), [*map(str, args)])


def run_guarded(capsys, *args):
    """The installed entry point's error path: exit status and stderr."""
    with pytest.raises(SystemExit) as e:
        run(load_command("evaluate"), [*map(str, args)], prog_name="evaluate")
    return e.value.code, capsys.readouterr().err


def test_protocols_on_files_and_skipped_rows(tmp_path):
    gt = write(tmp_path, "gt.csv", GT + "v,0902,0.0,0.0,0.5,0.5,2,0\n")  # class 2 is not in the 60-class map
    # file order: the low-scoring detection of the right box comes first. PySlowFast matches in file order
    # (0.7 takes box B first, then 0.9 takes A): the same TPs here; MMAction2 drops the keyframe-903 FP.
    pred = write(tmp_path, "p.csv", PRED + "v,903,0.0,0.0,0.5,0.5,1,0.95\nv,902,0.0,0.0,0.5,0.5,2,0.9\n")
    off = evaluate_files(gt, pred)
    # official: FP (kf 903, 0.95), TP, FP, TP over 2 GT -> precision 0, 1/2, 1/3, 1/2 at recall 0, .5, .5, 1
    assert off.per_class[1] == 0.5 * 0.5 + 0.5 * 0.5
    assert off.skipped == {"gt": 1, "pred": 1}
    assert evaluate_files(gt, pred, protocol="pyslowfast").per_class[1] == 0.5
    assert evaluate_files(gt, pred, protocol="mmaction2").per_class[1] == 0.5 + 0.5 * 2 / 3
    out = tmp_path / "r" / "eval.json"
    res = run_cli("--gt", gt, "--pred", pred, "--protocol", "mmaction2", "--json", out)
    assert res.exit_code == 0, res.output
    assert "(mmaction2 protocol)" in res.output and "skipped rows of classes outside the label map: 1 GT, 1" in res.output
    assert json.loads(out.read_text())["per_class"]["1"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert json.loads((out.parent / "evaluate_config.json").read_text())["protocol"] == "mmaction2"
    bad = run_cli("--gt", gt, "--pred", pred, "--protocol", "detectron")
    assert bad.exit_code != 0 and "official" in bad.output


def test_values_are_used_unclipped_in_float64(tmp_path):
    # a GT box reaching past the image: the evaluators use it as written (IoU 0.5 / 1.0 -> TP), clipping it
    # to [0, 1] would give IoU 0.5 / 0.75 and change nothing here, so test the float64 point instead:
    # 0.30000001 > 0.3 in float64, equal in float32
    gt = write(tmp_path, "gt.csv", "v,1,0.0,0.0,0.5,0.5,1\nv,2,0.5,0.5,1.0,1.0,1\n")
    pred = write(tmp_path, "p.csv", "v,2,0.0,0.0,0.5,0.5,1,0.30000001\nv,1,0.0,0.0,0.5,0.5,1,0.3\n")
    assert evaluate_files(gt, pred).per_class[1] == 0.25  # FP ranked first: precision 0, 1/2


@pytest.mark.parametrize("gt_text,pred_text,where,msg", [
    ("", PRED, "gt.csv", "the ground truth is empty"),
    ("v,0902,0.0,0.0,0.5,0.5,2\n", PRED, "gt.csv", "no rows of the label map's classes"),
    (GT, GT, "p.csv", "ground-truth file"),
    (GT.replace("0.5,0.5,1.0,1.0", "0.5,nan,1.0,1.0"), PRED, "gt.csv:2", "y1 .column 4. is nan"),
    (GT.replace("0.5,0.5,1.0,1.0", "0.5,0.5,0.4,1.0"), PRED, "gt.csv:2", "inverted box"),
    (GT, PRED.replace("0.8", "nan"), "p.csv:2", "score .column 8. is nan"),
    (GT, PRED.replace("0.25,0.25,1,0.8", "0.25,0.25,1"), "p.csv:2", "expected 8 columns, found 7"),
    (GT, PRED.replace("0.45", "0.4S"), "p.csv:1", "y2 .column 6. is not a number: '0.4S'"),
    (GT, b"\x89PNG\r\n\x1a\n" + bytes(300), "p.csv", "binary data"),
])
def test_bad_inputs_are_one_line_errors(tmp_path, capsys, monkeypatch, gt_text, pred_text, where, msg):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    gt, pred = write(tmp_path, "gt.csv", gt_text), write(tmp_path, "p.csv", pred_text)
    with pytest.raises(AvaFormatError, match=rf"{where}: .*{msg}"):
        evaluate_files(gt, pred)
    code, err = run_guarded(capsys, "--gt", gt, "--pred", pred)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: ") and where in lines[0], err


def test_same_file_as_gt_and_predictions(tmp_path):
    gt = write(tmp_path, "gt.csv", GT)
    with pytest.raises(AvaFormatError, match="predictions file is the ground-truth file"):
        evaluate_files(gt, gt)


def test_excluding_every_gt_keyframe_is_an_error(tmp_path):
    gt, pred = write(tmp_path, "gt.csv", GT), write(tmp_path, "p.csv", PRED)
    ex = write(tmp_path, "ex.csv", "v,902.0\n")
    with pytest.raises(AvaFormatError, match="no rows left after the excluded keyframes"):
        evaluate_files(gt, pred, DEFAULT_LABEL_MAP, excluded_csv=ex)


@pytest.mark.parametrize("layout", ["contiguous", "interleaved", "float_ids"])
def test_multi_chunk_file_equals_the_reference(tmp_path, layout):
    # > 1 MB: pyarrow hands the rows over in several chunks, keyframes split across them. Contiguous
    # keyframes feed the heap chunk by chunk; interleaved ones, and action ids written as floats
    # ("12.0", parsed as floats), take the other paths: all must give the reference's numbers.
    import numpy as np

    from stagecache.extract.ava_io import read_label_map
    from tests.pipelines.evaluation import ava_reference as ref

    rng = np.random.default_rng(5)
    ids = read_label_map(DEFAULT_LABEL_MAP).ids
    kfs = [(f"vid{v}", 900 + t) for v in range(3) for t in range(60)]
    gt_rows, det_rows = [], []
    for v, t in kfs:
        boxes = np.round(rng.random((3, 2)) * 0.5, 2)
        for b in boxes:
            box = (b[0], b[1], b[0] + 0.4, b[1] + 0.4)
            for c in rng.choice(ids, 2, replace=False):
                gt_rows.append((v, t, *box, int(c), 0))
            for c in rng.choice(ids, 50, replace=False):  # 150 rows per keyframe: the cap bites
                j = np.round(rng.normal(0, 0.05, 4), 3)
                det_rows.append((v, t, *(float(x) for x in np.array(box) + j), int(c), float(np.round(rng.random(), 3))))
    if layout == "interleaved":
        det_rows = [det_rows[i] for i in rng.permutation(len(det_rows))]
    fmt = (lambda c: f"{c}.0") if layout == "float_ids" else str
    gt = write(tmp_path, "gt.csv", "".join(f"{v},{t},{a:.3f},{b:.3f},{c:.3f},{d:.3f},{k},{p}\n"
                                           for v, t, a, b, c, d, k, p in gt_rows))
    pred = write(tmp_path, "p.csv", "".join(f"{v},{t},{a!r},{b!r},{c!r},{d!r},{fmt(k)},{s!r}\n"
                                            for v, t, a, b, c, d, k, s in det_rows))
    assert pred.stat().st_size > 1 << 20
    res = evaluate_files(gt, pred)

    def rows(path, n):
        for line in open(path):
            f = line.strip().split(",")
            yield (f"{f[0]},{int(f[1]):04d}", *map(float, f[2:6]), int(float(f[6])), float(f[7]))

    aps, m = ref.official_or_pyslowfast(list(rows(gt, 8)), rows(pred, 8), ids, cap=50)
    assert m == res.map
    assert all(aps[c] == res.per_class[c] or (aps[c] != aps[c] and res.per_class[c] != res.per_class[c]) for c in ids)


@pytest.mark.parametrize("protocol", ["official", "pyslowfast", "mmaction2"])
def test_a_video_id_with_spaces_is_another_video(tmp_path, protocol):
    # the three references key keyframes by the id as written: " v1" is not "v1" (AP 0, not 1)
    gt = write(tmp_path, "gt.csv", "v1,0902,0.1,0.1,0.5,0.5,1\n")
    pred = write(tmp_path, "p.csv", "v2,0902,0.1,0.1,0.5,0.5,1,0.5\n v1,0902,0.1,0.1,0.5,0.5,1,0.9\n")
    with pytest.warns(UserWarning, match=r"1 row\(s\) have spaces around the video id \(first: .*p.csv:2\)"):
        r = evaluate_files(gt, pred, protocol=protocol)
    # MMAction2 drops detections on keyframes without GT: the class has none left, and is not reported
    assert r.per_class[1] == 0.0 if protocol != "mmaction2" else r.per_class[1] != r.per_class[1]
    both = write(tmp_path, "gt2.csv", " v1,0902,0.1,0.1,0.5,0.5,1\n")  # spaced in both files: one video
    with pytest.warns(UserWarning, match="2 row"):
        assert evaluate_files(both, pred, protocol=protocol).per_class[1] == 1.0
