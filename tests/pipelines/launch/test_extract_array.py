"""`extract features --executor local --shards N`: a submitit job array of shards into one store
(pipelines/launch/extract_array.py), on the synthetic AVA-format videos the extraction tests use,
with a tiny random SlowFast. Every array runs as real processes through submitit's LocalExecutor."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from stagecache.extract.features import run_extract
from stagecache.extract.store import KILL_ENV, open_store
from stagecache.extract.synthetic import make_video_dataset
from stagecache.pipelines.launch.extract_array import ExtractFeaturesArgs, launch_extract, logs_dir

torch.set_num_threads(1)
TINY = dict(model_depth=50, stem_dim_outs=(8, 1))
SAMPLING = dict(frames=4, short_side=64)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    make_video_dataset(d, n_videos=4, seconds=4, width=96, height=64, splits=("train",))
    return d


def _kw(ds, out, **kw):
    a = dict(split="train", videos=str(ds / "videos"), label_map=str(ds / "annotations/label_map.pbtxt"),
             annotations=str(ds / "annotations/train.csv"), proposals=str(ds / "annotations/train_proposals.csv"),
             out=str(out), random_init=True, backbone_kwargs=TINY, sampling_overrides=SAMPLING, time_offset=900.0,
             num_workers=0, progress=False, batch_size=4, device="cpu", flush_mb=0)
    a.update(kw)
    return a


def _arrays(path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in open_store(str(path)).load().data.items()}


@pytest.fixture(scope="module")
def reference(ds, tmp_path_factory):
    """The store of the ordinary in-process extraction (one rank)."""
    out = tmp_path_factory.mktemp("ref") / "train.zarr"
    s = run_extract(ExtractFeaturesArgs(**_kw(ds, out)))
    assert s["done"] == 4 and not s["failed"]
    return _arrays(out)


def _same(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def _run_array(ds, out, shards=3, **kw):
    return launch_extract(ExtractFeaturesArgs(**_kw(ds, out, executor="local", shards=shards, wait=True, **kw)),
                          echo=lambda m: None)


@pytest.mark.slow  # three processes importing torch, and the in-process reference: ~25 s on two cores
def test_a_three_shard_array_equals_the_in_process_extraction(ds, reference, tmp_path):
    out = tmp_path / "train.zarr"
    res = _run_array(ds, out)
    assert not res["failed_tasks"], [o.describe() for o in res["failed_tasks"]]
    s = res["summary"]
    assert (s["tasks"], s["videos"], s["done"], s["skipped"], s["failed"]) == (3, 4, 4, 0, [])
    assert s["bytes_written"] > 0
    _same(_arrays(out), reference)
    # one log per task in the store's side folder, and each task's config beside the store
    logs = logs_dir(ExtractFeaturesArgs(**_kw(ds, out, executor="local", shards=3)))
    assert logs == tmp_path / "train.slowfast_r50.logs"
    for job in res["jobs"]:
        assert (logs / f"{job}_0_log.err").exists()
    assert {p.name for p in tmp_path.glob("train.slowfast_r50.extract*.json")} == {
        "train.slowfast_r50.extract.json", "train.slowfast_r50.extract.rank1.json",
        "train.slowfast_r50.extract.rank2.json"}


@pytest.mark.slow  # two arrays of three processes: ~40 s on two cores
def test_a_task_killed_at_a_commit_point_resumes_when_the_array_is_resubmitted(ds, reference, tmp_path,
                                                                               monkeypatch):
    """Shard 0 of 3 holds two videos (four commits: base and backbone per video); the store's kill
    hook SIGKILLs every task at its third commit, which only shard 0 reaches."""
    out = tmp_path / "train.zarr"
    monkeypatch.setenv(KILL_ENV, "3")
    res = _run_array(ds, out)
    monkeypatch.delenv(KILL_ENV)
    assert [o.index for o in res["failed_tasks"]] == [0]
    failed = res["failed_tasks"][0]
    assert failed.log.endswith(f"{failed.job_id}_0_log.err") and Path(failed.log).exists()
    assert "has not produced any output" in failed.error and "\n" not in failed.error
    st = open_store(str(out))  # the killed task's first video is whole, its second absent
    assert len(st.videos) == 3 and st.missing("slowfast_r50") == []
    res = _run_array(ds, out)
    assert not res["failed_tasks"]
    assert (res["summary"]["done"], res["summary"]["skipped"]) == (1, 3)
    _same(_arrays(out), reference)
    committed = {f[:-5] for f in os.listdir(out / "commits")}
    assert set(os.listdir(out / "fragments")) == committed  # the killed fragment's files were cleaned


@pytest.mark.slow  # two arrays of two processes at once: ~40 s on two cores
def test_two_arrays_on_one_store_at_once_never_corrupt_it(ds, reference, tmp_path):
    """Both arrays start at once: for each shard one task writes and the other is refused by the
    rank's store lock (or, started after it, finds everything committed)."""
    out = tmp_path / "train.zarr"
    args = ExtractFeaturesArgs(**_kw(ds, out, executor="local", shards=2, wait=True))
    from stagecache.pipelines.launch import executors

    ex = [executors.make_executor("local", logs_dir(args), args, "extract") for _ in range(2)]
    from stagecache.pipelines.launch.extract_array import extract_shard

    jobs = [executors.submit_array(e, [executors.Task(extract_shard, args.task_kwargs, f"{i}/2") for i in range(2)])
            for e in ex]
    outcomes = [executors.wait_all(j) for j in jobs]
    for i in range(2):
        a, b = outcomes[0][i], outcomes[1][i]
        for o in (a, b):
            assert not o.error or "is already being written by pid" in o.error, o.describe()
        # each shard's videos were written exactly once (done), by one of the two arrays
        done = sum(o.result["done"] for o in (a, b) if not o.error)
        assert done == 2, (a, b)
    st = open_store(str(out))
    assert not st.duplicates
    _same(_arrays(out), reference)
