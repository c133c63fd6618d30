"""The GitHub Actions workflow users copy: its `run:` steps, read from the YAML, run in a temporary repository.

GitHub is out of reach here, so this file plays the runner: it evaluates each step's `if:` and `env:`
expressions against a pull-request or push event, runs the script with the shell the workflow names,
and reads the job summary the steps wrote. `uses:` steps are stood in for: the checkout is a fresh
`git clone`, setup-python is this interpreter's environment. The CML comment step needs GitHub; here we
check that the report it posts is the one the summary got.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ENV, PROJECT_ROOT, VENV_BIN, copy_repo, dvc, edit_params, ran_stages, read_metrics, run

pytestmark = pytest.mark.slow  # the CI workflow's steps, run in copies of the project

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "dvc-pipeline.yml"
STOOD_IN_FOR = ("actions/checkout@", "actions/setup-python@", "iterative/setup-cml@")
ZERO_SHA = "0" * 40


def load_steps() -> list[dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    return job["steps"]


def workflow_env() -> dict[str, str]:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    (job,) = workflow["jobs"].values()
    return {**workflow.get("env", {}), **job.get("env", {})}


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """The subset of GitHub's expression language the workflow uses: names, 'literals', `||`, `&&`, `==`."""
    expression = expression.strip()
    if expression.startswith("${{") and expression.endswith("}}"):
        expression = expression[3:-2].strip()
    if "||" in expression:
        values = [evaluate(part, context) for part in expression.split("||")]
        return next((value for value in values if value), values[-1])
    if "&&" in expression:
        values = [evaluate(part, context) for part in expression.split("&&")]
        return next((value for value in values if not value), values[-1])
    if "==" in expression:
        left, right = (evaluate(part, context) for part in expression.split("=="))
        return left == right
    if re.fullmatch(r"'[^']*'", expression):
        return expression[1:-1]
    assert re.fullmatch(r"[a-z_]+(\.[A-Za-z_]+)*", expression), f"unsupported expression: {expression}"
    value: Any = context
    for key in expression.split("."):
        value = value.get(key, "") if isinstance(value, dict) else ""  # GitHub: a missing property is ''
    return value


def substitute(text: str, context: dict[str, Any]) -> str:
    return re.sub(r"\$\{\{(.*?)\}\}", lambda match: str(evaluate(match.group(1), context)), text)


def github_context(event_name: str, **event: Any) -> dict[str, Any]:
    repository = "team/project"
    if event_name == "pull_request":  # from a branch of the same repository, not a fork
        event["pull_request"]["head"] = {"repo": {"full_name": repository}}
    github = {"event_name": event_name, "event": event, "ref": "refs/heads/test", "repository": repository}
    return {"github": github, "secrets": {}}


def run_steps(
    repo: Path, steps: list[dict[str, Any]], context: dict[str, Any], runner_temp: Path
) -> dict[str, subprocess.CompletedProcess]:
    """Run the steps' scripts in order as the runner would, stopping at the first failure; results by step name."""
    summary = runner_temp / "step_summary.md"
    summary.touch()
    results = {}
    for step in steps:
        if "if" in step and not evaluate(step["if"], context):
            continue
        if "uses" in step:
            assert step["uses"].startswith(STOOD_IN_FOR), f"no stand-in for {step['uses']}"
            continue
        script = runner_temp / "step.sh"
        script.write_text(step["run"])
        env = ENV | {
            key: substitute(str(value), context) for key, value in (workflow_env() | step.get("env", {})).items()
        }
        env |= {"GITHUB_STEP_SUMMARY": str(summary), "RUNNER_TEMP": str(runner_temp), "GITHUB_WORKSPACE": str(repo)}
        if step["run"].startswith("cml "):
            results[step["name"]] = check_cml_step(step["run"], env)
            continue
        # `shell: bash` in GitHub Actions is exactly this command line.
        result = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            cwd=repo, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        results[step["name"]] = result
        if result.returncode != 0:
            break
    return results


def check_cml_step(command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """The comment step posts a report file: check that it names an existing one, and return its text."""
    words = [re.sub(r"\$(\w+)", lambda match: env[match.group(1)], word) for word in shlex.split(command)]
    assert words[:3] == ["cml", "comment", "create"]
    report = Path(words[-1])
    return subprocess.CompletedProcess(words, 0 if report.is_file() else 1, report.read_text(), "")


def markdown_rows(markdown: str, heading: str) -> dict[tuple[str, str], list[str]]:
    """The table under `heading`, as {(path, name): the other cells}."""
    section = markdown.split(heading, 1)[1].split("\n### ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("|")]
    assert set(table[1]) <= set("|-: "), f"no Markdown table under {heading}"
    rows = {}
    for line in table[2:]:  # after the header and its |---| line
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0], cells[1]] = cells[2:]
    return rows


def steps_running(command: str) -> list[dict[str, Any]]:
    """The steps whose script runs `command` (not merely mentions it in a comment or a message)."""

    def runs(script: str) -> bool:
        lines = (line.strip() for line in script.splitlines())
        return any(command in line for line in lines if not line.startswith(("#", "echo ")))

    return [step for step in load_steps() if runs(step.get("run", ""))]


