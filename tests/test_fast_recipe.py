"""train.model=fast_cnn with augmentation and the one-cycle schedule, end to end on digits: reruns give the same
bytes, a run killed mid-epoch resumes to the same bytes, and the exported model holds no augmentation.

Speed is not tested here: bench/fast_recipes.py measures it (BENCHMARKS.md, section 2d).
"""

from __future__ import annotations

import signal
import sys
import zipfile
from pathlib import Path

import pytest
from test_resume import assert_same_result, start_and_kill, train_and_evaluate

from pipeline import paths
from tests.harness import copy_repo, edit_params, make_prepared_repo, stage

# Every augmentation on (a horizontal flip is wrong for digits, but here it only has to be exercised), a batch
# that leaves a partial last batch (1,295 examples), batch normalisation (pipeline/layers.py's fused training step,
# whose moving statistics the resume must restore), and fast_cnn's own one-cycle recipe over EPOCHS epochs
# (enough for a kill after 3 to leave epochs to resume).
EPOCHS = 8
RUN_PARAMS = {
    "train.model": "fast_cnn",
    "train.fast_cnn.epochs": EPOCHS,
    "train.fast_cnn.batch_size": 64,
    "train.fast_cnn.dropout": 0.2,  # a dropout generator whose state the resume must restore too
    "train.fast_cnn.batch_norm": True,
    "train.early_stopping_patience": 0,
    "train.label_smoothing": 0.1,
    "train.augment.flip": "horizontal",
    "train.augment.rotation_degrees": 10.0,
    "train.augment.translation": 0.1,
    "train.augment.zoom": 0.1,
    "train.augment.contrast": 0.2,
}


pytestmark = pytest.mark.slow  # pipeline runs with fast_cnn, killed and resumed, as subprocesses


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_prepared_repo(tmp_path_factory.mktemp("fast-prepared") / "repo", RUN_PARAMS)


@pytest.fixture(scope="module")
def uninterrupted(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(prepared, tmp_path_factory.mktemp("fast-uninterrupted") / "repo")
    result = train_and_evaluate(repo)
    assert "train.model=fast_cnn trains with train.fast_cnn's recipe (batch_size 64" in result.stderr
    return repo


def test_rerun_gives_byte_identical_results(prepared: Path, uninterrupted: Path, tmp_path: Path) -> None:
    repo = copy_repo(prepared, tmp_path / "repo")
    train_and_evaluate(repo)
    assert_same_result(repo, uninterrupted)
    assert (repo / paths.MODEL).read_bytes() != b""


def test_killed_mid_epoch_resumes_to_the_same_bytes(prepared: Path, uninterrupted: Path, tmp_path: Path) -> None:
    repo = copy_repo(prepared, tmp_path / "repo")
    saved = start_and_kill([sys.executable, "-m", "stages.train"], repo, signal.SIGKILL, epochs=EPOCHS)
    result = train_and_evaluate(repo)
    assert f"resuming at epoch {saved + 1} of {EPOCHS}" in result.stderr
    assert_same_result(repo, uninterrupted)


def test_the_model_and_its_exports_hold_no_augmentation(uninterrupted: Path, tmp_path: Path) -> None:
    """The augmentation lives in the input pipeline: the model file has no Random* layer, and every export
    passes the export stage's parity check against model.keras. The file names Keras's own normalisation layer,
    not the fused one that trained."""
    with zipfile.ZipFile(uninterrupted / paths.MODEL) as archive:
        config = archive.read("config.json").decode()
    assert '"class_name": "Random' not in config and "Augment" not in config
    assert '"class_name": "BatchNormalization"' in config and "Fused" not in config
    repo = copy_repo(uninterrupted, tmp_path / "repo")
    result = stage(repo, "export")
    assert result.returncode == 0, result.stderr


def test_augmenting_a_table_is_one_sentence(tmp_path: Path) -> None:
    repo = make_prepared_repo(tmp_path / "repo", {"data.dataset": "iris", "train.augment.translation": 0.1})
    result = stage(repo, "train")
    assert result.returncode == 1
    assert "train.augment changes images, but the prepared data has shape (4,) (a table)" in result.stderr
    edit_params(repo, **{"train.augment.translation": 0.0, "train.epochs": 1})
    assert stage(repo, "train").returncode == 0
