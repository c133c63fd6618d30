"""README's `dvc exp run -S ...` lines are the truth: valid params, the benchmarked recipes, no slow settings."""

from __future__ import annotations

import copy
import re
import shlex

import pytest
import yaml
from conftest import PROJECT_ROOT

from bench.accuracy import RECIPES
from bench.common import DEFAULT_FASHION, apply_params
from pipeline.params import DataParams, EvaluateParams, PreprocessParams, TrainParams, parse_section

SHIPPED = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def readme_exp_runs() -> list[list[str]]:
    """Every `dvc exp run` command in README's bash blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (PROJECT_ROOT / "README.md").read_text(), flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == ["dvc", "exp", "run"]:
                commands.append(words)
    return commands


def apply_overrides(words: list[str]) -> dict:
    """params.yaml with the command's `-S key=value` overrides applied, as `dvc exp run` would."""
    document = copy.deepcopy(SHIPPED)
    overrides = (override.split("=", 1) for flag, override in zip(words, words[1:], strict=False) if flag == "-S")
    apply_params(document, {dotted: yaml.safe_load(value) for dotted, value in overrides})
    return document


COMMANDS = readme_exp_runs()


def test_readme_has_the_recipes() -> None:
    assert len(COMMANDS) >= len(RECIPES) + 3


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w[3:])[:60] for w in COMMANDS])
def test_every_readme_override_is_a_valid_param(words: list[str]) -> None:
    document = apply_overrides(words)
    for section in (DataParams, PreprocessParams, TrainParams, EvaluateParams):
        parse_section(section, document[section.SECTION])


@pytest.mark.parametrize("name", RECIPES)
def test_benchmarked_recipe_is_in_readme_as_measured(name: str) -> None:
    overrides = [word.format(source=DEFAULT_FASHION) for word in RECIPES[name]["overrides"]]
    assert ["dvc", "exp", "run", *overrides] in COMMANDS


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_avoid_settings_measured_slow(name: str) -> None:
    train = parse_section(TrainParams, apply_overrides(["dvc", "exp", "run", *RECIPES[name]["overrides"]])["train"])
    assert train.cpu_speed_warnings() == []
