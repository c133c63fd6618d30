"""Every file and folder the stages read or write, named once.

`dvc.yaml` repeats these paths in its deps/outs (DVC needs them there);
`tests/test_dvc_yaml.py` checks that the two agree.
"""

from pathlib import Path

PARAMS = Path("params.yaml")

RAW_DIR = Path("data/raw")
# Where your own image folders and CSV tables live (`dvc add data/own/NAME`); the download stage depends on it.
OWN_DATA_DIR = Path("data/own")
# Where a weights file of train.backbone.weights lives (`dvc add data/backbone/NAME.weights.h5`); the train stage
# depends on it: a fixed folder, as dvc.yaml cannot depend on the param's value ("imagenet" and "none" are no files).
BACKBONE_WEIGHTS_DIR = Path("data/backbone")
PREPARED_DIR = Path("data/prepared")
PREPARED_META = PREPARED_DIR / "meta.json"

MODELS_DIR = Path("models")
MODEL = MODELS_DIR / "model.keras"
MODEL_SUMMARY = MODELS_DIR / "summary.json"
# The export stage's folder: model.keras, serving.json and one file (or folder) per format
# (pipeline/export.py names them); the registry's artifact (dvc.yaml, `artifacts:`).
EXPORT_DIR = MODELS_DIR / "export"
# The temperature the evaluate stage fitted on the validation split: export bakes it in when export.temperature
# is true, predict applies it to model.keras then (pipeline/calibration.py says what it is).
TEMPERATURE = MODELS_DIR / "temperature.json"

REPORTS_DIR = Path("reports")
TRAIN_HISTORY = REPORTS_DIR / "train_history.csv"
LIVE_METRICS = REPORTS_DIR / "live.json"  # the train stage's progress, rewritten after every epoch
CONFUSION = REPORTS_DIR / "confusion.csv"
PER_CLASS = REPORTS_DIR / "per_class.csv"
MISCLASSIFIED = REPORTS_DIR / "misclassified.png"
MISCLASSIFIED_LIST = REPORTS_DIR / "misclassified.csv"
ROC = REPORTS_DIR / "roc.csv"  # one-vs-rest ROC curve points, per class, with their thresholds
PRECISION_RECALL = REPORTS_DIR / "precision_recall.csv"
RELIABILITY = REPORTS_DIR / "reliability.csv"  # the reliability diagram: before and after temperature scaling
METRICS = Path("metrics.json")
EXPORT_PARITY = REPORTS_DIR / "export_parity.json"  # the export stage's metrics: each format against model.keras

# Scratch state of an interrupted train stage. Deliberately not a DVC output:
# DVC deletes a stage's outputs before running it, which would delete the
# very state a rerun needs to resume from.
RESUME_DIR = Path(".resume/train")


def split_dir(split: str) -> Path:
    """The folder of one prepared split (train, val or test): its shards, labels and manifest (docs/data-on-disk.md)."""
    return PREPARED_DIR / split


def split_manifest(split: str) -> Path:
    """How the split is stored: its files with their rows, sizes and sha256 (pipeline/prepared.py)."""
    return split_dir(split) / "manifest.json"


def shard_file(split: str, number: int) -> Path:
    """The split's examples, shard `number` (0, 1, ...)."""
    return split_dir(split) / f"x-{number:05d}.npy"


def labels_file(split: str) -> Path:
    return split_dir(split) / "y.npy"


def source_file(split: str) -> Path:
    """Where each example of the split comes from (written for the test split, for evaluate's reports)."""
    return split_dir(split) / "source.npy"


# Which stage writes each output: an unreadable or hand-edited file there is fixed by rerunning that stage.
# The first folder holding the path wins: models/export/ before the rest of models/.
WRITERS = {
    RAW_DIR: "download",
    PREPARED_DIR: "preprocess",
    EXPORT_DIR: "export",
    TEMPERATURE: "evaluate",
    MODELS_DIR: "train",
    REPORTS_DIR: "evaluate",
}


def rerun_hint(path: Path | str) -> str:
    """What to do about a bad `path`: rerun the stage that writes it, from scratch (`-f`)."""
    path = Path(path)
    for folder, stage in WRITERS.items():
        if path == folder or folder in path.parents:
            return f"rerun the stage that writes it: dvc repro -f {stage}."
    return "check the file, or rerun the stage that writes it."


# Held (flock) by a running train stage: a second one in the same workspace is refused. Beside RESUME_DIR,
# not in it: a finished run deletes that folder while it still holds the lock.
TRAIN_LOCK = Path(".resume/train.lock")
