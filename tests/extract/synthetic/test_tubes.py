"""extract/synthetic/tubes.py: the synthetic JHMDB / UCF101-24 layouts, their rule, the feature-level store."""
import numpy as np
import pytest
from PIL import Image

from stagecache.extract.datasets.tube_split import tube_inputs
from stagecache.extract.datasets.tubes_pkl import read_tube_pickle
from stagecache.extract.store import open_store
from stagecache.extract.synthetic.tubes import LABELS, RGB, colour_codes, make_tube_dataset, make_tube_feature_store


@pytest.fixture(scope="module")
def jhmdb(tmp_path_factory):
    root = tmp_path_factory.mktemp("jhmdb")
    return make_tube_dataset(root, dataset="jhmdb", seed=3, videos_per_class=1, n_frames=6)


def test_layout_splits_and_rule(jhmdb):
    gt = read_tube_pickle(jhmdb)
    assert jhmdb.name == "JHMDB-GT.pkl" and gt.labels == LABELS
    assert len(gt.train_videos) == 3 and len(gt.test_videos) == 3
    for tr, te in zip(gt.train_videos, gt.test_videos):
        assert sorted(tr + te) == sorted(gt.tubes) and not set(tr) & set(te)
    for v, tubes in gt.tubes.items():
        frames = sorted((jhmdb.parent / "Frames" / v).iterdir())
        assert [f.name for f in frames] == [f"{k:05d}.png" for k in range(1, 7)]
        labels = [lab for lab, _ in tubes]
        assert v.split("/")[0] in {LABELS[lab] for lab in labels}  # <class>/<clip>
        own = [lab // 2 for lab in labels]
        # relational rule: a person's label = 2 * own colour + the other person's colour
        assert sorted(labels) == sorted([2 * own[0] + own[1], 2 * own[1] + own[0]])
        img = np.asarray(Image.open(frames[2]))
        for lab, t in tubes:
            x1, y1, x2, y2 = t[t[:, 0] == 3][0, 1:5].astype(int)
            assert (img[(y1 + y2) // 2, (x1 + x2) // 2] == RGB[lab // 2]).all()
        assert all(len(t) == 6 for _, t in tubes)  # jhmdb: tubes span the video


def test_deterministic_by_seed(jhmdb, tmp_path):
    again = make_tube_dataset(tmp_path / "a", dataset="jhmdb", seed=3, videos_per_class=1, n_frames=6)
    other = make_tube_dataset(tmp_path / "b", dataset="jhmdb", seed=4, videos_per_class=1, n_frames=6, render=False)
    assert again.read_bytes() == jhmdb.read_bytes() and other.read_bytes() != jhmdb.read_bytes()
    v = read_tube_pickle(jhmdb).test_videos[0][0]
    frame = f"Frames/{v}/00002.png"
    assert (jhmdb.parent / frame).read_bytes() == (again.parent / frame).read_bytes()


def test_ucf24_layout_has_tubes_inside_the_video(tmp_path):
    pkl = make_tube_dataset(tmp_path, dataset="ucf24", seed=0, videos_per_class=1, n_frames=5)
    gt = read_tube_pickle(pkl)
    assert pkl.name == "UCF101v2-GT.pkl" and len(gt.test_videos) == 1
    v = gt.videos("test", 1)[0]
    assert sorted((tmp_path / "rgb-images" / v).iterdir())[0].name == "00001.jpg"
    spans = sorted((int(t[0, 0]), int(t[-1, 0])) for _, t in gt.tubes[v])
    assert spans == [(1, 5), (2, 4)]


def test_feature_store_rows_match_extraction_rows(jhmdb, tmp_path):
    out = make_tube_feature_store(jhmdb, tmp_path / "s.zarr", dataset="jhmdb", split="test1", seed=0, dim=8,
                                  noise=0.0)
    t = open_store(str(out)).load()
    ann = tube_inputs("jhmdb", str(jhmdb), "test1", str(jhmdb.parent)).annotations
    assert t.data["base/actor_box"].shape[0] == len(ann.video)
    labels = t.data["base/actor_labels"].numpy().argmax(1)
    feat = t.data["synthetic/actor_pooled"].float().numpy()
    np.testing.assert_allclose(feat, colour_codes(8)[labels // 2], atol=1e-3)  # own colour only
    assert t.data["base/actor_is_gt"].all() and set(t.data["base/actor_track"].tolist()) == {0, 1}
