"""visualize: PNG size and determinism, recorded STAGE / ACAR-Net attention, the command on a tiny run."""
from __future__ import annotations

import math

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from stagecache.heads import build_head
from stagecache.heads.batch import HeadInput
from stagecache.pipelines.tools.visualize import (
    Edge, VisualizeArgs, acar_actor_maps, draw_heatmaps, draw_keyframe, read_frame, run_visualize, stage_edges,
)
from stagecache.pipelines.tools.visualize_draw import _overlap, _place_label, display_image

torch.set_num_threads(1)


def _input(actor_dim=8, object_dim=6, ctx=None, seed=0):
    """Keyframe 0 (video 0): 3 actors, 2 objects; keyframe 1 (video 1, same time): 1 actor, 1 object."""
    g = torch.Generator().manual_seed(seed)
    box = torch.tensor([[0.1, 0.1, 0.3, 0.6], [0.4, 0.2, 0.6, 0.7], [0.7, 0.1, 0.9, 0.5], [0.2, 0.2, 0.4, 0.4]])
    obox = torch.tensor([[0.3, 0.5, 0.35, 0.55], [0.8, 0.6, 0.9, 0.7], [0.5, 0.5, 0.6, 0.6]])
    return HeadInput(
        kf_video=torch.tensor([0, 1]), kf_time=torch.tensor([902.0, 902.0]),
        actor_feat=torch.randn(4, actor_dim, generator=g), actor_box=box, actor_kf=torch.tensor([0, 0, 0, 1]),
        is_query=torch.tensor([True, True, True, False]),
        object_feat=torch.randn(3, object_dim, generator=g), object_box=obox, object_kf=torch.tensor([0, 0, 1]),
        object_class=torch.tensor([0, 1, 2]), context=ctx,
    )


