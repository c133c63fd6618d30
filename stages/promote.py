"""promote: this commit's model -> the GTO stage `--stage` (default prod), only if it clears the team's bar.

The bar (docs/quality-gate.md): the quality gate of params.yaml (`evaluate.gate`), then the model at the
stage: this model must be measured on the same test split and be at least as good on test accuracy and on
macro F1 (pipeline/quality.py). Both are read from metrics.json as committed: this commit's, and that of
the commit the stage's version points to (`git show COMMIT:metrics.json`). When it clears the bar, the
commit is registered (`gto register`, unless it already has a version) and assigned the stage (`gto
assign`); otherwise one sentence gives both numbers and nothing is tagged. Not a pipeline stage: run it
after `dvc repro`, a commit and `dvc push`, e.g. `python -m stages.promote`, then push the tags it names.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.cli import run_stage
from pipeline.errors import PipelineError
from pipeline.params import EvaluateParams, load_params
from pipeline.quality import PROMOTION_METRICS, gate_failures, gate_sentence, promotion_refusal

log = logging.getLogger("promote")
ARTIFACT = "classifier"  # dvc.yaml's `artifacts:` name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", default="prod", help="the GTO stage to assign (default: %(default)s)")
    parser.add_argument("--artifact", default=ARTIFACT, help="the artifact in dvc.yaml (default: %(default)s)")
    parser.add_argument("--version", help="the version to register this commit as (default: GTO's next patch)")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="compare the workspace's metrics.json only: exit 0 if it would be promoted, 1 if not; tag nothing",
    )


def command(*args: str) -> str:
    """A git or gto command's output; its failure is one sentence with the tool's own last line."""
    tool = args[0]
    beside = Path(sys.executable).parent / tool  # the gto of this environment, as `make setup` installs it
    executable = str(beside) if beside.is_file() else shutil.which(tool)
    if executable is None:
        raise PipelineError(f"{tool} not found; install the pinned dependencies (make setup) and rerun.")
    result = subprocess.run([executable, *args[1:]], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr.strip() or result.stdout.strip() or "no message").splitlines()[-1]
        raise PipelineError(f"`{' '.join(args)}` failed ({detail}); run it by hand to see why.")
    return result.stdout.strip()


def committed_metrics(commit: str, where: str) -> dict[str, Any] | None:
    """metrics.json as committed at `commit`, or None if that commit has none."""
    shown = subprocess.run(
        ["git", "show", f"{commit}:{paths.METRICS}"], capture_output=True, text=True, check=False
    )  # fmt: skip
    if shown.returncode != 0:
        return None
    try:
        return json.loads(shown.stdout)
    except ValueError:
        raise PipelineError(f"{paths.METRICS} of {where} is not valid JSON; fix that commit's file.") from None


def version_at_stage(artifact: str, stage: str) -> str | None:
    """The version of `artifact` assigned `stage`, if any (GTO's registry state, read from the git tags)."""
    state = json.loads(command("gto", "show", "--json") or "{}")
    return state.get(artifact, {}).get("stage", {}).get(stage)


def version_at(artifact: str, commit: str) -> str | None:
    """The registered version of `artifact` at `commit`, if any."""
    if artifact not in json.loads(command("gto", "show", "--json") or "{}"):
        return None  # `gto show NAME` fails for an artifact with no version yet
    versions = json.loads(command("gto", "show", artifact, "--json") or "[]")
    return next((v["version"] for v in versions if v["commit_hexsha"] == commit and v["registrations"]), None)


def candidate_metrics(dry_run: bool) -> dict[str, Any]:
    if dry_run:  # a pull request's check: the run CI just reproduced, committed or not
        return json.loads(paths.METRICS.read_text(encoding="utf-8"))
    dirty = command("git", "status", "--porcelain", "--", str(paths.METRICS), "dvc.lock")
    metrics = committed_metrics("HEAD", "this commit")
    if dirty or metrics is None:
        raise PipelineError(
            f"{paths.METRICS} or dvc.lock differs from this commit's (or is not committed); commit the run first "
            f"(git add dvc.lock {paths.METRICS} {paths.TEMPERATURE} reports/ && git commit), then promote it."
        )
    return metrics


def compared(candidate: dict[str, Any], baseline: dict[str, Any]) -> str:
    return ", ".join(
        f"{words} {candidate['test'][metric]:.6g} against {baseline['test'][metric]:.6g}"
        for metric, words in PROMOTION_METRICS.items()
    )


def main(args: argparse.Namespace) -> None:
    gate = load_params(EvaluateParams).gate
    candidate = candidate_metrics(args.dry_run)
    if failures := gate_failures(candidate["test"], gate.thresholds()):
        raise PipelineError(gate_sentence(failures, f"it is not promoted to {args.stage}."))
    head = command("git", "rev-parse", "HEAD")
    stage_version = version_at_stage(args.artifact, args.stage)
    if stage_version:
        at_stage = f"{args.artifact}@{stage_version}"  # the registration tag: on the commit that holds the model
        commit = command("git", "rev-list", "-n", "1", at_stage)
        name = f"{at_stage} at {args.stage}"
        if commit == head and not args.dry_run:
            log.info("%s is this commit already: nothing to do", name)
            return
        baseline = committed_metrics(commit, name)
        if baseline is None:
            raise PipelineError(
                f"{name} (commit {commit[:8]}) has no {paths.METRICS} to compare with; assign the stage by hand "
                "(gto assign) after checking this model, or register a model evaluated by this pipeline first."
            )
        if refusal := promotion_refusal(candidate, baseline, name):
            raise PipelineError(f"not promoted to {args.stage}: {refusal}")
        verdict = f"at least as good as {name} ({compared(candidate, baseline)})"
    else:
        verdict = f"the first model for {args.stage}"
    if args.dry_run:
        log.info("this model would be promoted to %s: it clears the quality gate and is %s", args.stage, verdict)
        return
    said, version = [], version_at(args.artifact, head)
    if version is None:
        options = ["--version", args.version] if args.version else []
        said.append(command("gto", "register", args.artifact, "HEAD", *options))
        version = version_at(args.artifact, head)
    said.append(command("gto", "assign", args.artifact, "--version", str(version), "--stage", args.stage))
    tags = [tag for text in said for tag in re.findall(r"git push origin (\S+)", text)]  # as GTO prints them
    log.info(
        "%s %s (commit %s) is now at %s: it clears the quality gate and is %s; push the tags: git push origin %s",
        args.artifact,
        version,
        head[:8],
        args.stage,
        verdict,
        " ".join(tags),
    )


if __name__ == "__main__":
    run_stage(main, __doc__, add_arguments, loads_tensorflow=False)
