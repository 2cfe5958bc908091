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


# --------------------------------------------------------------------------- #
# Verified reads, seals, damage reports, code fingerprints, the run record
# --------------------------------------------------------------------------- #

import shutil
import warnings

import pandas as pd

from uslib import store


def test_a_flipped_byte_in_an_npz_payload_is_a_named_damaged_artefact(tmp_path):
    path = save_npz(tmp_path / "c.npz", keys=np.array(["a", "b"]), features=np.ones((2, 512), np.float32))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(store.DamagedArtefact, match="c.npz.*CRC"):
        load_npz(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(store.DamagedArtefact, match="c.npz"):
        load_npz(path)


def test_truncated_json_is_a_named_damaged_artefact(tmp_path):
    path = save_json(tmp_path / "w.json", {"a": list(range(10))})
    path.write_text(path.read_text()[:15])
    with pytest.raises(store.DamagedArtefact, match="w.json.*not valid JSON"):
        load_json(path)


def test_sealed_csv_detects_truncation_and_an_unfinished_write(tmp_path):
    df = pd.DataFrame({"lesion": ["a", "b", "c"], "p": [0.1, 0.5, 0.9]})
    path = store.save_csv(tmp_path / "t.csv", df)
    pd.testing.assert_frame_equal(store.load_csv(path), df)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))  # a valid but shorter CSV
    with pytest.raises(store.DamagedArtefact, match="t.csv.*differs from its seal"):
        store.load_csv(path)
    (tmp_path / "t.csv.sha256").unlink()
    with pytest.raises(store.DamagedArtefact, match="no seal"):
        store.load_csv(path)
    with pytest.raises(FileNotFoundError):
        store.load_csv(tmp_path / "never.csv")


