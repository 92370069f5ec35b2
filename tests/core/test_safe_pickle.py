"""Restricted unpickling: plain data loads, anything that could run code is refused unexecuted."""
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from stagecache.core.errors import UserError
from stagecache.core.safe_pickle import UnsafePickleError, load_pickle, loads_pickle


class _WritesMarker:
    """Unpickling calls os.system(touch marker): what a hostile file does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _ExecsMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _dump(path, obj, protocol=pickle.HIGHEST_PROTOCOL):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)
    return path


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_plain_data_round_trips_exactly(tmp_path, protocol):
    data = {
        "vid,0902": np.arange(10, dtype=np.float32).reshape(2, 5),
        "blobs": OrderedDict(conv1_w=np.ones((2, 3), np.float64), pred_b=np.zeros(4, np.int64)),
        "cfg": "TRAIN:\n  ENABLE: true\n", "n": 3, "x": 1.5, "flag": True, "none": None,
        "seq": [1, (2, 3)], "s": {4, 5}, "raw": b"\x00\xff", "scalar": np.float32(2.5),
        "bools": np.array([True, False]), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
    }
    out = load_pickle(_dump(tmp_path / "a.pkl", data, protocol))
    assert out.keys() == data.keys()
    for k, v in data.items():
        if isinstance(v, np.ndarray):
            assert out[k].dtype == v.dtype and np.array_equal(out[k], v)
        elif isinstance(v, dict):
            assert list(out[k]) == list(v) and all(np.array_equal(out[k][b], v[b]) for b in v)
        else:
            assert out[k] == v and type(out[k]) is type(v)
    assert type(out["blobs"]) is OrderedDict


def _sbs(b: bytes) -> bytes:  # SHORT_BINSTRING: how Python 2 pickles a str
    return b"U" + bytes([len(b)]) + b


def test_python2_caffe2_blobs_load_with_latin1(tmp_path):
    # byte for byte what Python 2 + numpy 1.x write for {"blobs": {"conv1_w": float32 (2, 3)}}:
    # `numpy.core.multiarray` names and the array data as a latin1 byte string
    arr = np.arange(6, dtype="<f4").reshape(2, 3)
    body = (b"\x80\x02}q\x00" + _sbs(b"blobs") + b"}q\x01" + _sbs(b"conv1_w")
            + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _sbs(b"b") + b"\x87R"
            + b"(K\x01K\x02K\x03\x86cnumpy\ndtype\n" + _sbs(b"f4") + b"K\x00K\x01\x87R"
            + b"(K\x03" + _sbs(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
            + _sbs(arr.tobytes()) + b"tbss.")
    (tmp_path / "c2.pkl").write_bytes(body)
    out = load_pickle(tmp_path / "c2.pkl", encoding="latin1")
    assert out["blobs"]["conv1_w"].dtype == np.float32
    assert np.array_equal(out["blobs"]["conv1_w"], arr)
    # Python 2 module names (`__builtin__.set`) are renamed before the allow-list check
    assert b"c__builtin__\nset" in pickle.dumps({1, 2}, protocol=2)
    assert load_pickle(_dump(tmp_path / "s.pkl", {1, 2}, 2)) == {1, 2}


@pytest.mark.parametrize("payload,type_name", [(_WritesMarker, "posix.system"), (_ExecsMarker, "builtins.exec")])
@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_code_running_pickle_is_refused_and_nothing_runs(tmp_path, payload, type_name, protocol):
    marker = tmp_path / "marker"
    path = _dump(tmp_path / "evil.pkl", {"ok": np.zeros(2), "evil": payload(marker)}, protocol)
    with pytest.raises(UnsafePickleError) as e:
        load_pickle(path)
    msg = str(e.value)
    assert isinstance(e.value, UserError)
    assert str(path) in msg and (type_name in msg or type_name.replace("posix", "nt") in msg)
    assert "--trust-pickle" in msg and "\n" not in msg
    assert not marker.exists()


def test_trust_loads_with_plain_pickle(tmp_path):
    marker = tmp_path / "marker"
    path = _dump(tmp_path / "evil.pkl", [_ExecsMarker(marker)])
    assert load_pickle(path, trust=True) == [None]
    assert marker.exists()


def test_extra_allowed_admits_exactly_the_named_global(tmp_path):
    from fractions import Fraction
    path = _dump(tmp_path / "f.pkl", {"f": Fraction(1, 3)})
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        load_pickle(path)
    assert load_pickle(path, extra_allowed=frozenset({"fractions.Fraction"})) == {"f": Fraction(1, 3)}


def test_a_class_reached_through_a_reduce_argument_is_refused_too(tmp_path):
    # numpy's _reconstruct is allowed, but the class it is handed must be allowed on its own
    body = pickle.dumps(np.zeros(2))
    body = body.replace(b"\x8c\x05numpy\x94\x8c\x07ndarray", b"\x8c\tfractions\x94\x8c\x08Fraction")
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        loads_pickle(body, source="blob.npz:info")


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps({"a": np.zeros(3)})[:-5]])
def test_truncated_or_garbage_file_is_a_user_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(UnsafePickleError) as e:
        load_pickle(path)
    assert str(path) in str(e.value) and "not a readable pickle" in str(e.value)


def test_torch_load_admits_tensors_and_numpy_and_refuses_code(tmp_path):
    import torch

    from stagecache.core.safe_pickle import torch_load

    good = {"model_state": {"w": torch.arange(4.0)}, "epoch": np.int64(3), "best": np.float64(0.5),
            "arr": np.ones((2, 2), np.float32), "cfg": "TRAIN:\n  ENABLE: true\n"}
    torch.save(good, tmp_path / "good.pyth")
    out = torch_load(tmp_path / "good.pyth")
    torch.testing.assert_close(out["model_state"]["w"], torch.arange(4.0))
    assert out["epoch"] == 3 and out["best"] == 0.5 and np.array_equal(out["arr"], good["arr"])

    marker = tmp_path / "marker"
    torch.save({"model_state": {}, "evil": _ExecsMarker(marker)}, tmp_path / "evil.pyth")
    with pytest.raises(UnsafePickleError) as e:
        torch_load(tmp_path / "evil.pyth")
    assert str(tmp_path / "evil.pyth") in str(e.value) and "exec" in str(e.value)
    assert "--trust-pickle" in str(e.value) and not marker.exists()
    assert torch_load(tmp_path / "evil.pyth", trust=True)["evil"] is None and marker.exists()


class _CallsOsSystem:
    def __reduce__(self):
        return (os.system, ("true",))


class _PlainClass:
    pass


@pytest.mark.parametrize("obj, name", [(_CallsOsSystem(), f"{os.name}.system"),  # posix.system on Linux
                                       (_PlainClass(), f"{__name__}._PlainClass")])
def test_torch_load_names_the_refused_type_in_either_torch_wording(tmp_path, obj, name):
    """torch 2.14 words a refused global two ways: "Unsupported global: GLOBAL m.C was not an allowed
    global" (a class) and "Trying to load unsupported GLOBAL posix.system whose module posix is
    blocked" (a function of a blocked module); the message names the type either way."""
    import torch

    from stagecache.core.safe_pickle import torch_load

    torch.save({"x": obj}, tmp_path / "f.pt")
    with pytest.raises(UnsafePickleError) as e:
        torch_load(tmp_path / "f.pt")
    assert f"refusing to unpickle a {name}" in str(e.value), str(e.value)


