"""`extract features --executor local|slurm` checks the store's recorded options once, before the
array is submitted, and does `--restart` there (the tasks then only resume)."""
import json

import pytest

from stagecache.extract.features import run_extract
from stagecache.extract.synthetic import make_video_dataset
from stagecache.pipelines.launch.extract_array import ExtractFeaturesArgs
from tests.extract.test_features import SAMPLING, TINY, _args
from tests.pipelines.launch import test_executors
from tests.pipelines.launch.test_executors import _cli

mocked_slurm = test_executors.mocked_slurm  # submitit's mocked sbatch (a fixture)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    make_video_dataset(d, n_videos=2, seconds=5, width=96, height=64, splits=("train",))
    return d


def test_array_refuses_other_options_before_submitting_and_restarts_once(ds, tmp_path, capsys, mocked_slurm):
    out = tmp_path / "train.zarr"
    run_extract(_args(ds, out))
    argv = ["features", "--split", "train", "--videos", str(ds / "videos"), "--label-map",
            str(ds / "annotations/label_map.pbtxt"), "--annotations", str(ds / "annotations/train.csv"),
            "--proposals", str(ds / "annotations/train_proposals.csv"), "--objects", "precomputed",
            "--objects-file", str(ds / "annotations/train_objects.csv"), "--out", str(out), "--random-init",
            "--backbone-args", json.dumps(TINY), "--sampling-args", json.dumps(SAMPLING), "--time-offset", "900",
            "--batch-size", "4", "--roi-resolution", "5", "--executor", "slurm", "--shards", "2"]
    code, _, err = _cli(capsys, "extract", argv)
    assert code == 1 and "--roi-resolution stored 7, given 5" in err and "submitted" not in err
    assert not (tmp_path / "train.slowfast_r50.logs").exists()
    code, outp, err = _cli(capsys, "extract", argv + ["--restart"])
    assert code == 0, err
    assert "--restart: removing 1 fragment(s) of ['slowfast_r50']" in outp and "submitted job" in outp
    assert not (out / "meta" / "slowfast_r50.json").exists() and (out / "meta" / "base.json").exists()
    args = ExtractFeaturesArgs(**{**_args(ds, out).__dict__, "executor": "local", "shards": 2, "restart": True})
    assert args.task_kwargs["restart"] is False  # the tasks resume what the launcher restarted
