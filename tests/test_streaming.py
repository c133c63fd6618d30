"""Data read from disk in batches (docs/data-on-disk.md): prepared splits in many small shards, trained on streamed
batches, killed and resumed, pushed and pulled, and trained within a memory bound.

Real stages in subprocesses, real signals, real DVC remotes; the shard size is the real param, set tiny.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline import paths
from tests.harness import (
    ENV,
    copy_repo,
    dvc,
    edit_params,
    git_commit,
    make_prepared_repo,
    make_project_repo,
    run,
    stage,
    tree_digest,
)
from tests.test_resume import EPOCHS, RUN_PARAMS, assert_same_result, saved_position, start_and_kill, train_and_evaluate

pytestmark = pytest.mark.slow  # stages in subprocesses, killed, pushed and pulled

# 0.01 MB: 156 digits (8x8 bytes) per shard, so the training split has 9 shards and every batch spans several.
STREAM_PARAMS = RUN_PARAMS | {"preprocess.shard_mb": 0.01, "train.feed": "stream"}


@pytest.fixture(scope="module")
def streamed_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """digits downloaded and preprocessed into many small shards, training set to stream; copy before use."""
    return make_prepared_repo(tmp_path_factory.mktemp("streamed") / "repo", STREAM_PARAMS)


@pytest.fixture(scope="module")
def streamed(streamed_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`streamed_base` trained (reading every batch from the shards) and evaluated, uninterrupted."""
    repo = copy_repo(streamed_base, tmp_path_factory.mktemp("streamed-run") / "repo")
    result = train_and_evaluate(repo)
    assert "Epoch 1/" in result.stdout
    return repo


def test_streamed_training_gives_the_in_memory_bytes(streamed_base: Path, streamed: Path, tmp_path: Path) -> None:
    """train.feed changes the speed, never a number: the same params held in memory end with the same bytes."""
    shards = json.loads((streamed_base / paths.split_manifest("train")).read_text())["shards"]
    assert len(shards) == 9
    repo = copy_repo(streamed_base, tmp_path / "repo")
    edit_params(repo, **{"train.feed": "memory"})
    train_and_evaluate(repo)
    assert_same_result(repo, streamed)


def test_a_streamed_run_killed_mid_epoch_resumes_at_the_step_saved_to_the_same_bytes(
    streamed_base: Path, streamed: Path, tmp_path: Path
) -> None:
    """Saved after every step (train.checkpoint_minutes tiny), killed on a state saved within an epoch: the rerun
    trains the rest of that epoch only, and ends with the uninterrupted run's bytes, the epoch's logged train loss
    and accuracy included (Keras's running sums, saved with the state). The execution-only keys changed on the
    way (the feed, the saving interval, the steps per call) leave the state valid."""
    repo = copy_repo(streamed_base, tmp_path / "repo")
    edit_params(repo, **{"train.checkpoint_minutes": 1e-6, "train.steps_per_execution": 1})
    start_and_kill([sys.executable, "-m", "stages.train"], repo, signal.SIGKILL, within_epoch=True)
    epochs, steps = saved_position(repo)
    edit_params(repo, **{"train.feed": "auto", "train.checkpoint_minutes": 10, "train.steps_per_execution": 64})
    result = train_and_evaluate(repo)
    batches = math.ceil(json.loads((repo / paths.split_manifest("train")).read_text())["count"] / 32)  # batch_size 32
    assert f"resuming at epoch {epochs + 1} of {EPOCHS}, step {steps + 1} of {batches}, from" in result.stderr
    assert_same_result(repo, streamed)
    assert (repo / paths.LIVE_METRICS).read_bytes() == (streamed / paths.LIVE_METRICS).read_bytes()


# ----------------------------------------------------------------------------- preprocess killed mid-write

# Run in a subprocess: the preprocess stage, decoding 3 images per chunk (so a shard is written over several
# chunks), SIGKILLed by an audit hook just as it opens the file named by argv[1], or just as it opens the
# argv[2]-th image file after that (the shard then holds part of its rows).
_KILLED_PREPROCESS = textwrap.dedent(
    """
    import os, runpy, signal, sys
    from pipeline import decoding
    decoding.CHUNK = 3
    marker, images_after = sys.argv[1], int(sys.argv[2])
    seen = []
    def kill_at(event, args):
        path = str(args[0]) if event == "open" else ""  # not os.kill's own event: the hook would recurse
        if path.endswith(marker) or (seen and path.endswith(".png")):
            seen.append(path)
            if len(seen) > images_after:
                os.kill(os.getpid(), signal.SIGKILL)
    sys.addaudithook(kill_at)
    sys.argv = ["stages.preprocess"]
    runpy.run_module("stages.preprocess", run_name="__main__")
    """
)