@pytest.mark.parametrize("cut", [0, 10, 200])
def test_torch_load_of_a_truncated_file_names_it(tmp_path, cut):
    import torch

    from stagecache.core.safe_pickle import torch_load

    torch.save({"w": torch.zeros(100)}, tmp_path / "full.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "full.pt").read_bytes()[:cut])
    with pytest.raises(UnsafePickleError, match=r"cut\.pt: not a readable torch file"):
        torch_load(tmp_path / "cut.pt")


def test_hostile_npz_info_is_refused_and_plain_info_loads(tmp_path):
    from stagecache.extract.detectors.precomputed import BuaNpz

    marker = tmp_path / "marker"
    box = np.array([[0, 0, 10, 10]], np.float32)
    np.savez(tmp_path / "vid_0902.npz", bbox=box, image_w=20, image_h=20,
             info={"objects_id": np.array([4]), "evil": _ExecsMarker(marker)})
    with pytest.raises(UnsafePickleError, match=r"vid_0902\.npz: info: refusing to unpickle a builtins\.exec"):
        BuaNpz(str(tmp_path / "vid_0902.npz")).get(("vid", 902000))
    assert not marker.exists()
    np.savez(tmp_path / "vid_0902.npz", bbox=box, image_w=20, image_h=20,
             info={"objects_id": np.array([4]), "objects_conf": np.array([0.5], np.float32)})
    rec = BuaNpz(str(tmp_path / "vid_0902.npz")).get(("vid", 902000))
    assert rec.class_id.tolist() == [4] and rec.score.tolist() == [0.5]


def test_checkpoint_readers_refuse_code_in_every_format(tmp_path):
    import torch

    from stagecache.extract.checkpoints import read_checkpoint
    from stagecache.extract.detectors.d2 import read_d2_weights
    from stagecache.extract.detectors.vg_convert import read_d2_checkpoint

    marker = tmp_path / "marker"
    _dump(tmp_path / "c2.pkl", {"blobs": {"conv1_w": np.zeros(2)}, "x": _ExecsMarker(marker)})
    torch.save({"model_state": {"w": torch.zeros(1)}, "x": _ExecsMarker(marker)}, tmp_path / "psf.pyth")
    torch.save({"model": {"w": torch.zeros(1)}, "x": _ExecsMarker(marker)}, tmp_path / "d2.pth")
    for read, path in [(lambda p: read_checkpoint(p, torch.nn.Linear(1, 1)), "c2.pkl"),
                       (lambda p: read_checkpoint(p, torch.nn.Linear(1, 1)), "psf.pyth"),
                       (read_d2_weights, "c2.pkl"), (read_d2_weights, "psf.pyth"), (read_d2_weights, "d2.pth"),
                       (read_d2_checkpoint, "c2.pkl"), (read_d2_checkpoint, "d2.pth")]:
        with pytest.raises(UnsafePickleError, match=rf"{path}: refusing to unpickle a builtins\.exec"):
            read(str(tmp_path / path))
    assert not marker.exists()


def test_detectron2_weights_are_read_as_its_checkpointer_does(tmp_path):
    import torch

    from stagecache.extract.detectors.d2 import read_d2_weights

    # Caffe2 / Detectron: blobs without momentum, marked for name matching and C2 conversion
    _dump(tmp_path / "c2.pkl", {"blobs": {"conv1_w": np.ones(2), "conv1_w_momentum": np.ones(2)}, "cfg": "x"}, 2)
    got = read_d2_weights(str(tmp_path / "c2.pkl"))
    assert list(got["model"]) == ["conv1_w"] and got["__author__"] == "Caffe2" and got["matching_heuristics"]
    # an ImageNet Caffe2 model has no "blobs" level
    _dump(tmp_path / "in.pkl", {"res2_w": np.ones(1), "res2_w_momentum": np.ones(1)})
    assert list(read_d2_weights(str(tmp_path / "in.pkl"))["model"]) == ["res2_w"]
    # detectron2 model zoo: as is
    zoo = {"model": {"a": np.ones(1)}, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    _dump(tmp_path / "zoo.pkl", zoo)
    assert read_d2_weights(str(tmp_path / "zoo.pkl"))["__author__"] == "Detectron2 Model Zoo"
    # pycls .pyth: model_state without num_batches_tracked; a plain .pth state dict gets wrapped
    torch.save({"model_state": {"w": torch.ones(1), "bn.num_batches_tracked": torch.tensor(3)}}, tmp_path / "p.pyth")
    got = read_d2_weights(str(tmp_path / "p.pyth"))
    assert list(got["model"]) == ["w"] and got["__author__"] == "pycls"
    torch.save({"w": torch.ones(1)}, tmp_path / "sd.pth")
    got = read_d2_weights(str(tmp_path / "sd.pth"))
    assert list(got["model"]) == ["w"] and got["matching_heuristics"] is True
