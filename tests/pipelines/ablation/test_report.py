"""ablate's report: the per-class gain plots of one sweep share one y-scale and say how many classes
they show (issue 32, item 7), read from the figures as they are saved."""
from __future__ import annotations

import json

import matplotlib
import pytest

from stagecache.pipelines.ablation.jobs import Run
from stagecache.pipelines.ablation.report import gain_title, write_report
from stagecache.pipelines.ablation.spec import Config, Spec

matplotlib.use("Agg")


def _run(tmp_path, config: str, per_class: dict[int, float]) -> Run:
    d = tmp_path / "runs" / f"{config}-s0"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"best_val_map": sum(per_class.values()) / len(per_class)}))
    (d / "per_class_ap.json").write_text(json.dumps({"per_class": {str(k): v for k, v in per_class.items()}}))
    return Run(config=Config(name=config, head="linear"), seed=0, run_dir=str(d), targs={})


@pytest.fixture
def saved_axes(monkeypatch):
    """(file name, title, y-limits) of every figure saved."""
    from matplotlib.figure import Figure

    seen = []
    real = Figure.savefig

    def spy(self, fname, *a, **kw):
        ax = self.axes[0]
        seen.append((str(fname).rsplit("/", 1)[-1], ax.get_title(), tuple(round(v, 6) for v in ax.get_ylim())))
        return real(self, fname, *a, **kw)

    monkeypatch.setattr(Figure, "savefig", spy)
    return seen


def test_gain_plots_of_a_sweep_share_one_y_scale_and_count_their_classes(tmp_path, saved_axes):
    from stagecache.extract.synthetic import make_feature_store

    store = make_feature_store(tmp_path / "s.zarr", split="train", seed=0, n_videos=1, keyframes_per_video=2,
                               actor_dim=4, object_dim=4)
    base = {1: 0.10, 2: 0.20, 3: 0.30}
    runs = [_run(tmp_path, "lin", base), _run(tmp_path, "small", {1: 0.11, 2: 0.19, 3: 0.30}),
            _run(tmp_path, "big", {1: 0.50, 2: 0.20, 3: 0.25})]
    spec = Spec(name="t", configs=[r.config for r in runs], seeds=[0], baseline="lin")
    status = {r.name: "done" for r in runs}
    rep = write_report(tmp_path, spec, runs, status, train_store=str(store), top_k=2)
    assert sorted(rep["plots"]) == ["gain_big_vs_lin.png", "gain_small_vs_lin.png"]
    gains = {name: (title, ylim) for name, title, ylim in saved_axes}
    # one scale: the largest |gain| any plot shows (40 points, "big" on class 1) with 10% headroom
    assert gains["gain_small_vs_lin.png"][1] == gains["gain_big_vs_lin.png"][1] == (-44.0, 44.0)
    # 3 classes with AP in both, 2 shown (top_k): the title says so, not "top 20"
    assert gains["gain_big_vs_lin.png"][0] == "per-class AP gain: big over lin (the 2 of 3 classes with the largest |gain|)"
    assert gain_title("a", "b", 3, 3) == "per-class AP gain: a over b (all 3 classes)"