def test_sealed_folder(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    (folder / "m.json").write_text("{}")
    with pytest.raises(store.DamagedArtefact, match="no seal"):
        store.verify_dir(folder)
    store.seal_dir(folder)
    assert store.verify_dir(folder) == folder
    (folder / "a.csv").write_text("x\n2\n")
    with pytest.raises(store.DamagedArtefact, match="a.csv"):
        store.verify_dir(folder)


def test_load_or_compute_reports_and_recomputes_a_damaged_file(tmp_path, monkeypatch):
    path = tmp_path / "x.csv"
    store.save_csv(path, pd.DataFrame({"v": [1, 2]}))
    path.write_text("v\n9\n")
    calls = []

    def compute():
        calls.append(1)
        return store.save_csv(path, pd.DataFrame({"v": [1, 2]}))

    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    with pytest.warns(store.DamagedArtefactWarning, match="x.csv"):
        store.load_or_compute(lambda: store.load_csv(path), compute)
    assert calls == [1] and store.load_csv(path)["v"].tolist() == [1, 2]
    # under the runner the report goes to the events file, not to the page
    events = tmp_path / "events.jsonl"
    monkeypatch.setenv(store.EVENTS_ENV, str(events))
    path.write_text("v\n9\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.load_or_compute(lambda: store.load_csv(path), compute)
    got, offset = store.read_events(events)
    assert [e["path"] for e in got] == [str(path)] and offset == events.stat().st_size
    assert store.read_events(events, start=offset) == ([], offset)


def test_code_fingerprint_follows_computation_not_prose(tmp_path):
    pkg = tmp_path / "uslib"
    shutil.copytree(store.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    before = {m: store.code_fingerprint(m, package_dir=pkg) for m in ("phantom", "features", "evaluation")}
    src = (pkg / "evaluation.py").read_text()
    (pkg / "evaluation.py").write_text(src.replace('"""', '"""Edited prose. ', 1) + "\n# a comment\n")
    assert {m: store.code_fingerprint(m, package_dir=pkg) for m in before} == before
    (pkg / "evaluation.py").write_text(src + "\n\ndef _edited():\n    return 1\n")
    after = {m: store.code_fingerprint(m, package_dir=pkg) for m in before}
    assert after["evaluation"] != before["evaluation"]
    assert after["features"] == before["features"] and after["phantom"] == before["phantom"]
    (pkg / "reconstruction.py").write_text((pkg / "reconstruction.py").read_text() + "\nEDIT = 1\n")
    assert store.code_fingerprint("features", package_dir=pkg) != before["features"], "features import reconstruction"
    assert store.code_fingerprint("phantom", package_dir=pkg) == before["phantom"]


def test_code_fingerprint_memo_is_keyed_by_source_and_survives_damage(tmp_path):
    """A new process reads the syntax-tree digests memoised in __pycache__; a damaged memo is recomputed."""
    import subprocess
    import sys

    pkg = tmp_path / "uslib"
    shutil.copytree(store.PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    code = f"from uslib import store; print(store.code_fingerprint('features', package_dir={str(pkg)!r}))"

    def fingerprint():
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=store.REPO_ROOT
        ).stdout.strip()

    first = fingerprint()
    memos = sorted((pkg / "__pycache__").glob("*.uslib-ast-*.json"))
    assert {m.name.split(".")[0] for m in memos} == set(store.stage_modules("features", package_dir=pkg))
    assert fingerprint() == first == store.code_fingerprint("features", package_dir=pkg)
    for m in memos:
        m.write_text("{ damaged")
    assert fingerprint() == first
    (pkg / "augmentation.py").write_text((pkg / "augmentation.py").read_text() + "\nEDIT = 1\n")
    assert fingerprint() != first, "an edit makes a new memo name, never a stale read"


def test_run_record_sections_merge_and_none_removes(tmp_path):
    store.update_run_record(tmp_path, a={"x": 1}, b=1)
    rec = store.update_run_record(tmp_path, a={"y": 2}, b=None)
    assert rec == {"a": {"x": 1, "y": 2}}


def test_a_damaged_run_record_names_the_file_and_the_way_out(tmp_path):
    store.update_run_record(tmp_path, profile="x", stage_seconds={"a": 1.0})
    path = tmp_path / "run.json"
    path.write_text(path.read_text()[:10])
    with pytest.raises(store.DamagedRecord, match=rf"{path}.*delete it \(rm {path}\)"):
        store.read_run_record(tmp_path)


def test_file_lock_makes_processes_started_together_compute_once(tmp_path):
    # Three processes ask for the same artefact at once: one computes it, the others wait and read it.
    import subprocess
    import sys

    from uslib.config import REPO_ROOT

    code = (
        "import sys, time\nfrom pathlib import Path\nfrom uslib import store\n"
        "p, log = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "def compute():\n"
        "    with open(log, 'a') as fh: fh.write('computed\\n')\n"
        "    time.sleep(1.0)\n"
        "    store.save_json(p, {'a': 1})\n"
        "with store.file_lock(p):\n"
        "    store.load_or_compute(lambda: store.load_json(p), compute)\n"
        "assert store.load_json(p) == {'a': 1}\n"
    )
    target, log = tmp_path / "x.json", tmp_path / "log.txt"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target), str(log)], cwd=REPO_ROOT) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert log.read_text().splitlines() == ["computed"]


# --------------------------------------------------------------------------- #
# Every store read survives any damage: named, removed, recomputed
# --------------------------------------------------------------------------- #


def _damage(target, how):
    """Damage a file in place: undecodable bytes, empty, a folder in its place, or a JSON of the wrong shape."""
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink(missing_ok=True)
    if how == "undecodable":
        target.write_bytes(b"\xff\xfe\x80\x81" * 16)
    elif how == "empty":
        target.write_bytes(b"")
    elif how == "folder":
        target.mkdir()
        (target / "x").write_text("x")
    else:
        target.write_text(how)


def _sealed_csv(folder):
    path = folder / "t.csv"
    return path, lambda: store.save_csv(path, pd.DataFrame({"v": [1, 2]})), lambda: store.load_csv(path)


def _sealed_dir(folder):
    out = folder / "res"

    def write():
        out.mkdir(exist_ok=True)
        (out / "a.csv").write_text("x\n1\n")
        store.seal_dir(out)

    return out, write, lambda: (store.verify_dir(out), (out / "a.csv").read_text())[1]


def _json_cache(folder):
    path = folder / "c.json"
    return path, lambda: store.save_json(path, {"a": 1}), lambda: store.load_json(path)


