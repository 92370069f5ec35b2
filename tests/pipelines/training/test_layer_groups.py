"""train-head on the per-layer groups `extract features --layers` writes (tiny random VideoMAE): `--layer N`
picks <backbone>.l<N>, two layers concatenate, and the default is the backbone's own group."""

import json

import pytest
import torch

from stagecache.extract.features import ExtractArgs, run_extract
from stagecache.extract.store import open_store
from stagecache.extract.synthetic import make_video_dataset
from stagecache.pipelines.training.split import backbone_groups
from stagecache.pipelines.training.train import TrainArgs, train
from tests.extract.vit.originals import tiny

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("layers")
    make_video_dataset(d, n_videos=1, seconds=6, width=96, height=64, splits=("train",))
    kw, samp = tiny("videomae_vit_b")
    out = d / "train.zarr"
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        run_extract(ExtractArgs(split="train", videos=str(d / "videos"), label_map=str(d / "annotations/label_map.pbtxt"),
                                annotations=str(d / "annotations/train.csv"), out=str(out), random_init=True,
                                backbone="videomae_vit_b", backbone_kwargs=kw, sampling_overrides=samp, layers="1,3",
                                time_offset=900.0, num_workers=0, progress=False, device="cpu"))
    return str(out)


def _train(store, out, **kw):
    args = TrainArgs(train_store=store, val_store=store, head="linear", out_dir=str(out), epochs=1, batch_size=4,
                     progress=False, device="cpu", train_boxes="gt", val_boxes="gt", **kw)
    train(args)
    return json.loads((out / "config.json").read_text())


def test_layer_picks_the_block_group_and_layers_concatenate(store, tmp_path):
    cfg = _train(store, tmp_path / "l3", backbones=["videomae_vit_b"], layer=3)
    assert cfg["backbones"] == ["videomae_vit_b.l3"]
    cfg = _train(store, tmp_path / "cat", backbones=["videomae_vit_b.l1", "videomae_vit_b.l3"], combine="concat")
    assert cfg["backbones"] == ["videomae_vit_b.l1", "videomae_vit_b.l3"]
    assert open_store(store).array_info("videomae_vit_b.l1")["actor_pooled"][0][1] == 32
    assert backbone_groups(open_store(store), []) == ["videomae_vit_b"]  # the layer groups are not candidates
    with pytest.raises(ValueError, match="--layer N needs --backbone"):
        TrainArgs(train_store=store, val_store=store, layer=2)


def test_ablate_sweeps_the_layers(store, tmp_path):
    """ablate: one configuration per block (a per-configuration `layer`), each run trained on its group."""
    from stagecache.pipelines.ablation.ablate_args import AblateArgs
    from stagecache.pipelines.ablation.sweep import ablate

    spec = tmp_path / "layers.yaml"
    spec.write_text("name: layers\nseeds: [0]\n"
                    "train: {backbones: [videomae_vit_b], epochs: 1, batch_size: 4, device: cpu, train_boxes: gt, "
                    "val_boxes: gt}\nconfigs:\n"
                    "  - {name: l1, head: linear, train: {layer: 1}}\n  - {name: l3, head: linear, train: {layer: 3}}\n")
    ablate(AblateArgs(train_store=store, val_store=store, out=str(tmp_path / "abl"), spec_file=str(spec),
                      progress=False), echo=lambda *a, **k: None)
    for n in (1, 3):
        cfg = json.loads((tmp_path / "abl" / "runs" / f"l{n}-s0" / "config.json").read_text())
        assert cfg["backbones"] == [f"videomae_vit_b.l{n}"]


def test_predict_video_refuses_a_run_on_a_layer_group(store, tmp_path):
    """predict-video re-extracts the run's group from the video: a layer group's block is refused in
    one line rather than filled with the last block's features."""
    from pathlib import Path

    from stagecache.pipelines.tools.predict_video import PredictVideoArgs, extract_video_store

    cfg = _train(store, tmp_path / "l3", backbones=["videomae_vit_b"], layer=3)
    video = next((Path(store).parent / "videos").iterdir())
    (tmp_path / "none.csv").write_text("")
    args = PredictVideoArgs(video=str(video), run_dir=str(tmp_path / "l3"), out_dir=str(tmp_path / "pv"),
                            proposals=str(tmp_path / "none.csv"), backbone_random_init=True)
    with pytest.raises(ValueError, match=r"layer group videomae_vit_b.l3 \(block 3 of videomae_vit_b\)"):
        extract_video_store(args, cfg, None, tmp_path / "tmp", echo=print)
