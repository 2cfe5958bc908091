import os

import numpy as np
import pytest

from uslib.store import atomic_path, key, load_json, load_npz, save_json, save_npz


def test_key_is_order_independent_for_mappings_and_sensitive_to_values():
    assert key({"a": 1, "b": [1, 2]}) == key({"b": [1, 2], "a": 1})
    assert key({"a": 1}) != key({"a": 2})
    assert key(np.int64(3)) == key(3)


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"], "no temporary file left behind"


def test_atomic_files_get_the_usual_permissions(tmp_path):
    path = save_json(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert load_json(path) == {"x": 1}


def test_npz_round_trip_and_object_arrays_refused(tmp_path):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    save_npz(tmp_path / "a.npz", a=a, keys=np.array(["x", "y"]))
    back = load_npz(tmp_path / "a.npz")
    np.testing.assert_array_equal(back["a"], a)
    assert back["keys"].tolist() == ["x", "y"]
    with pytest.raises(TypeError, match="object"):
        save_npz(tmp_path / "b.npz", o=np.array([{"a": 1}], dtype=object))
