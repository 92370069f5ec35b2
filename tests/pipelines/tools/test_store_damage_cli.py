"""Issue 31 through the real commands: a damaged store, values the schema forbids, a NaN release file,
a full disk while saving a checkpoint, and write-bank's stores checked before any is written: exit 1,
one stderr line `Error: ...` naming the store and file (or path), nothing under the test's
directory changed."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stagecache.extract.store import open_store
from stagecache.pipelines.commands.cli import main
from tests.pipelines.commands.bad_input_helpers import snapshot, write_store


def _train_args(tr: str, va: str, out: Path, *extra: str) -> list[str]:
    return ["train-head", "--head", "linear", "--train-store", tr, "--val-store", va, "--out", str(out),
            "--epochs", "1", "--val-score-threshold", "0.5", "--device", "cpu", "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Sound train/val stores and a finished linear run, made once."""
    d = tmp_path_factory.mktemp("damage")
    tr, va = write_store(d / "train.zarr"), write_store(d / "val.zarr", split="val", videos=("vc",))
    r = CliRunner().invoke(main, _train_args(tr, va, d / "run"))
    assert r.exit_code == 0, r.output
    return d


def _one_line(argv: list[str], root: Path, *expected: str) -> str:
    before = snapshot(root)
    r = CliRunner().invoke(main, argv)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = r.stderr.splitlines()  # progress notes may come first (train-head's memory line)
    assert r.exit_code == 1 and lines and lines[-1].startswith("Error: "), r.output
    assert "Traceback" not in r.output and sum(x.startswith("Error") for x in lines) == 1, r.output
    for s in expected:
        assert s in lines[-1], (s, lines[-1])
    assert snapshot(root) == before
    return lines[-1]


def _damaged_copy(trained: Path, tmp_path: Path, name: str, how: str) -> tuple[str, str]:
    """A copy of a store with its feature group damaged: (store, fragment id)."""
    p = str(tmp_path / f"{name}.zarr")
    shutil.copytree(trained / f"{name}.zarr", p)
    fid = open_store(p).fragments["feat"][0].id
    arr = os.path.join(p, "fragments", fid, "actor_pooled")
    if how == "deleted_chunk":
        os.remove(os.path.join(arr, "c", "0", "0"))
    else:  # a zarr.json whose shape was shortened: zarr would read the missing rows as zeros
        meta = json.load(open(os.path.join(arr, "zarr.json")))
        meta["shape"][0] -= 2
        json.dump(meta, open(os.path.join(arr, "zarr.json"), "w"))
    return p, fid


@pytest.mark.parametrize("how", ["deleted_chunk", "shortened_shape"])
def test_damaged_store_refused_by_every_reader(trained, tmp_path, monkeypatch, how):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    tr, fid = _damaged_copy(trained, tmp_path, "train", how)
    va, vfid = _damaged_copy(trained, tmp_path, "val", how)
    run = str(trained / "run")
    _one_line(_train_args(tr, str(trained / "val.zarr"), tmp_path / "run2"), tmp_path, tr, fid, "actor_pooled")
    _one_line(_train_args(tr, str(trained / "val.zarr"), tmp_path / "run3", "--split-source", "streamed"),
              tmp_path, tr, fid, "actor_pooled")  # the streamed reader makes the same checks
    _one_line(["predict", "--run", run, "--store", va, "--out", str(tmp_path / "p.csv"), "--device", "cpu"],
              tmp_path, va, vfid)
    _one_line(["cache", "export", tr, str(tmp_path / "x.h5")], tmp_path, tr, fid)
    good = str(tmp_path / "good.zarr")
    shutil.copytree(trained / "train.zarr", good)
    _one_line(["write-bank", "--run", run, "--store", good, "--store", va, "--device", "cpu"], tmp_path, va, vfid)
    r = CliRunner().invoke(main, ["cache", "verify", "--no-progress", tr])
    assert r.exit_code == 1 and fid in r.stderr