def short_sha(repo: Path, rev: str) -> str:
    return run(["git", "rev-parse", "--short", rev], repo).stdout.strip()


def test_workflow_installs_pinned_deps_with_a_pip_cache() -> None:
    steps = load_steps()
    (setup_python,) = (step for step in steps if step.get("uses", "").startswith("actions/setup-python@"))
    assert setup_python["with"]["cache"] == "pip"
    assert setup_python["with"]["cache-dependency-path"] == "requirements.lock"
    (checkout,) = (step for step in steps if step.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0  # the base commit must be there to diff against
    (install,) = steps_running("pip install")
    assert "-r requirements.lock" in install["run"]


def test_only_pull_requests_from_the_repository_itself_get_a_comment() -> None:
    """A fork's pull request runs with a read-only token: a comment step would fail its job."""
    own = github_context("pull_request", pull_request={"base": {"sha": ZERO_SHA}})
    fork = github_context("pull_request", pull_request={"base": {"sha": ZERO_SHA}})
    fork["github"]["event"]["pull_request"]["head"]["repo"]["full_name"] = "someone/fork"
    push = github_context("push", before=ZERO_SHA)
    cml_steps = [step for step in load_steps() if "cml" in step.get("uses", "") + step.get("run", "")]
    assert len(cml_steps) == 2  # setup-cml and the comment
    for step in cml_steps:
        assert evaluate(step["if"], own) is True
        assert evaluate(step["if"], fork) is False
        assert evaluate(step["if"], push) is False
    promote_steps = [step for step in load_steps() if "stages.promote" in step.get("run", "")]
    assert len(promote_steps) == 2  # checked on pull requests, promoted on main
    for step in promote_steps:  # the team's bar holds for a fork's pull request as for one of the repository's
        assert evaluate(step["if"], own) == evaluate(step["if"], fork)
    assert all("if" not in step for step in load_steps() if step not in cml_steps + promote_steps)


def test_every_shell_step_passes_shellcheck() -> None:
    scripts = {step["name"]: step["run"] for step in load_steps() if "run" in step}
    assert len(scripts) >= 4
    for name, script in scripts.items():
        checked = run(
            [str(VENV_BIN / "shellcheck"), "--shell=bash", "--severity=style", "-"],
            PROJECT_ROOT,
            check=False,
            input=script,
        )
        assert checked.returncode == 0, f"{name}:\n{checked.stdout}"


def test_pull_request_pulls_reproduces_and_reports_the_diff(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The team's repository: a finished run on main, pushed to the remote; then a PR that changes a param.
    origin = copy_repo(digits_run, tmp_path / "origin")
    dvc(origin, "remote", "add", "--default", "team", str(tmp_path / "remote"))
    run(["git", "commit", "-q", "-am", "team remote"], origin)
    dvc(origin, "push")
    base = run(["git", "rev-parse", "HEAD"], origin).stdout.strip()
    run(["git", "checkout", "-q", "-b", "fewer-epochs"], origin)
    edit_params(origin, **{"train.epochs": 3})
    run(["git", "commit", "-q", "-am", "train for 3 epochs"], origin)

    # actions/checkout: a fresh clone of the PR's head with full history and no DVC cache.
    checkout = tmp_path / "checkout"
    run(["git", "clone", "-q", "--branch", "fewer-epochs", str(origin), str(checkout)], tmp_path)
    runner_temp = tmp_path / "runner"
    runner_temp.mkdir()
    # Install for real but change nothing: the pinned versions must already be what this environment has.
    monkeypatch.setitem(ENV, "PIP_NO_INDEX", "1")
    monkeypatch.setitem(ENV, "PIP_DRY_RUN", "1")
    context = github_context("pull_request", pull_request={"base": {"sha": base}}, before="")

    results = run_steps(checkout, load_steps(), context, runner_temp)

    failed = {name: result.stdout + result.stderr for name, result in results.items() if result.returncode != 0}
    assert not failed
    (install_step,) = steps_running("pip install")
    assert "Would install" not in results[install_step["name"]].stdout  # requirements.lock is this environment
    (pull_step,) = steps_running("dvc pull")
    assert "Pulled from the DVC remote 'team'" in results[pull_step["name"]].stdout
    # What was pulled is reused: only the stages that read train.epochs run.
    (repro_step,) = steps_running("dvc repro")
    assert ran_stages(results[repro_step["name"]].stdout) == ["train", "evaluate", "export"]

    summary = (runner_temp / "step_summary.md").read_text()
    short_base = short_sha(checkout, base)
    metrics = markdown_rows(summary, f"### Metrics: `{short_base}` → this run")
    before, after = read_metrics(digits_run), read_metrics(checkout)
    base_accuracy, new_accuracy, change = map(float, metrics["metrics.json", "test.accuracy"])
    assert base_accuracy == pytest.approx(before["test"]["accuracy"], abs=1e-5)
    assert new_accuracy == pytest.approx(after["test"]["accuracy"], abs=1e-5)
    assert change == pytest.approx(new_accuracy - base_accuracy, abs=2e-5)
    assert after["model"]["best_epoch"] <= 3
    best_epochs = [before["model"]["best_epoch"], after["model"]["best_epoch"]]
    assert metrics["metrics.json", "model.best_epoch"] == [*map(str, best_epochs), str(best_epochs[1] - best_epochs[0])]
    params = markdown_rows(summary, f"### Params: `{short_base}` → this run")
    base_epochs = yaml.safe_load((digits_run / "params.yaml").read_text())["train"]["epochs"]
    assert params == {("params.yaml", "train.epochs"): [str(base_epochs), "3"]}

    # The PR comment carries the same report.
    (comment_step,) = steps_running("cml comment create")
    assert results[comment_step["name"]].stdout == summary


def test_no_remote_skips_the_pull_cleanly(digits_run: Path, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    run(["git", "clone", "-q", str(digits_run), str(checkout)], tmp_path)
    listing = sorted(path.relative_to(checkout) for path in checkout.rglob("*") if ".git" not in path.parts)
    results = run_steps(checkout, steps_running("dvc pull"), github_context("push"), tmp_path)
    (result,) = results.values()
    assert result.returncode == 0, result.stderr
    assert "No default DVC remote is configured: skipping dvc pull" in result.stdout
    assert sorted(path.relative_to(checkout) for path in checkout.rglob("*") if ".git" not in path.parts) == listing


def test_unusable_remote_fails_the_pull_step(digits_run: Path, tmp_path: Path) -> None:
    origin = copy_repo(digits_run, tmp_path / "origin")
    dvc(origin, "remote", "add", "--default", "team", str(tmp_path / "never-pushed-to"))
    run(["git", "commit", "-q", "-am", "team remote"], origin)
    checkout = tmp_path / "checkout"
    run(["git", "clone", "-q", str(origin), str(checkout)], tmp_path)
    results = run_steps(
        checkout, steps_running("dvc pull") + steps_running("dvc repro"), github_context("push"), tmp_path
    )
    assert list(results) == [steps_running("dvc pull")[0]["name"]]  # the job stops there: nothing is rebuilt
    (result,) = results.values()
    assert result.returncode != 0
    assert "failed to pull data from the cloud" in result.stderr


def test_first_push_of_a_branch_compares_with_the_parent_commit(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    (report_step,) = steps_running("dvc metrics diff")
    # GitHub sends an all-zero `before` for a new branch: the step falls back to HEAD~1, which has no metrics.
    results = run_steps(repo, [report_step], github_context("push", before=ZERO_SHA), tmp_path)
    (result,) = results.values()
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "step_summary.md").read_text()
    parent = short_sha(repo, "HEAD~1")
    metrics = markdown_rows(summary, f"### Metrics: `{parent}` → this run")
    accuracy = read_metrics(repo)["test"]["accuracy"]
    assert metrics["metrics.json", "test.accuracy"][0] == "-"
    assert float(metrics["metrics.json", "test.accuracy"][1]) == pytest.approx(accuracy, abs=1e-5)
    assert f"### Params: `{parent}` → this run\n\nNo param changed.\n" in summary


def test_a_single_commit_repository_reports_this_runs_metrics(digits_run: Path, tmp_path: Path) -> None:
    repo = copy_repo(digits_run, tmp_path / "repo")
    run(["git", "checkout", "-q", "--orphan", "only"], repo)
    run(["git", "commit", "-q", "-m", "the one commit"], repo)
    (report_step,) = steps_running("dvc metrics diff")
    results = run_steps(repo, [report_step], github_context("push", before=ZERO_SHA), tmp_path)
    (result,) = results.values()
    assert result.returncode == 0, result.stderr
    summary = (tmp_path / "step_summary.md").read_text()
    assert "No earlier commit to compare with. Metrics of this run:" in summary
    header, _, *rows = (line for line in summary.splitlines() if line.startswith("|"))
    (row,) = (line for line in rows if line.strip("|").split("|")[0].strip() == "metrics.json")  # one row per file
    columns = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    accuracy = {name.strip(): value.strip() for name, value in columns.items()}["test.accuracy"]
    assert float(accuracy) == pytest.approx(read_metrics(repo)["test"]["accuracy"], abs=1e-5)


def test_push_to_main_promotes_the_committed_run_and_pushes_the_tags(digits_run: Path, tmp_path: Path) -> None:
    origin = copy_repo(digits_run, tmp_path / "origin")
    checkout = tmp_path / "checkout"
    run(["git", "clone", "-q", str(origin), str(checkout)], tmp_path)
    context = github_context("push", before=ZERO_SHA)
    context["github"]["ref"] = "refs/heads/main"
    (check,) = steps_running("stages.promote --dry-run")
    assert evaluate(check["if"], context) is False  # a push promotes for real instead
    (promote,) = [step for step in steps_running("python -m stages.promote") if step["name"] != check["name"]]
    results = run_steps(checkout, [promote], context, tmp_path)
    (result,) = results.values()
    assert result.returncode == 0, result.stderr
    assert "is now at prod" in result.stderr
    assert {"classifier@v0.0.1", "classifier#prod#1"} <= set(run(["git", "tag"], origin).stdout.split())
