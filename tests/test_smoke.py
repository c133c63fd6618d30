"""The whole pipeline in one process, in seconds: download -> preprocess -> train -> evaluate -> export.

The fast tier's one test of the stages together (the slow tier runs them as DVC does, in
subprocesses). Each stage's own `main` runs in a temporary folder laid out like the project,
on digits (bundled with scikit-learn: nothing to download) for one epoch.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline import paths
from pipeline.export import FORMATS
from pipeline.prepared import open_split
from pipeline.preprocessing import read_meta
from stages import download, evaluate, export, preprocess, train
from tests.harness import PROJECT_ROOT, edit_params, read_json, read_metrics

TINY = {
    "data.dataset": "digits",
    "data.source": "",
    "train.model": "mlp",
    "train.mlp.hidden_units": [16],
    "train.epochs": 1,
    "train.early_stopping_patience": 0,
    "train.distributed.engine": "none",
    "export.formats": list(FORMATS),
}


def test_one_epoch_of_train_evaluate_export_in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy2(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    edit_params(tmp_path, **TINY)
    monkeypatch.chdir(tmp_path)  # the stages' paths are relative to the project's root (pipeline/paths.py)
    # The train stage sets this for TensorFlow; the tests after this one keep the machine's own setting.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    for stage in (download, preprocess, train, evaluate, export):
        stage.main(argparse.Namespace(quiet=True))

    meta = read_json(paths.PREPARED_META)
    n_test = meta["sizes"]["test"]
    metrics = read_metrics(tmp_path)
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    # An accuracy is a count of right answers over the test split: a multiple of 1/n_test.
    right = metrics["test"]["accuracy"] * n_test
    assert abs(right - round(right)) < 1e-3, (metrics["test"]["accuracy"], n_test)
    assert set(metrics["per_class"]) == set(meta["class_names"])

    from pipeline.models import load_model

    model = load_model(paths.MODEL)
    x_test = open_split("test", read_meta(paths.PREPARED_META)).x
    probabilities = model.predict(x_test[:5], verbose=0)
    assert probabilities.shape == (5, len(meta["class_names"]))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    for name, file in FORMATS.items():
        assert (paths.EXPORT_DIR / file).exists(), f"export wrote no {name} ({file})"
    parity = json.loads(paths.EXPORT_PARITY.read_text())
    assert parity["test_examples"] == n_test
    for name in FORMATS:
        assert parity[name]["max_abs_diff"] <= parity["tolerance"], (name, parity[name])
        assert parity[name]["top1_mismatches"] == 0, (name, parity[name])
