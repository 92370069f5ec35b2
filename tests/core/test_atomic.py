import os

import pytest

from stagecache.core.atomic import TMP_PREFIX, atomic_open, atomic_path, atomic_write_bytes


def test_atomic_open_replaces_only_on_success(tmp_path):
    p = tmp_path / "out.csv"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("half")
            raise RuntimeError("killed mid-write")
    assert p.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.csv"]  # the temporary file is gone too
    with atomic_open(p, "w") as f:
        f.write("new\n")
    assert p.read_text() == "new\n" and os.listdir(tmp_path) == ["out.csv"]


def test_atomic_path_is_a_hidden_sibling_that_keeps_the_extension(tmp_path):
    p = tmp_path / "parts" / "v.npz"
    p.parent.mkdir()
    with atomic_path(p) as tmp:
        assert os.path.dirname(tmp) == str(p.parent)  # same file system: the rename is atomic
        name = os.path.basename(tmp)
        assert name.startswith(TMP_PREFIX) and name.endswith("-v.npz") and not p.exists()
        open(tmp, "wb").write(b"x")
    assert p.read_bytes() == b"x"
    atomic_write_bytes(p, b"yz")
    assert p.read_bytes() == b"yz" and os.listdir(p.parent) == ["v.npz"]


def test_the_file_then_its_directory_are_flushed(tmp_path, monkeypatch):
    """The rename is durable only once the directory is fsynced too: the file's content before
    the rename, the directory after it."""
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    p = tmp_path / "x.json"
    atomic_write_bytes(p, b"{}")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].startswith(str(tmp_path / TMP_PREFIX)) and events[1][1] == str(p)
    assert events[2][1] == str(tmp_path)


def test_full_disk_is_a_one_line_error_and_the_old_file_stays(tmp_path):
    """ENOSPC (or torch's zip writer's `unexpected pos`) inside an atomic write: DiskFullError naming
    the path and the free space; the previous file and no temp file remain."""
    import errno

    from stagecache.core.atomic import DiskFullError

    path = tmp_path / "last.pt"
    path.write_bytes(b"old")
    for exc in (OSError(errno.ENOSPC, "No space left on device"),
                RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 128 vs 0")):
        with pytest.raises(DiskFullError) as e:
            with atomic_path(path, needed=5 << 20) as tmp:
                open(tmp, "wb").write(b"partial")
                raise exc
        assert str(path) in str(e.value) and "free" in str(e.value) and "5.0 MiB needed" in str(e.value)
        assert "\n" not in str(e.value)
        assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["last.pt"]
    with pytest.raises(RuntimeError, match="other"):  # anything else is not a full disk
        with atomic_path(path):
            raise RuntimeError("other")


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    from stagecache.core.atomic import remove_stale_temps

    stale = tmp_path / f"{TMP_PREFIX}{'0f' * 16}-last.pt"
    stale.write_bytes(b"x")
    other = tmp_path / f"{TMP_PREFIX}{'0f' * 16}-best.pt"
    other.write_bytes(b"x")
    (tmp_path / "last.pt").write_bytes(b"keep")
    assert remove_stale_temps(tmp_path, "last.pt") == [stale.name]
    assert sorted(os.listdir(tmp_path)) == sorted([other.name, "last.pt"])