@pytest.fixture(scope="module")
def image_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image folder of 60 8x8 PNGs in 3 classes, downloaded and preprocessed into shards of 5 images."""
    repo = make_project_repo(tmp_path_factory.mktemp("images") / "repo")
    rng = np.random.default_rng(0)
    for i in range(60):
        folder = repo / "data/own/shapes" / "abc"[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    edit_params(repo, **{
        "data.dataset": "image_folder", "data.source": "data/own/shapes", "preprocess.image_size": [8, 8],
        "preprocess.shard_mb": 0.00032, "preprocess.test_fraction": 0.25, "preprocess.val_fraction": 0.25,
    })  # fmt: skip
    for name in ("download", "preprocess"):
        assert stage(repo, name).returncode == 0
    return repo


@pytest.mark.parametrize(("marker", "images_after"), [("x-00002.npy", 0), ("x-00002.npy", 2)],
                         ids=["between-shards", "within-a-shard"])  # fmt: skip
def test_preprocess_killed_while_writing_shards_leaves_the_previous_folder_and_reruns_exactly(
    image_repo: Path, tmp_path: Path, marker: str, images_after: int
) -> None:
    repo = copy_repo(image_repo, tmp_path / "repo")
    before = tree_digest(repo / paths.PREPARED_DIR)
    assert len(json.loads((repo / paths.split_manifest("train")).read_text())["shards"]) >= 5
    edit_params(repo, **{"preprocess.seed": 7})  # another split: every shard changes
    child = run([sys.executable, "-c", _KILLED_PREPROCESS, marker, str(images_after)], repo, check=False)
    assert child.returncode == -signal.SIGKILL, child.stderr
    partial = next(repo.glob("data/.prepared.*.tmp"))  # what the killed run had written: never read
    written = sorted(path.name for path in (partial / "train").iterdir())
    assert written == ["x-00000.npy", "x-00001.npy", "x-00002.npy"][: len(written)] and len(written) >= 2
    assert tree_digest(repo / paths.PREPARED_DIR) == before
    assert stage(repo, "preprocess").returncode == 0
    after = tree_digest(repo / paths.PREPARED_DIR)
    assert after != before and not list(repo.glob("data/.prepared.*"))  # the leftovers are gone
    assert stage(repo, "preprocess").returncode == 0
    assert tree_digest(repo / paths.PREPARED_DIR) == after  # a rerun writes the same bytes


def test_a_prepared_folder_of_many_shards_round_trips_through_a_dvc_remote(image_repo: Path, tmp_path: Path) -> None:
    origin = copy_repo(image_repo, tmp_path / "origin")
    dvc(origin, "add", "data/own/shapes")
    dvc(origin, "repro", "preprocess")
    dvc(origin, "remote", "add", "--default", "team", str(tmp_path / "storage"))
    git_commit(origin, "prepared in shards")
    assert "files pushed" in dvc(origin, "push").stdout
    teammate = tmp_path / "teammate"
    run(["git", "clone", "-q", str(origin), str(teammate)], tmp_path)
    assert not (teammate / paths.PREPARED_DIR).exists()
    dvc(teammate, "pull", "preprocess")
    assert tree_digest(teammate / paths.PREPARED_DIR) == tree_digest(origin / paths.PREPARED_DIR)
    check = (
        "from pipeline.prepared import open_split; from pipeline.preprocessing import read_meta; "
        "meta = read_meta('data/prepared/meta.json'); [open_split(s, meta) for s in ('train', 'val', 'test')]"
    )
    run([sys.executable, "-c", check], teammate)  # every file's sha256 checked against its manifest


# ----------------------------------------------------------------------------- memory


def peak_anonymous_memory(args: list[str], cwd: Path) -> tuple[int, subprocess.CompletedProcess]:
    """Run `args`, sampling its RssAnon (/proc/PID/status) every 10 ms: the largest value seen, in bytes.

    Anonymous memory, not RSS: the pages of a memory-mapped shard count in RSS but the kernel reclaims them.
    """
    process = subprocess.Popen(args, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while process.poll() is None:
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            break
        for line in status.splitlines():
            if line.startswith("RssAnon:"):
                peak = max(peak, int(line.split()[1]) * 1024)
        time.sleep(0.01)
    stdout, stderr = process.communicate()
    return peak, subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def test_streamed_training_holds_far_less_than_the_float32_split(tmp_path: Path) -> None:
    """A training split whose float32 copy is 1.5 GB trains in much less anonymous memory: batches only."""
    from pipeline.prepared import write_splits
    from tests.test_prepared import image_meta

    repo = make_project_repo(tmp_path / "repo")
    sizes = {"train": 30_000, "val": 1_000, "test": 1_000}
    shape = (64, 64, 3)
    rng = np.random.default_rng(0)
    folder = repo / paths.PREPARED_DIR
    folder.mkdir(parents=True)
    chunks = ((name, rng.integers(0, 256, (1000, *shape), dtype=np.uint8)) for name, n in sizes.items()
              for _ in range(n // 1000))  # fmt: skip
    labels = {name: np.arange(n) % 3 for name, n in sizes.items()}
    write_splits(folder, chunks, labels=labels, row_shape=shape, dtype="uint8", shard_mb=64, sources={})
    meta = image_meta(sizes).dump() | {
        "input_shape": list(shape),
        "image": {"color_mode": "rgb", "resize": "pillow-box"},
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    edit_params(repo, **{"train.mlp.hidden_units": [8], "train.epochs": 1, "train.batch_size": 256,
                         "train.feed": "stream"})  # fmt: skip
    peak, result = peak_anonymous_memory([sys.executable, "-m", "stages.train"], repo)
    assert result.returncode == 0, result.stderr
    float32_split = sizes["train"] * int(np.prod(shape)) * 4
    assert peak < 1_200_000_000 < float32_split, f"peak RssAnon {peak / 1e6:.0f} MB"