def _npz_cache(folder):
    path = folder / "c.npz"
    return path, lambda: save_npz(path, a=np.arange(3)), lambda: load_npz(path)["a"].tolist()


def _survives(tmp_path, monkeypatch, target_of, artefact, how):
    """Damage one part of an artefact; load_or_compute must name it, remove it and recompute it, once."""
    monkeypatch.delenv(store.EVENTS_ENV, raising=False)
    path, write, load = artefact(tmp_path)
    write()
    good = load()
    target = target_of(path)
    _damage(target, how)
    calls = []

    def compute():
        calls.append(1)
        write()
        return load()

    same = (lambda x: x.equals(good)) if isinstance(good, pd.DataFrame) else (lambda x: x == good)
    with pytest.warns(store.DamagedArtefactWarning, match=path.name):
        got = store.load_or_compute(load, compute)
    assert same(got) and same(load())
    assert calls == [1], "recomputed exactly once"


@pytest.mark.parametrize("how", ["undecodable", "empty", "folder", "[]", "not a digest  t.csv\n"])
def test_a_damaged_seal_is_named_removed_and_recomputed(tmp_path, monkeypatch, how):
    _survives(tmp_path, monkeypatch, lambda p: p.with_name(p.name + ".sha256"), _sealed_csv, how)


@pytest.mark.parametrize("how", ["undecodable", "empty", "folder"])
def test_a_damaged_sealed_file_is_named_removed_and_recomputed(tmp_path, monkeypatch, how):
    _survives(tmp_path, monkeypatch, lambda p: p, _sealed_csv, how)


@pytest.mark.parametrize(
    "how",
    [
        "undecodable",
        "empty",
        "folder",
        "[]",
        '{"files": {}}',
        '{"files": []}',
        '{"files": {"a.csv": 5}}',
        '{"files": {"b.csv": "' + "0" * 64 + '"}}',
        "null",
    ],
)
def test_a_damaged_folder_seal_is_named_removed_and_recomputed(tmp_path, monkeypatch, how):
    _survives(tmp_path, monkeypatch, lambda p: p / store.SEAL, _sealed_dir, how)


@pytest.mark.parametrize("how", ["undecodable", "empty", "folder"])
def test_a_damaged_file_in_a_sealed_folder_is_named_removed_and_recomputed(tmp_path, monkeypatch, how):
    _survives(tmp_path, monkeypatch, lambda p: p / "a.csv", _sealed_dir, how)


def test_a_sealed_folder_replaced_by_a_file_is_recomputed(tmp_path, monkeypatch):
    _survives(tmp_path, monkeypatch, lambda p: p, _sealed_dir, "not a folder")


@pytest.mark.parametrize("how", ["undecodable", "empty", "folder", "{"])
def test_a_damaged_json_cache_is_named_removed_and_recomputed(tmp_path, monkeypatch, how):
    _survives(tmp_path, monkeypatch, lambda p: p, _json_cache, how)


@pytest.mark.parametrize("how", ["undecodable", "empty", "folder"])
def test_a_damaged_npz_cache_is_named_removed_and_recomputed(tmp_path, monkeypatch, how):
    _survives(tmp_path, monkeypatch, lambda p: p, _npz_cache, how)


def test_a_seal_that_names_no_digest_is_a_damaged_artefact_naming_the_file(tmp_path):
    path = tmp_path / "d.mat"
    path.write_bytes(b"data")
    store.seal(path)
    side = tmp_path / "d.mat.sha256"
    side.write_bytes(bytes([side.read_bytes()[0] ^ 0x80]) + side.read_bytes()[1:])  # one flipped bit
    with pytest.raises(store.DamagedArtefact, match="d.mat"):
        store.sealed_digest(path)
    with pytest.raises(store.DamagedArtefact, match="d.mat"):
        store.verify(path)


def test_a_run_record_replaced_by_a_folder_names_the_file_and_the_way_out(tmp_path):
    (tmp_path / "run.json").mkdir()
    with pytest.raises(store.DamagedRecord, match=r"run.json.*rm -r"):
        store.read_run_record(tmp_path)
