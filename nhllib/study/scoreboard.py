"""The course kit's check read from its saved scoreboards (JSON), so the driver needs no teaching code."""

from __future__ import annotations

__all__ = ["judge_scoreboard"]


def judge_scoreboard(board: dict, expect: str) -> list[str]:
    """What is wrong with a saved scoreboard (``Grader.save_scoreboard``); an empty list when nothing is.

    ``expect="pass"`` (the solutions): every exercise was checked and passed. ``expect="blank"`` (the notebook's
    unanswered functions): every exercise was checked and failed with the "not implemented yet" message, so a
    check that passes a blank answer, or fails it for another reason, is caught. The exercises to expect are
    those the board lists under ``expected`` (written by the grader).
    """
    if expect not in ("pass", "blank"):
        raise ValueError(f"expect must be 'pass' or 'blank', got {expect!r}")
    expected = board.get("expected")
    if not isinstance(expected, list) or not expected:
        return ["the scoreboard lists no expected exercises (written by an older grader: rerun the kit)"]
    results = board.get("results", [])
    problems = []
    if len(results) != len(expected):
        problems.append(f"{len(results)} of {len(expected)} exercises were checked")
    for result in results:
        if expect == "pass" and not result["passed"]:
            problems.append(f"{result['exercise']} fails on the solutions: {result['message'].splitlines()[0]}")
        elif expect == "blank" and result["passed"]:
            problems.append(f"{result['exercise']} passes a blank answer")
        elif expect == "blank" and not result["message"].startswith("not implemented yet"):
            problems.append(f"{result['exercise']} fails a blank answer for another reason: "
                            f"{result['message'].splitlines()[0]}")
    return problems
