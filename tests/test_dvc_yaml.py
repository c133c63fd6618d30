"""dvc.yaml declares what each stage really reads and writes, so `dvc repro` reruns exactly what changed."""

from __future__ import annotations

import ast
import fnmatch
import json
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import params, paths
from pipeline.code_deps import import_closure
from tests.harness import PROJECT_ROOT, copy_repo, dvc, edit_params, ran_stages, run

PIPELINE = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())
STAGES = PIPELINE["stages"]


def sections_read(source: Path) -> list[type]:
    """The params classes a stage passes to `load_params`."""
    tree = ast.parse(source.read_text())
    return [
        getattr(params, node.args[0].id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_params"
    ]


def all_keys(cls: type[params.Section], prefix: str) -> set[str]:
    keys = set()
    for name, field in cls.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, params.Section):
            keys |= all_keys(field.annotation, f"{prefix}.{name}")
        else:
            keys.add(f"{prefix}.{name}")
    return keys


@pytest.mark.parametrize("name", list(STAGES))
def test_stage_runs_its_module(name: str) -> None:
    assert STAGES[name]["cmd"] == f"python -m stages.{name}"


@pytest.mark.parametrize("name", list(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(name: str) -> None:
    declared = [dep for dep in STAGES[name]["deps"] if dep.endswith(".py")]
    imported = [str(path) for path in import_closure(PROJECT_ROOT / "stages" / f"{name}.py")]
    assert sorted(declared) == imported, "the stage's code deps in dvc.yaml should be:\n" + "\n".join(
        f"      - {path}" for path in imported
    )


def test_editing_a_helper_reruns_only_the_stages_that_import_it(digits_run: Path, tmp_path: Path) -> None:
    """With real DVC: the image decoder is preprocess's (and download's) code, never train's or evaluate's."""
    repo = copy_repo(digits_run, tmp_path / "repo")
    with open(repo / "pipeline/images.py", "a", encoding="utf-8") as module:
        module.write("# an edit\n")
    importers = {name for name in STAGES if "pipeline/images.py" in STAGES[name]["deps"]}
    assert "preprocess" in importers and not importers & {"train", "evaluate", "export"}
    assert set(json.loads(dvc(repo, "status", "--json").stdout)) == importers


def test_params_module_imports_only_leaf_modules() -> None:
    """Every stage imports params.py, so whatever it imports is a code dep of every stage: editing a helper
    such as pipeline/images.py must not make train stale."""
    leaves = {"pipeline/errors.py", "pipeline/paths.py", "pipeline/__init__.py"}
    imports = {str(path) for path in import_closure(PROJECT_ROOT / "pipeline/params.py")}
    assert imports == leaves | {"pipeline/params.py"}
    for leaf in leaves:
        assert {str(path) for path in import_closure(PROJECT_ROOT / leaf)} - {"pipeline/__init__.py"} <= {leaf}


@pytest.mark.parametrize("name", list(STAGES))
def test_params_are_every_key_the_stage_reads_key_by_key(name: str) -> None:
    """Every key the stage reads, except those named execution-only: they never change the results."""
    sections = sections_read(PROJECT_ROOT / "stages" / f"{name}.py")
    assert sections, f"stages/{name}.py reads no params section"
    expected = set().union(*(all_keys(cls, cls.SECTION) for cls in sections))
    assert set(STAGES[name]["params"]) == expected - set(params.EXECUTION_ONLY)


def test_execution_only_keys_are_keys_of_the_train_section() -> None:
    assert set(params.EXECUTION_ONLY) <= all_keys(params.TrainParams, "train")


def test_changing_only_execution_settings_retrains_nothing(digits_run: Path, tmp_path: Path) -> None:
    """With real DVC: the execution-only keys changed together rerun no stage, yet DVC still shows them."""
    repo = copy_repo(digits_run, tmp_path / "repo")
    changes = {
        "train.steps_per_execution": 1,
        "train.feed": "stream",
        "train.checkpoint_minutes": 0,
        "train.distributed.launcher": "external",
        "train.distributed.coordinator": "10.0.0.5:12355",
        "train.distributed.join_timeout": 60,
    }
    assert set(changes) == set(params.EXECUTION_ONLY)
    edit_params(repo, **changes)
    assert ran_stages(dvc(repo, "repro").stdout) == []
    shown = dvc(repo, "params", "diff", "--json").stdout
    assert all(key in shown for key in changes), shown  # `dvc params diff` still lists every one of them
    edit_params(repo, **{"train.seed": 7})  # a key that does shape the model still makes train stale
    assert list(json.loads(dvc(repo, "status", "--json").stdout)) == ["train"]


def test_data_paths_in_dvc_yaml_are_the_ones_in_pipeline_paths() -> None:
    known = {str(value) for value in vars(paths).values() if isinstance(value, Path)}
    known |= {str(paths.split_dir(split)) for split in ("train", "val", "test")}
    declared = set()
    for spec in STAGES.values():
        for entry in spec.get("deps", []) + spec.get("outs", []) + spec.get("metrics", []):
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            if not path.endswith(".py"):
                declared.add(path)
    assert declared <= known, declared - known
    assert str(paths.RESUME_DIR) not in declared  # resume state must survive DVC deleting outputs


@pytest.mark.parametrize("name", ["download", "preprocess"])
def test_stages_other_than_train_and_evaluate_do_not_import_tensorflow(name: str) -> None:
    probe = (
        f"import sys, stages.{name}; print(sorted(m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules))"
    )
    result = run([sys.executable, "-c", probe], PROJECT_ROOT)
    assert result.stdout.strip() == "[]"


def _uncached_outputs() -> list[str]:
    """The outputs dvc.yaml keeps in git (`cache: false`): a teammate's clone has only what was committed."""
    found = []
    for spec in STAGES.values():
        for entry in [*spec.get("outs", []), *spec.get("metrics", []), *spec.get("plots", [])]:
            if isinstance(entry, dict):
                ((path, options),) = entry.items()
                if options and options.get("cache") is False:
                    found.append(path)
    return found


def test_the_documented_commit_holds_every_output_kept_in_git() -> None:
    """docs/remotes-and-ci.md's `git add` line: leave one such output out and a teammate's `dvc repro` reruns its
    stage (measured: `reports/*.csv` left out reports/live.json and export_parity.json, and train ran again)."""
    text = (PROJECT_ROOT / "docs/remotes-and-ci.md").read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("dvc repro && git add ")]
    pathspecs = line.removeprefix("dvc repro && git add ").split(" && ")[0].split()
    uncached = _uncached_outputs()
    assert "reports/live.json" in uncached and "metrics.json" in uncached
    for output in uncached:
        assert any(fnmatch.fnmatch(output, spec) or output.startswith(spec.rstrip("/") + "/") for spec in pathspecs), (
            output
        )
