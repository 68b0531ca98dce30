"""The course kit: every check passes on the solutions, fails clearly (without raising) on a blank or wrong answer,
and the notebook runs through papermill both ways."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nhllib import study as S
from nhllib.study import execution as E
from nhllib.study.scoreboard import judge_scoreboard
from nhllib.teaching import exercises

REPO = Path(__file__).resolve().parents[2]
SOLUTIONS = REPO / "notebooks" / "solutions" / "05_exercises_solutions.py"
CHECKS = {
    "hamming_ranking": exercises.check_hamming_ranking,
    "average_precision": exercises.check_average_precision,
    "prefix_codes": exercises.check_prefix_codes,
    "conflict_factor": exercises.check_conflict_factor,
    "csq_loss": exercises.check_csq_loss,
}


@pytest.fixture(scope="module")
def solutions():
    return exercises.load_solutions(SOLUTIONS)


def blank(*args, **kwargs):
    raise NotImplementedError


def test_the_check_table_covers_every_exercise():
    assert tuple(CHECKS) == tuple(exercises.exercise_names())


@pytest.mark.parametrize("name", list(CHECKS))
def test_solutions_pass(name, solutions):
    result = CHECKS[name](getattr(solutions, name))
    assert result.passed, str(result)
    assert str(result).startswith("PASS") and "PASS" in result._repr_html_()


@pytest.mark.parametrize("name", list(CHECKS))
def test_blank_answers_fail_without_raising(name):
    result = CHECKS[name](blank)
    assert not result.passed and "not implemented yet" in result.message
    assert str(result).startswith("FAIL") and "FAIL" in result._repr_html_()


def test_typical_mistakes_get_a_precise_message(solutions):
    unstable = exercises.check_hamming_ranking(
        lambda q, d: ((d.shape[1] - d @ q) / 2, torch.argsort((d.shape[1] - d @ q) / 2, descending=True).flip(0)))
    assert not unstable.passed and "stable sort" in unstable.message
    torch_sign = exercises.check_prefix_codes(lambda h, lengths: {n: torch.sign(h[:, :n]) for n in lengths})
    assert not torch_sign.passed and "zeros must become +1" in torch_sign.message
    constant = exercises.check_average_precision(lambda d, r, t: 0.5)
    assert not constant.passed and "expected AP" in constant.message
    divisor_k = exercises.check_conflict_factor(lambda gs, gl, s, k, b: solutions.conflict_factor(gs, gl, s, k + 1, b))
    assert not divisor_k.passed and "expected (δ, τ, α)" in divisor_k.message
    detached = exercises.check_csq_loss(lambda u, y, c, lam: solutions.csq_loss(u.detach(), y, c, lam))
    assert not detached.passed
    crash = exercises.check_csq_loss(lambda u, y, c, lam: u @ torch.ones(3))
    assert not crash.passed and "raised RuntimeError" in crash.message


def test_checks_leave_the_global_rng_alone(solutions):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    exercises.check_prefix_codes(solutions.prefix_codes)
    assert torch.equal(torch.rand(3), expected)


def test_grader_scoreboard_and_pick(solutions):
    grader = exercises.Grader(solutions)
    assert grader.scoreboard().empty
    result = grader.check(exercises.check_csq_loss, solutions.csq_loss)
    assert result.passed and grader.passed == 1
    assert exercises.pick(blank, None) is blank
    with pytest.raises(AttributeError, match="no function 'blank'"):
        exercises.pick(blank, solutions)
    student = exercises.Grader()
    student.check(exercises.check_hamming_ranking, blank)
    board = student.scoreboard()
    assert board.loc["1 · Hamming ranking", "result"] == "FAIL" and student.passed == 0


def test_load_solutions_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="05_exercises_solutions.py"):
        exercises.load_solutions()
    monkeypatch.chdir(REPO / "notebooks")  # where JupyterLab runs the notebook
    assert hasattr(exercises.load_solutions(), "csq_loss")


def _board(passed: list[bool], message: str = "not implemented yet: write the function above") -> dict:
    return {"answers": "notebook", "expected": list(exercises.exercise_names()),
            "results": [{"exercise": name, "passed": ok, "message": message}
                        for name, ok in zip(exercises.exercise_names(), passed)]}


def test_judge_scoreboard_from_a_saved_grader(tmp_path, solutions):
    for answers, expect in ((solutions, "pass"), (None, "blank")):
        grader = exercises.Grader(answers)
        for name, check in CHECKS.items():
            grader.check(check, blank if answers is None else getattr(solutions, name))
        path = grader.save_scoreboard(tmp_path / f"{expect}.json")
        board = json.loads(path.read_text())
        assert board["answers"] == ("solutions" if answers else "notebook") and len(board["results"]) == 5
        assert judge_scoreboard(board, expect) == []
        other = "blank" if expect == "pass" else "pass"
        assert len(judge_scoreboard(board, other)) == 5  # the same board judged the other way fails


def test_judge_scoreboard_names_what_is_wrong():
    failing = _board([True, True, False, True, True], "expected ...")
    assert judge_scoreboard(failing, "pass") == ["prefix_codes fails on the solutions: expected ..."]
    passing_blank = _board([False, True, False, False, False])
    assert judge_scoreboard(passing_blank, "blank") == ["average_precision passes a blank answer"]
    crashed = _board([False] * 5)
    crashed["results"][4]["message"] = "your function raised TypeError: bad"
    assert judge_scoreboard(crashed, "blank") == [
        "csq_loss fails a blank answer for another reason: your function raised TypeError: bad"]
    short = _board([True] * 4)
    assert judge_scoreboard(short, "pass") == ["4 of 5 exercises were checked"]
    with pytest.raises(ValueError, match="expect must be 'pass' or 'blank'"):
        judge_scoreboard(short, "fail")


def _fake_execute(boards: dict[str, dict | None], calls: list):
    """Stands in for papermill: writes the scoreboard the test chose for each execution."""
    def execute(notebook, output, parameters, cwd, threads, children=None):
        calls.append((notebook, output.name, parameters["use_solutions"]))
        board = boards["solutions" if parameters["use_solutions"] else "blank"]
        if board == "crash":
            raise S.NotebookFailed("NameError: name 'grader' is not defined")
        if board is not None:
            Path(parameters["scoreboard_path"]).write_text(json.dumps(board))
    return execute


def test_the_driver_checks_the_kit_both_ways(tmp_path, monkeypatch):
    calls, lines = [], []
    task = S.AnalysisTask("smoke", tmp_path, REPO, {}, exercises=True)
    good = {"solutions": _board([True] * 5, "agrees"), "blank": _board([False] * 5)}
    monkeypatch.setattr(E, "_execute", _fake_execute(good, calls))
    assert S.check_exercises(task, echo=lines.append) == []
    assert calls == [("05_exercises.ipynb", "05_exercises_solutions.ipynb", True),
                     ("05_exercises.ipynb", "05_exercises_blank.ipynb", False)]
    assert lines[0].startswith("[exercises] 05_exercises.ipynb with the solutions: 5 of 5 checks pass")
    assert lines[1].startswith("[exercises] 05_exercises.ipynb with blank answers: 0 of 5 checks pass")

    bad = {"solutions": _board([True, False, True, True, True], "expected AP 0.5"), "blank": "crash"}
    monkeypatch.setattr(E, "_execute", _fake_execute(bad, []))
    failures = S.check_exercises(task, echo=lines.append)
    assert failures == [
        "05_exercises.ipynb with the solutions: average_precision fails on the solutions: expected AP 0.5",
        "05_exercises.ipynb with blank answers: the notebook failed: NameError: name 'grader' is not defined"]
    assert "FAILED" in lines[2] and "05_exercises_solutions.ipynb" in lines[2]

    monkeypatch.setattr(E, "_execute", _fake_execute({"solutions": None, "blank": good["blank"]}, []))
    assert S.check_exercises(task, echo=lines.append) == [
        "05_exercises.ipynb with the solutions: the notebook wrote no scoreboard_solutions.json"]


def test_the_profiles_check_the_kit():
    assert S.load_profile("smoke").exercises and S.load_profile("default").exercises


def _outputs(path: Path) -> str:
    nb = json.loads(path.read_text())
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                texts.append(f"ERROR {out['ename']}")
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.parametrize("use_solutions", [True, False])
def test_exercises_notebook_with_and_without_solutions(tmp_path, use_solutions):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "05_exercises.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / "05_exercises.ipynb"), str(out),
                               parameters={"use_solutions": use_solutions}, cwd=str(REPO), kernel_name="python3",
                               progress_bar=False)
    text = _outputs(out)
    assert "ERROR" not in text
    if use_solutions:
        assert "5 of 5 exercises pass (solutions file)" in text and text.count("PASS") >= 10
    else:
        assert "0 of 5 exercises pass" in text and "not implemented yet" in text and "PASS ·" not in text
