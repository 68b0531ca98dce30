"""Issue 25, class 1: a profile means what it says. Every mistake is refused at --list, before anything runs,
naming the file (and line), the block and the key, with what to type instead; nothing is written."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nhllib.study import load_profile
from nhllib.study.cli import main

BASE = """\
study: tiny
defaults: {query_per_class: 2, train_per_class: 5, val_per_class: 2, database_per_class: 5, epochs: 1,
           eval_every: 1, patience: 0, device: cpu}
grid:
  - code_lengths: [8, 16]
    variant: nhl
    sweep: {method: [csq], seed: [0]}
"""


def _profile(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("text, message", [
    (BASE + "defaults: {epochs: 30}\n", r"p.yaml, line 8: the key 'defaults' is given twice \(first on line 2\)"),
    (BASE.replace("variant: nhl", "variant: nhl\n    variant: heads"),
     r"line 7: the key 'variant' is given twice \(first on line 6\)"),
    (BASE + "method_defaults: {dhs: {center_codes: true}}\n",
     r"method_defaults: 'dhs' \(did you mean 'dsh'\?\) is not a method"),
    (BASE + "method_defaults: {dsh: {epochz: 3}}\n",
     r"method_defaults of 'dsh': unknown run parameter\(s\) 'epochz' \(did you mean 'epochs'\?\)"),
    (BASE.replace("variant: nhl", "variant: nhl\n    seed: 5"),
     r"grid block 1: \['seed'\] both fixed and swept; the fixed value would be dropped"),
    (BASE + "analysis: {03_figure.ipynb: {}}\n",
     r"analysis: '03_figure.ipynb' \(did you mean '03_figures.ipynb'\?\) is not an analysis notebook"),
    (BASE + "analysis: {04_retrieval.ipynb: {methd: csq}}\n",
     r"analysis of 04_retrieval.ipynb: unknown notebook parameter\(s\) 'methd' \(did you mean 'method'\?\)"),
    (BASE + "analysis: {02_gradient_conflicts.ipynb: {results_root: elsewhere}}\n", "set by the driver"),
    (BASE + "method_default: {}\n",
     r"unknown top-level key\(s\) \['method_default'\] \(did you mean 'method_defaults'"),
    (BASE.replace("epochs: 1,", 'epochs: 1, lr: "1e-3",'),
     r"lr must be positive, got '1e-3' \(lr: '1e-3' is a string in YAML because it is quoted"),
    (BASE.replace("study: tiny", "study: ' '"), r"'study' must be a folder name \(no '/', not blank\), got ' '"),
    (BASE.replace("study: tiny", "study: ../up"), r"'study' must be a folder name"),
])
def test_a_profile_mistake_is_refused_at_list_naming_it_and_nothing_is_written(tmp_path, capsys, text, message):
    import re

    path = _profile(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        load_profile(str(path))
    assert main([str(path), "--list", "--results", str(tmp_path / "res")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "res").exists()


def test_an_unquoted_exponent_is_a_number():
    """YAML 1.1 reads 1e-3 as a string; the profile reader reads it as YAML 1.2 does."""
    from nhllib.study.profile_yaml import StrictLoader

    import yaml

    values = yaml.load("a: 1e-3\nb: 5E+2\nc: '1e-3'\nd: 8\ne: 1.0e-3\nf: csq\ng: -2e1", Loader=StrictLoader)
    assert values == {"a": 1e-3, "b": 500.0, "c": "1e-3", "d": 8, "e": 1e-3, "f": "csq", "g": -20.0}
    assert isinstance(values["d"], int)


def test_method_defaults_reach_every_run_of_the_method_named_or_defaulted(tmp_path):
    text = BASE.replace("    sweep: {method: [csq], seed: [0]}", "    sweep: {seed: [0]}") + textwrap.dedent("""\
          - code_lengths: [8, 16]
            variant: nhl
            method: csq
            sweep: {seed: [1]}
        method_defaults: {csq: {center_codes: true}}
        """)
    configs = load_profile(str(_profile(tmp_path, text))).configs
    assert [c.seed for c in configs] == [0, 1]
    assert all(c.hashing.method == "csq" for c in configs)
    assert all(c.model.center_codes for c in configs), [c.flat()["center_codes"] for c in configs]


@pytest.mark.parametrize("name", ["smoke", "default", "full", "paper", "baselines"])
def test_the_shipped_profiles_pass_the_strict_reading(name):
    assert load_profile(name).configs
