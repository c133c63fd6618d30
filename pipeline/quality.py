"""The team's bar, as pure functions of metrics.json: the quality gate and the promotion rule (docs/quality-gate.md).

The evaluate stage applies the gate to the model it measured; `python -m stages.promote` applies it again,
then the promotion rule against the model registered at a GTO stage, so a model below the bar cannot
reach that stage through the documented flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Gate key -> (metric in metrics.json's `test`, its name in a sentence, the side on which a model fails).
GATE_METRICS = {
    "min_accuracy": ("accuracy", "test accuracy", "below"),
    "min_macro_f1": ("macro_f1", "test macro F1", "below"),
    "max_ece": ("ece", "test expected calibration error", "above"),
}
# The promotion rule: the candidate must be at least as good on each of these, on the same test split.
PROMOTION_METRICS = {"accuracy": "test accuracy", "macro_f1": "test macro F1"}


def gate_failures(test: Mapping[str, Any], thresholds: Mapping[str, float]) -> list[str]:
    """One clause per threshold the model misses, e.g. 'test accuracy 0.91 is below evaluate.gate.min_accuracy 0.95'."""
    failures = []
    for key, threshold in thresholds.items():
        metric, words, side = GATE_METRICS[key]
        value = test[metric]
        if (value < threshold) if side == "below" else (value > threshold):
            failures.append(f"{words} {value:.6g} is {side} evaluate.gate.{key} {threshold:g}")
    return failures


def gate_sentence(failures: list[str], consequence: str) -> str:
    return f"the model fails the quality gate: {'; '.join(failures)}; {consequence}"


def promotion_refusal(candidate: Mapping[str, Any], baseline: Mapping[str, Any], baseline_name: str) -> str | None:
    """Why `candidate` (this model's metrics.json) may not replace `baseline` (the registered one's), or None.

    The rule: measured on the same test split (its size and the hash of its arrays), and no worse on any
    of PROMOTION_METRICS; ties are accepted, so that retraining the same model can be promoted again.
    """
    split, baseline_split = candidate.get("test_split"), baseline.get("test_split")
    if not baseline_split or split != baseline_split:
        described = (
            f"{baseline_split['examples']} examples, hash {baseline_split['sha256'][:12]}"
            if baseline_split
            else "a metrics.json that does not record its test split"
        )
        return (
            f"{baseline_name} was measured on another test split ({described}) than this model "
            f"({split['examples']} examples, hash {split['sha256'][:12]}), so the two cannot be compared; "
            "promote the first model of a new split with --force after checking it by hand."
        )
    for metric, words in PROMOTION_METRICS.items():
        mine, theirs = candidate["test"][metric], baseline["test"][metric]
        if mine < theirs:
            return (
                f"this model's {words} {mine:.6g} is below the {theirs:.6g} of {baseline_name}, on the same "
                "test split; improve it, or keep the registered one."
            )
    return None