def test_draw_keyframe_size_and_determinism(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes = np.array([[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.9, 0.8]], dtype=np.float32)
    labels = [[("stand", 0.9), ("talk to", 0.4)], [("sit", 0.7)]]
    kw = dict(object_boxes=np.array([[0.45, 0.5, 0.5, 0.6]]), object_names=["cup"], edges=[Edge(0, 2, 0.6)])
    draw_keyframe(tmp_path / "a.png", img, boxes, labels, **kw)
    draw_keyframe(tmp_path / "b.png", img, boxes, labels, **kw)
    assert mpimg.imread(tmp_path / "a.png").shape[:2] == (480, 640)  # enlarged 4x to >= 640 px wide
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    draw_keyframe(tmp_path / "c.png", img, boxes, labels)  # no edges: another picture
    assert (tmp_path / "c.png").read_bytes() != (tmp_path / "a.png").read_bytes()


def test_stage_attention_is_the_heads_softmax_and_lines_follow_the_graph():
    head = build_head("stage", actor_dim=8, object_dim=6, num_classes=3, num_layers=2, num_heads=2,
                      dropout=0.0, actor_actor=False).eval()
    x = _input()
    # Make FC2's score a constant c: then D_ij = exp(-||centre_i - centre_j||) * c, so the attention
    # is a softmax of known numbers over the connected nodes (Eq. 1, 5, 6), checked in a loop below.
    c = 0.7
    with torch.no_grad():
        for layer in head.layers:
            layer.attn_w.zero_()
            layer.attn_b.fill_(c)
    with torch.no_grad():
        logits, att = head.forward_with_attention(x)
    q = x.is_query  # recording does not change the output (of the query actors: heads/protocol.py)
    torch.testing.assert_close(logits[q], head(x)[q])
    assert len(att.weights) == 2
    boxes = torch.cat([x.actor_box, x.object_box])
    kf = torch.cat([x.actor_kf, x.object_kf])
    n_act = 4
    centres = torch.stack(((boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2), 1)
    want_w = torch.zeros(7, 7)
    want_c = torch.zeros(7, 7, dtype=torch.bool)
    for i in range(7):
        nbrs = [j for j in range(7) if kf[j] == kf[i] and (i == j or not (i < n_act and j < n_act))]
        d = torch.tensor([math.exp(-float(torch.linalg.norm(centres[i] - centres[j]))) * c for j in nbrs])
        s = torch.softmax(d, 0)
        for j, v in zip(nbrs, s):
            want_w[i, j], want_c[i, j] = v, True
    for W, C in zip(att.weights, att.connected):
        assert torch.equal(C, want_c)
        torch.testing.assert_close(W, want_w)

    # Lines: only to connected nodes of the same keyframe; never actor-actor with actor_actor=False.
    edges = stage_edges(att, -1, actors=[0, 1, 2], nodes_same_kf=[0, 1, 2, 4, 5])
    assert {(e.src, e.dst) for e in edges} == {(i, j) for i in (0, 1, 2) for j in (4, 5)}
    head2 = build_head("stage", actor_dim=8, object_dim=6, num_classes=3, num_layers=1, dropout=0.0).eval()
    with torch.no_grad():
        _, att2 = head2.forward_with_attention(x)
    edges2 = stage_edges(att2, 0, actors=[0], nodes_same_kf=[0, 1, 2, 4, 5])
    assert {(e.src, e.dst) for e in edges2} == {(0, 1), (0, 2), (0, 4), (0, 5)}
    assert all(bool(att2.connected[0][e.src, e.dst]) for e in edges2)
    assert not att2.connected[0][0, 3] and not att2.connected[0][0, 6]  # other video: never connected


def test_acar_heat_maps(tmp_path):
    head = build_head("acar", actor_dim=8, object_dim=6, num_classes=3, context_dim=4, reduce_dim=8,
                      hidden_dim=8, dropout=0.0, nl_dropout=0.0).eval()
    x = _input(ctx=torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        logits, att = head.forward_with_attention(x)
    maps = att.weights
    torch.testing.assert_close(logits, head(x))
    assert len(maps) == 2 and maps[0].shape == (5, 6, 4, 4)
    # Softmax over the actors of the same keyframe only.
    torch.testing.assert_close(maps[0][:, :, :3, :3].sum(-1), torch.ones(5, 6, 3))
    assert float(maps[0][:, :, :3, 3].abs().max()) == 0.0
    per_actor = acar_actor_maps(maps[-1], [0, 1, 2])
    np.testing.assert_allclose(per_actor[1], 1.0 - maps[-1][:, :, 1, 1].numpy(), atol=1e-6)
    img = np.zeros((40, 60, 3), dtype=np.uint8)
    draw_heatmaps(tmp_path / "h.png", img, x.actor_box[:3].numpy(), per_actor, ["a", "b", "c"])
    assert mpimg.imread(tmp_path / "h.png").shape[:2] == (440, 1980)  # 60 px enlarged 11x, 3 panels


def _write_video(path, frames: int, fps: int):
    """A 32x32 clip whose frame i is grey 10 * i."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 10 * i, dtype=np.uint8), format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_read_frame(tmp_path):
    path = _write_video(tmp_path / "v.mp4", frames=20, fps=10)
    for t, want in ((0.0, 0), (0.55, 50), (1.25, 120)):
        assert abs(float(read_frame(path, t).mean()) - want) < 4, t


def test_visualize_command_on_a_tiny_run(tmp_path):
    from stagecache.extract.synthetic import make_feature_store, write_label_files
    from stagecache.pipelines.training.train import TrainArgs, train

    tr = make_feature_store(tmp_path / "tr.zarr", split="train", seed=0, n_videos=1, keyframes_per_video=3,
                            actor_dim=8, object_dim=4)
    va = make_feature_store(tmp_path / "va.zarr", split="val", seed=1, n_videos=1, keyframes_per_video=3,
                            actor_dim=8, object_dim=4)
    run = tmp_path / "run"
    train(TrainArgs(train_store=str(tr), val_store=str(va), head="stage", out_dir=str(run), epochs=1,
                    head_args={"num_layers": 1}, device="cpu", progress=False, val_boxes="gt"))
    from stagecache.extract.store import open_store

    video = open_store(str(va)).videos[0]
    files = run_visualize(VisualizeArgs(out_dir=str(tmp_path / "pics"), timestamp=903.0, video_name=video,
                                        run_dir=str(run), store=str(va), boxes="gt", width=160, height=90))
    assert len(files) == 1 and mpimg.imread(files[0]).shape[:2] == (360, 640)  # the canvas enlarged as a frame
    lm, _ = write_label_files(tmp_path / "ann")
    files = run_visualize(VisualizeArgs(out_dir=str(tmp_path / "pics2"), timestamp=903.0, video_name=video,
                                        predictions=str(run / "val_predictions.csv"), label_map=str(lm),
                                        width=160, height=90))
    assert mpimg.imread(files[0]).shape[:2] == (360, 640)
    with pytest.raises(ValueError, match="no predictions"):
        run_visualize(VisualizeArgs(out_dir=str(tmp_path / "p3"), timestamp=999.0, video_name=video,
                                    predictions=str(run / "val_predictions.csv"), label_map=str(lm)))


def test_small_frames_are_enlarged_by_an_integer_factor_and_large_ones_kept():
    small = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    big = display_image(small)
    assert big.shape == (480, 640, 3)
    assert np.array_equal(big[::4, ::4], small) and np.array_equal(big[3::4, 3::4], small)  # nearest: pixels kept
    assert display_image(np.zeros((90, 200, 3), np.uint8)).shape == (360, 800, 3)  # ceil(640 / 200) = 4
    wide = np.zeros((720, 1280, 3), np.uint8)
    assert display_image(wide) is wide


def test_labels_are_placed_beside_their_box_without_covering_any_box():
    w, h = 640, 480
    boxes = [(100.0, 100.0, 200.0, 300.0), (205.0, 40.0, 300.0, 100.0), (100.0, 305.0, 200.0, 400.0)]
    rect = _place_label(boxes[0], (90.0, 30.0), boxes, w, h)
    assert all(_overlap(rect, b) == 0 for b in boxes)  # above is free: x 100..190, y 70..100
    assert rect == (100.0, 70.0, 190.0, 100.0)
    # above, below and to the right blocked: the label goes to the left
    blocked = boxes + [(60.0, 0.0, 205.0, 99.0), (100.0, 300.0, 640.0, 480.0), (200.0, 100.0, 640.0, 300.0)]
    rect = _place_label(boxes[0], (90.0, 30.0), blocked, w, h)
    assert rect[2] <= 100.0 and all(_overlap(rect, b) == 0 for b in blocked)
    # nowhere free: the least covering spot, still inside the picture
    rect = _place_label((0.0, 0.0, 640.0, 480.0), (90.0, 30.0), [(0.0, 0.0, 640.0, 480.0)], w, h)
    assert 0 <= rect[0] and rect[2] <= w and 0 <= rect[1] and rect[3] <= h


def test_a_timestamp_past_the_end_of_the_video_is_one_error_line(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from stagecache.pipelines.commands.cli import main

    monkeypatch.delenv("STAGECACHE_DEBUG", raising=False)
    video = _write_video(tmp_path / "clip.mp4", frames=20, fps=10)  # 2 s
    pred = tmp_path / "p.csv"
    pred.write_text("clip,0902,0.1,0.1,0.5,0.5,12,0.9\n")
    argv = ["visualize", "--out", str(tmp_path / "pics"), "--video", str(video), "--predictions", str(pred)]
    r = CliRunner().invoke(main, argv + ["--timestamp", "902"])  # no --time-offset: 902 s into a 2 s clip
    lines = r.stderr.splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and "Traceback" not in r.output, r.output
    for s in (str(video), "2.00 s long", "--time-offset 0", "--time-offset 900"):
        assert s in lines[0], (s, lines[0])
    assert not (tmp_path / "pics").exists()
    r = CliRunner().invoke(main, argv + ["--timestamp", "902", "--time-offset", "900.5"])  # 1.5 s: inside
    assert r.exit_code == 0, r.output
    assert mpimg.imread(next((tmp_path / "pics").glob("*.png"))).shape[:2] == (640, 640)  # 32 px -> 640