def test_write_bank_checks_every_store_before_writing_any(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    a = str(tmp_path / "a.zarr")
    shutil.copytree(trained / "train.zarr", a)
    _one_line(["write-bank", "--run", str(trained / "run"), "--store", a, "--store", str(tmp_path / "missing.zarr"),
               "--device", "cpu"], tmp_path, "missing.zarr", "no feature store")


def test_boxes_beyond_the_image_refused_by_train_head(trained, tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    from stagecache.extract.store import StoreWriter

    tr = str(tmp_path / "box.zarr")
    src = open_store(str(trained / "train.zarr")).load()
    w = StoreWriter(tr, split="train", label_ids=[1, 2, 3], label_names=["stand", "sit", "walk"], object_classes=["cup"])
    for g in ("base", "feat"):
        w.declare_group(g, {})
    for vi, v in enumerate(src.video_names):
        k = np.nonzero(src.kf_video.numpy() == vi)[0]
        a0, a1 = int(src.kf_actor_offset[k[0]]), int(src.kf_actor_offset[k[-1] + 1])
        o0, o1 = int(src.kf_object_offset[k[0]]), int(src.kf_object_offset[k[-1] + 1])
        ac, oc = np.diff(src.kf_actor_offset.numpy()[k[0]:k[-1] + 2]), np.diff(src.kf_object_offset.numpy()[k[0]:k[-1] + 2])
        for g in ("base", "feat"):
            arrays = {n.split("/")[1]: x[(o0 if n.split("/")[1].startswith("object") else a0):
                                         (o1 if n.split("/")[1].startswith("object") else a1)].numpy().copy()
                      for n, x in src.data.items() if n.startswith(g + "/")}
            if g == "base" and vi == 1:
                arrays["actor_box"][0] = [0.1, 0.1, 1.5, 0.6]
            w.add_video(g, v, timestamps=src.kf_time.numpy()[k], actor_counts=ac, object_counts=oc, arrays=arrays)
    w.close()
    _one_line(_train_args(tr, str(trained / "val.zarr"), tmp_path / "run2"), tmp_path, tr, "actor_box", "vb")


def test_import_of_nan_features_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    src = str(tmp_path / "val.h5")
    with h5py.File(src, "w") as f:
        g = f.create_group("vid_0902")
        g["boxes"] = np.array([[0.1, 0.1, 0.5, 0.5]], np.float32)
        g["features"] = np.array([[0.0, np.nan, 1.0]], np.float32)
        g["labels"] = np.zeros((1, 81), np.float32)
    line = _one_line(["cache", "import", "--layout", "stage-slowfast", "--no-progress", src,
                      str(tmp_path / "s.zarr")], tmp_path, "val.h5", "vid_0902", "NaN")
    assert "nothing of this video was written" in line
    assert not (tmp_path / "s.zarr" / "commits").exists() or not os.listdir(tmp_path / "s.zarr" / "commits")


def test_full_disk_while_saving_a_checkpoint(trained, tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as `RuntimeError ... unexpected pos`: one line naming
    last.pt and the space, the previous last.pt intact, no temp file; a stale temp file of a killed
    run is removed by the next run."""
    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    stale = run / f".tmp-{'ab' * 16}-last.pt"
    stale.write_bytes(b"half a checkpoint")  # what a kill during the save leaves
    real = torch.save

    def full(obj, f, *a, **kw):
        if str(f).endswith("last.pt"):
            Path(f).write_bytes(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")
        return real(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", full)
    last = (run / "last.pt").read_bytes()
    r = CliRunner().invoke(main, _train_args(str(trained / "train.zarr"), str(trained / "val.zarr"), run,
                                             "--resume", "--epochs", "2"))
    lines = r.stderr.splitlines()
    assert r.exit_code == 1 and lines[-1].startswith("Error: no space left") and "Traceback" not in r.output, r.output
    assert str(run / "last.pt") in lines[-1] and "free" in lines[-1]
    assert (run / "last.pt").read_bytes() == last
    assert [n for n in os.listdir(run) if n.startswith(".tmp-")] == []


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device", "/data/out/x.bin"),
                                 RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")])
def test_a_full_disk_anywhere_is_one_line(exc, capsys, monkeypatch):
    """A write path that names no file still ends in one line (the CLI's backstop), never a traceback."""
    import click

    from stagecache.pipelines.commands.cli import run

    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)

    @click.command()
    def toy():
        raise exc

    with pytest.raises(SystemExit) as e:
        run(toy, [], prog_name="toy")
    err = capsys.readouterr().err.splitlines()
    assert e.value.code == 1 and len(err) == 1 and err[0].startswith("Error: no space left on the device writing")
    assert ("/data/out/x.bin" in err[0]) == isinstance(exc, OSError) and "free" in err[0]
    with pytest.raises(ValueError):  # anything else keeps its traceback
        @click.command()
        def other():
            raise ValueError("a bug")
        run(other, [], prog_name="other")


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (we may be root); skipped where it cannot be mounted (the store's own write
    path is also tested by error injection: tests/extract/store/test_store_integrity.py)."""
    import subprocess

    d = tmp_path / "disk"
    d.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_import_onto_a_full_disk_is_one_line_and_resumes(tmp_path, small_disk, monkeypatch):
    import subprocess

    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    src = str(tmp_path / "val.h5")
    rng = np.random.default_rng(0)
    with h5py.File(src, "w") as f:
        for v in range(4):
            for t in range(902, 910):
                g = f.create_group(f"vid{v}_{t:04d}")
                g["boxes"] = np.tile(np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), (4, 1))
                g["features"] = rng.standard_normal((4, 2304)).astype(np.float32)
                g["labels"] = np.zeros((4, 81), np.float32)
    ref = str(tmp_path / "ref.zarr")
    assert CliRunner().invoke(main, ["cache", "import", "--no-progress", src, ref]).exit_code == 0
    store = str(small_disk / "s.zarr")
    r = CliRunner().invoke(main, ["cache", "import", "--no-progress", src, store])
    lines = r.stderr.splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    assert lines[0].startswith(f"Error: no space left on the device writing {store}") and "free" in lines[0]
    done = open_store(store).videos  # what was committed before the disk filled reads as before
    assert 0 < len(done) < 4
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert CliRunner().invoke(main, ["cache", "import", "--no-progress", src, store]).exit_code == 0
    a, b = open_store(store).load(), open_store(ref).load()
    assert a.video_names == b.video_names
    for k in a.data:
        assert torch.equal(a.data[k], b.data[k]), k
