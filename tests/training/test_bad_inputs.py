"""What a demanding user types, and what must happen: an error naming the parameter or file, never lost work.

Every case of issue 12 is here, grouped as the issue groups them: typed parameters (configuration and notebook),
paths resolved once, one writer per folder, stops that leave nothing behind, code inputs of evaluation and
retrieval, file and data errors, the grid schema, and the smaller items (umask, analysis marker, collapse).
The slow tests drive papermill and ``run_all.sh`` end to end on a tiny profile.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nhllib import study as S
from nhllib.checks import MAX_CODE_LENGTH
from nhllib.store.locks import FolderLock, LockedError, lock_path
from nhllib.store.results import COMPLETE_MARKER, RunExistsError, RunStore, atomic_write_text
from nhllib.study import execution as E
from nhllib.study import processes as P
from nhllib.training.config import RunConfig
from nhllib.training.parameters import train_parameters

from conftest import TINY_RUN

ROOT = Path(__file__).resolve().parents[2]
TINY = {**TINY_RUN, "code_lengths": (8, 16), "epochs": 1}


# ---------------------------------------------------------------- 1. typed parameters


@pytest.mark.parametrize("field, value", [
    ("amp", "yes"), ("download", "false"), ("pretrained", "false"), ("center_codes", 1), ("amp", None),
])
def test_config_booleans_take_only_booleans(field, value):
    with pytest.raises(ValueError, match=f"{field} must be True or False, got {value!r}"):
        RunConfig.from_dict({field: value})


@pytest.mark.parametrize("field, value, message", [
    ("code_lengths", (8, 10**9), f"code_lengths must be at most {MAX_CODE_LENGTH} bits"),
    ("batch_size", 10**9, "batch_size must be at most"),
    ("eval_batch_size", 10**9, "eval_batch_size must be at most"),
    ("epochs", 10**9, "epochs must be at most"),
    ("query_per_class", 10**9, "query_per_class must be at most"),
    ("image_size", 10**6, "image_size must be at most"),
    ("num_workers", 10**6, "num_workers must be at most"),
    ("data_dir", True, "data_dir must be a non-empty path"),
])
def test_sizes_have_upper_bounds_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict({field: value})


def _namespace(**given):
    return {"_names": 1, **given}


def test_unknown_notebook_parameter_is_an_error_with_a_suggestion():
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) 'epochz' \(did you mean 'epochs'\?\)"):
        train_parameters(_namespace(epochz=3), {"_names"})


@pytest.mark.parametrize("spelling, expected", [
    (False, False), ("false", False), ("False", False), ("FALSE", False), (" false ", False),
    (True, True), ("true", True), ("True", True),
])
def test_notebook_booleans_accept_only_the_documented_spellings(spelling, expected):
    params = train_parameters(_namespace(**TINY, overwrite=spelling, amp=spelling), {"_names"})
    assert params.overwrite is expected and params.config.training.amp is expected


@pytest.mark.parametrize("spelling", [0, 1, "no", "yes", "0", "1", "off", "", None, 0.0, [False]])
def test_notebook_booleans_refuse_everything_else(spelling):
    with pytest.raises(ValueError, match="overwrite must be True or False"):
        train_parameters(_namespace(overwrite=spelling), {"_names"})
    with pytest.raises(ValueError, match="pretrained must be True or False"):
        train_parameters(_namespace(pretrained=spelling), {"_names"})


def test_notebook_results_root_is_made_absolute_against_the_working_directory(tmp_path):
    params = train_parameters(_namespace(results_root="res"), {"_names"}, cwd=tmp_path)
    assert params.results_root == tmp_path / "res"
    with pytest.raises(ValueError, match="results_root must be a non-empty path"):
        train_parameters(_namespace(results_root=""), {"_names"})


@pytest.mark.parametrize("spelling", [False, "false", "False", "FALSE", 0, "0", "no", "off", None])
def test_a_complete_run_is_never_overwritten_through_any_spelling(tmp_path, spelling):
    from nhllib.training.experiment import run_experiment

    cfg = RunConfig.from_dict(TINY)
    store = RunStore(tmp_path, cfg.study, cfg.run_id)
    store.prepare()
    (store.path / "metrics.csv").write_text("precious\n")
    store.mark_complete()
    try:
        params = train_parameters(_namespace(**TINY, overwrite=spelling, results_root=str(tmp_path)), {"_names"})
    except ValueError as err:
        assert "overwrite" in str(err)
    else:
        assert params.overwrite is False
        with pytest.raises(RunExistsError, match=str(store.path)):
            run_experiment(params.config, params.results_root, overwrite=params.overwrite)
    assert (store.path / "metrics.csv").read_text() == "precious\n" and store.state == "complete"


def test_nhl_jobs_typo_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setenv("NHL_JOBS", "abc")
    assert S.main(["smoke", "--results", "unused"]) == 2
    assert "NHL_JOBS must be a positive integer" in capsys.readouterr().err


# ---------------------------------------------------------------- 2. the grid schema


@pytest.mark.parametrize("block, message", [
    ({"sweep": {"seed": 0}}, r"grid block 1, sweep key 'seed': must be a list of values"),
    ({"sweep": {"method": "csq"}}, r"grid block 1, sweep key 'method': must be a list"),
    ({"sweep": {"code_lengths": [8, 16, 32]}}, r"grid block 1, sweep key 'code_lengths': each value is a list"),
    ({"sweep": {"seed": []}}, r"grid block 1, sweep key 'seed': the list is empty"),
    ({"sweep": {"epochz": [1]}}, r"grid block 1, sweep key 'epochz': not a run parameter"),
    ({"epochz": 1}, r"grid block 1: unknown run parameter\(s\) \['epochz'\]"),
    ({"sweep": [1, 2]}, r"grid block 1: 'sweep' must map"),
    ("csq", r"grid block 1 must be a mapping"),
])
def test_grid_mistakes_name_the_block_and_key(block, message):
    with pytest.raises(ValueError, match=message):
        S.check_profile({"study": "x", "grid": [block]}, "profile file x.yaml")


@pytest.mark.parametrize("spec, message", [
    ({"study": "x", "grid": []}, "'grid' must be a non-empty list"),
    ({"study": "x"}, "lacks the key 'grid'"),
    ({"study": "x", "grid": [{}], "defaultz": {}}, r"unknown top-level key\(s\) \['defaultz'\]"),
    ({"study": "x", "grid": [{}], "defaults": {"epochz": 1}}, r"unknown run parameter\(s\) \['epochz'\] in 'defaults'"),
    ({"study": "x", "grid": [{}], "defaults": [1]}, "'defaults' must be a mapping"),
    ({"study": "x", "grid": [{}], "exercises": "yes"}, "'exercises' must be true or false, got 'yes'"),
    ([1], "a profile must be a mapping"),
])
def test_profile_mistakes_name_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        S.check_profile(spec, "profile file x.yaml")


def test_a_profile_file_with_a_mistake_fails_at_load_naming_the_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("study: x\ngrid:\n  - sweep: {seed: 0}\n")
    with pytest.raises(ValueError, match=r"profile file mine.yaml, grid block 1, sweep key 'seed'"):
        S.load_profile(str(path))
    path.write_text("study: x\ngrid: [\n")
    with pytest.raises(ValueError, match=f"profile file {path} is not valid YAML"):
        S.load_profile(str(path))


# ---------------------------------------------------------------- 3. one writer per folder, paths, stops


def _hold_lock(folder: Path, purpose: str = "study driver") -> subprocess.Popen:
    """Another process holding the lock of ``folder`` until killed; returns once it holds it."""
    code = (f"import sys, time; from nhllib.store.locks import FolderLock; FolderLock({str(folder)!r}, {purpose!r})"
            ".acquire(); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    holder = _hold_lock(tmp_path / "study")
    try:
        start = time.monotonic()
        with pytest.raises(LockedError, match=rf"in use by another study driver: pid {holder.pid} on host"):
            FolderLock(tmp_path / "study", "study driver").acquire()
        assert time.monotonic() - start < 2
    finally:
        holder.kill()
        holder.wait()
    with FolderLock(tmp_path / "study", "study driver") as lock:  # released by the holder's death
        assert lock.held and json.loads(lock_path(tmp_path / "study").read_text())["pid"] == os.getpid()
    assert not lock_path(tmp_path / "study").exists()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path):
    lock_path(tmp_path / "run").write_text(json.dumps({"pid": 999999, "host": "elsewhere", "started": "then"}))
    with FolderLock(tmp_path / "run", "training run") as lock:
        assert lock.held


def test_two_drivers_on_one_folder(tmp_path, capsys):
    profile = _tiny_profile(tmp_path)
    holder = _hold_lock(tmp_path / "res" / "tiny")
    try:
        assert S.main([str(profile), "--results", str(tmp_path / "res"), "--jobs", "1"]) == 3
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"pid {holder.pid}" in err and "study driver" in err
    assert not (tmp_path / "res" / "tiny" / S.ANALYSIS_MARKER).exists()


def test_an_unwritable_results_folder_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert S.main([str(_tiny_profile(tmp_path)), "--results", str(blocker / "res")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "must be writable" in err and str(blocker) in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_is_one_clear_error(tmp_path, capsys):
    res = tmp_path / "res"
    res.mkdir()
    res.chmod(0o555)
    try:
        assert S.main([str(_tiny_profile(tmp_path)), "--results", str(res)]) == 2
    finally:
        res.chmod(0o755)
    assert capsys.readouterr().err.count("error:") == 1


def _tiny_profile(tmp_path: Path, epochs: int = 1) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(f"""\
        study: tiny
        defaults: {{query_per_class: 2, train_per_class: 5, val_per_class: 2, database_per_class: 5,
                    epochs: {epochs}, eval_every: 1, patience: 0, device: cpu, data_dir: {str(tmp_path / "data")!r}}}
        grid:
          - code_lengths: [8, 16]
            variant: nhl
            sweep: {{method: [csq], seed: [0]}}
        """))
    return path


def _fake_execute(calls):
    """Stands in for papermill: records the call and completes the run it was asked for."""
    def execute(notebook, output, parameters, cwd, threads, children=None):
        calls.append((notebook, parameters))
        if notebook == S.TRAIN_NOTEBOOK:
            root = Path(parameters["results_root"])
            assert root.is_absolute()
            cfg = RunConfig.from_dict({k: v for k, v in parameters.items() if k not in ("results_root", "progress")})
            RunStore(root, cfg.study, cfg.run_id).mark_complete()
        for kind in ("figures", "tables"):
            if f"{kind}_dir" in parameters:
                (Path(parameters[f"{kind}_dir"]) / "slides").mkdir(parents=True, exist_ok=True)
                (Path(parameters[f"{kind}_dir"]) / f"{notebook}.txt").write_text(kind)
                (Path(parameters[f"{kind}_dir"]) / "slides" / f"{notebook}.png").write_text(kind)
    return execute


def test_a_relative_results_root_is_resolved_once_against_the_callers_directory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_execute", _fake_execute(calls))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    profile = _tiny_profile(tmp_path)
    assert S.main([str(profile), "--results", "res", "--jobs", "1"]) == 0
    trained = [p for n, p in calls if n == S.TRAIN_NOTEBOOK]
    assert len(trained) == 1 and trained[0]["results_root"] == str(elsewhere / "res")
    calls.clear()
    assert S.main([str(profile), "--results", "res", "--jobs", "1"]) == 0  # the second pass resumes: nothing to train
    assert not [n for n, _ in calls if n == S.TRAIN_NOTEBOOK]


def test_analysis_outputs_are_published_as_a_set_with_a_marker(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(E, "_execute", _fake_execute(calls))
    profile = S.load_profile(str(_tiny_profile(tmp_path)))
    figures = tmp_path / "res" / "tiny" / "figures"
    figures.mkdir(parents=True)
    (figures / "old.png").write_text("previous set")
    assert S.run_study(profile, tmp_path / "res", echo=lambda *_: None) == []
    marker = tmp_path / "res" / "tiny" / S.ANALYSIS_MARKER
    assert marker.is_file() and (figures / "03_figures.ipynb.txt").is_file()
    assert (figures / "slides" / "03_figures.ipynb.png").is_file() and (figures / "old.png").is_file()
    assert not (tmp_path / "res" / "tiny" / ".analysis-staging").exists()
    assert S.run_study(profile, tmp_path / "res", echo=lambda *_: None) == []  # a second publication over the first

    def failing(notebook, output, parameters, cwd, threads, children=None):
        _fake_execute([])(notebook, output, parameters, cwd, threads)
        if notebook == "04_retrieval.ipynb":
            raise S.NotebookFailed("boom")
    (figures / "03_figures.ipynb.txt").write_text("published before")
    monkeypatch.setattr(E, "_execute", failing)
    failures = S.run_study(profile, tmp_path / "res", echo=lambda *_: None)
    assert failures and not marker.exists()
    assert (figures / "03_figures.ipynb.txt").read_text() == "published before"  # nothing half-replaced


def test_a_stop_ends_the_whole_process_tree(tmp_path):
    children = P.Children()
    pids_file = tmp_path / "pids"
    script = f"sleep 60 & echo $! > {pids_file}; setsid sleep 60 & echo $! >> {pids_file}; wait"
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("rc", children.run(["bash", "-c", script])))
    worker.start()
    for _ in range(100):
        if pids_file.is_file() and len(pids_file.read_text().split()) == 2:
            break
        time.sleep(0.05)
    pids = [int(p) for p in pids_file.read_text().split()]
    children.stop(grace_s=5)
    worker.join(10)
    assert not worker.is_alive() and result["rc"] != 0
    time.sleep(0.2)
    for pid in pids:  # the grandchild in a session of its own too (as papermill's kernel is)
        assert not _alive(pid), pid
    with pytest.raises(S.Interrupted):
        children.run(["true"])


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(process) -> str:
    import psutil

    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # gone, or a zombie, between listing and asking
        return ""


# ---------------------------------------------------------------- 4. code inputs of evaluation and retrieval


def _codes(seed=0, n=40, bits=16):
    rng = np.random.default_rng(seed)
    return np.where(rng.standard_normal((n, bits)) >= 0, 1, -1).astype(np.float32)


def _labels(n=40, classes=4):
    return np.eye(classes, dtype=np.float32)[np.arange(n) % classes]


@pytest.mark.parametrize("convert, message", [
    (lambda c: np.packbits(c > 0, axis=1), r"query_codes has the unsigned dtype uint8.*unpack_codes"),
    (lambda c: c.astype(np.int8).astype(np.uint8), r"query_codes has the unsigned dtype uint8 \(values \{1, 255\}\).*int8"),
    (lambda c: (c > 0) * 2.0, r"query_codes holds only the non-negative integers \{0, 2\}.*2 \* bits - 1"),
    (lambda c: (c > 0).astype(np.float32), r"query_codes holds only 0 and 1"),
    (lambda c: (c > 0).astype(np.int64), r"query_codes holds only 0 and 1"),
    (lambda c: c > 0, r"query_codes is boolean"),
])
def test_evaluation_rejects_codes_it_would_misread(convert, message):
    from nhllib.core.evaluate import evaluate_nested, mean_average_precision
    from nhllib.retrieval.packing import CodeFormatError

    q, d, ql, dl = _codes(0), _codes(1), _labels(), _labels()
    with pytest.raises(CodeFormatError, match=message):
        mean_average_precision(convert(q), ql, d, dl)
    nested = message.replace("query_codes", r"query_codes\[16\]", 1)  # the nested form names the length
    with pytest.raises(ValueError, match=nested):  # a ValueError too, for callers catching that
        evaluate_nested({16: convert(q)}, ql, {16: d}, dl)


def test_evaluation_accepts_pm1_real_and_explicitly_unpacked_codes():
    from nhllib.core.evaluate import mean_average_precision
    from nhllib.retrieval.packing import unpack_codes

    q, d, ql, dl = _codes(0), _codes(1), _labels(), _labels()
    reference = mean_average_precision(q, ql, d, dl)
    assert mean_average_precision(q * 0.3, ql, d * 2.5, dl) == pytest.approx(reference)  # real-valued
    assert mean_average_precision(torch.from_numpy(q), ql, d.astype(np.int8), dl) == pytest.approx(reference)
    unpacked = unpack_codes(np.packbits(q > 0, axis=1), 16)
    assert mean_average_precision(unpacked, ql, d, dl) == pytest.approx(reference)


@pytest.mark.parametrize("convert, error, message", [
    (lambda c: (c > 0).astype(np.float32), ValueError, r"codes holds only 0 and 1"),
    (lambda c: (c > 0) * 2, ValueError, r"codes holds only the non-negative integers \{0, 2\}"),
    (lambda c: c.astype(np.int8).astype(np.uint8), ValueError, r"look like ±1 codes cast to uint8.*int8"),
    (lambda c: c > 0, TypeError, r"codes is boolean"),
])
def test_indexes_reject_codes_they_would_misread(convert, error, message):
    from nhllib.retrieval import HammingIndex, NestedIndex

    codes = _codes(2)
    for index in (NestedIndex([8, 16]), HammingIndex(16)):
        with pytest.raises(error, match=message):
            index.add(convert(codes))
    packed = np.packbits(codes > 0, axis=1)  # the documented packed input (uint8, code_length // 8 bytes)
    index = NestedIndex([8, 16])
    index.add(packed)
    assert len(index) == len(codes)


# ---------------------------------------------------------------- 5. file and data errors name the file


def _write_idx(path: Path, array: np.ndarray) -> None:
    import struct

    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _fake_fashion(folder: Path, bad_label: int | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.arange(30) % 10
    if bad_label is not None:
        labels[7] = bad_label
    _write_idx(folder / "train-images-idx3-ubyte.gz", np.zeros((30, 28, 28)))
    _write_idx(folder / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10, 28, 28)))
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(10))


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_a_damaged_gz_idx_file_is_a_value_error_naming_it(tmp_path, damage):
    from nhllib.data.idx import read_idx

    path = tmp_path / "train-images-idx3-ubyte.gz"
    _write_idx(path, np.zeros((30, 28, 28)))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else raw[:10] + b"\xff" * 20 + raw[30:])
    with pytest.raises(ValueError, match=f"{path}: truncated or corrupt gzip file"):
        read_idx(path)


def test_a_label_out_of_range_names_the_file_and_record(tmp_path):
    from nhllib.data.pools import load_fashion_mnist

    _fake_fashion(tmp_path / "fm", bad_label=200)
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte.gz: label record 7 is 200"):
        load_fashion_mnist(root=tmp_path / "fm", system_dir=None)


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    else:  # flip bits in the middle of the compressed payload
        for i in range(len(raw) // 3, len(raw) // 3 + 16):
            raw[i] ^= 0xFF
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_split_file_is_a_value_error_naming_it(tmp_path, how):
    from nhllib.data.split import load_index_arrays, save_index_arrays

    path = tmp_path / "split.npz"
    save_index_arrays(path, {"query": np.arange(5000)}, {"seed": 0})
    _damage(path, how)
    with pytest.raises(ValueError, match=str(path)):
        load_index_arrays(path, ("query",), {"seed": 0})


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_nested_index_is_a_value_error_naming_it(tmp_path, how):
    from nhllib.retrieval import NestedIndex

    index = NestedIndex([8, 16])
    index.add(_codes(3, n=4000))
    path = tmp_path / "index.npz"
    index.save(path)
    _damage(path, how)
    with pytest.raises(ValueError, match=str(path)):
        NestedIndex.load(path)


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_damaged_codes_file_is_a_value_error_naming_it(tmp_path, how):
    from nhllib.store.results import read_codes, write_codes

    write_codes(tmp_path, _codes(4, n=4000), _codes(5, n=4000), np.zeros(4000), np.zeros(4000), (8, 16))
    _damage(tmp_path / "codes.npz", how)
    with pytest.raises(ValueError, match=str(tmp_path / "codes.npz")):
        read_codes(tmp_path)


# ---------------------------------------------------------------- 6. smaller items


def test_written_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(previous)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_collapse_is_told_apart_from_one_code_per_class():
    from nhllib.core.collapse import code_health

    rng = np.random.default_rng(0)
    centres = np.where(rng.standard_normal((10, 16)) >= 0, 1.0, -1.0)
    trained = centres[np.arange(200) % 10]  # one code per class: what a good CSQ model gives
    assert not code_health({16: trained}, 10)[16].collapsed
    one_code = np.ones((200, 16))
    health = code_health({16: one_code}, 10)[16]
    assert health.collapsed and health.distinct_codes == 1 and health.constant_bits == 16
    mostly_constant = np.where(rng.standard_normal((200, 16)) >= 0, 1.0, -1.0)
    mostly_constant[:, :10] = 1.0
    assert code_health({16: mostly_constant}, 10)[16].collapsed


# ---------------------------------------------------------------- end to end (papermill, run_all.sh)


def _papermill(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    params = tmp_path / "p.yaml"
    params.write_text(json.dumps({**TINY, "code_lengths": [8, 16], "results_root": str(tmp_path / "res")}))
    return subprocess.run(
        [sys.executable, "-m", "papermill", "notebooks/01_train.ipynb", str(tmp_path / "out.ipynb"), "-f",
         str(params), "--cwd", ".", "-k", "python3", "--no-progress-bar", *extra],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


@pytest.mark.slow
def test_papermill_spellings_never_overwrite_and_typos_stop(tmp_path, tiny_data):
    first = _papermill(tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Passed unknown parameter" not in first.stdout + first.stderr
    assert "IProgress not found" not in first.stdout + first.stderr
    (run_dir,) = [p.parent for p in (tmp_path / "res").glob(f"*/*/{COMPLETE_MARKER}")]
    stamp = (run_dir / COMPLETE_MARKER).read_text()
    for spelling, error in (("false", "RunExistsError"), ("0", "overwrite must be True or False"),
                            ("no", "overwrite must be True or False")):
        again = _papermill(tmp_path, "-p", "overwrite", spelling)
        assert again.returncode != 0 and error in again.stdout + again.stderr, spelling
        assert (run_dir / COMPLETE_MARKER).read_text() == stamp
    typo = _papermill(tmp_path, "-p", "epochz", "3")
    assert typo.returncode != 0 and "unknown notebook parameter(s) 'epochz'" in typo.stdout + typo.stderr


@pytest.mark.slow
def test_sigterm_to_run_all_leaves_no_process_and_a_rerun_completes(tmp_path):
    import psutil

    profile = _tiny_profile(tmp_path, epochs=8)
    env = {**os.environ, "VIRTUAL_ENV": str(Path(sys.executable).parent.parent), "NHL_JOBS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}
    command = [str(ROOT / "run_all.sh"), str(profile), "--results", "res"]
    wrapper = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    try:
        family = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until the kernel of the training notebook is running
            family = psutil.Process(wrapper.pid).children(recursive=True)
            if any("ipykernel" in _cmdline(p) for p in family):
                break
            time.sleep(0.5)
        else:
            pytest.fail("the training notebook never started")
        time.sleep(3)
        family = psutil.Process(wrapper.pid).children(recursive=True)
        wrapper.send_signal(signal.SIGTERM)
        output, _ = wrapper.communicate(timeout=60)
        assert wrapper.returncode == 143, output
        assert "resumable" in output or "resume" in output
        time.sleep(1)
        left = [p for p in family if _alive(p.pid)]
        assert not left, [_cmdline(p) for p in left]
    finally:
        if wrapper.poll() is None:
            os.killpg(wrapper.pid, signal.SIGKILL)
    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    runs = list((tmp_path / "res" / "tiny").glob(f"*/{COMPLETE_MARKER}"))
    assert len(runs) == 1, again.stdout + again.stderr
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (tmp_path / "res" / "tiny" / S.ANALYSIS_MARKER).is_file()


def _train_cells() -> list[str]:
    cells = json.loads((ROOT / "notebooks" / "01_train.ipynb").read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"][:3]  # before, parameters, validation


def test_01_train_refuses_an_injected_unknown_parameter_and_survives_a_rerun_by_hand():
    before, parameters, validation = _train_cells()
    namespace: dict = {}
    exec(before, namespace)
    exec(parameters, namespace)
    exec("epochz = 3", namespace)  # what papermill's injected cell does with -p epochz 3
    with pytest.raises(ValueError, match=r"unknown notebook parameter\(s\) 'epochz' \(did you mean 'epochs'\?\)"):
        exec(validation, namespace)
    namespace = {}
    exec(before, namespace)
    exec(parameters, namespace)
    exec("epochs = 1\noverwrite = 'false'", namespace)
    exec(validation, namespace)
    assert namespace["cfg"].training.epochs == 1 and namespace["params"].overwrite is False
    namespace.update(run_dir=Path("later"), metrics=None)  # names later cells define
    exec(validation, namespace)  # re-run by hand: still only the parameters


# ---------------------------------------------------------------- 7. issue 25: crashes given a name, blank paths
# (profiles: tests/study/test_study_profiles.py; damaged runs: test_study_damaged.py; locks and processes:
# test_study_locks.py, test_study_processes.py)


def test_fashion_mnist_files_whose_shapes_disagree_name_the_file(tmp_path):
    from nhllib.data.pools import load_fashion_mnist

    _fake_fashion(tmp_path / "fm")
    _write_idx(tmp_path / "fm" / "t10k-images-idx3-ubyte.gz", np.zeros((10, 32, 32)))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte.gz: holds images of shape \(32, 32\)"):
        load_fashion_mnist(root=tmp_path / "fm", system_dir=None)


def test_a_truncated_png_of_a_list_file_names_the_file_and_line(tmp_path):
    from PIL import Image

    from nhllib.data.listfile import ListFileDataset, parse_list_file

    for name in ("a.png", "b.png"):
        Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / name)
    raw = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "list.txt").write_text("a.png 1 0\nb.png 0 1\n")
    data = ListFileDataset(parse_list_file(tmp_path / "list.txt"), tmp_path, lambda img: torch.zeros(1))
    data[0]
    with pytest.raises(ValueError, match=rf"{tmp_path / 'b.png'} \(line 2 of {tmp_path / 'list.txt'}\): not a "
                                         "readable image"):
        data[1]


@pytest.mark.parametrize("values, message", [
    ({"seed": 2**64}, "seed must be at most 4,294,967,295"),
    ({"split_seed": 2**64}, "split_seed must be at most 4,294,967,295"),
    ({"batch_size": 1, "center_codes": True}, r"center_codes=True .* needs batch_size >= 2, got batch_size=1"),
])
def test_config_values_that_crashed_later_are_refused_naming_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict({**TINY, **values})
    assert RunConfig.from_dict({**TINY, "batch_size": 1}).data.batch_size == 1  # without centring it trains


def test_executor_slurm_without_slurm_is_one_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    code = S.main([str(_tiny_profile(tmp_path)), "--executor", "slurm", "--results", str(tmp_path / "res")])
    assert code == 2 and "--executor slurm needs Slurm (its sbatch command was not found" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("results", ["", " "])
def test_a_blank_results_folder_is_refused_and_nothing_written(tmp_path, monkeypatch, capsys, results):
    monkeypatch.chdir(tmp_path)
    profile = _tiny_profile(tmp_path)
    assert S.main([str(profile), "--results", results]) == 2
    assert "--results must name a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]
    with pytest.raises(ValueError, match="results_root must be a non-empty path"):
        train_parameters(_namespace(results_root=results), {"_names"})
