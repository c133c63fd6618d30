"""Your own image folder, indexed by the download stage (pipeline/decoding.py decodes what the index lists).

The download stage does not copy the images: it writes an index into data/raw/ (class names,
every file's path and sha256, what was skipped). The index changes exactly when an image is
added, removed or edited, so DVC reruns preprocess then and only then. Preprocess reads each
listed file once, checks its sha256 against the index while it has the bytes, and decodes them
(pipeline/images.py). docs/own-data.md explains the layout rules and why.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import paths
from pipeline.errors import PipelineError
from pipeline.images import IMAGE_SUFFIXES, read_image_file
from pipeline.progress import Progress

INDEX_FILE = "images.json"
SPLIT_FOLDERS = ("train", "test")  # the Kaggle layout: an official test split
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "ehthumbs.db"})  # besides every name starting with "."


def own_source(source: str, what: str = "data.source") -> Path:
    """`source` as a path inside data/own/, or one sentence saying where to put the data instead.

    Why only there: DVC must track the data (`dvc add data/own/NAME`) to rerun the stages when it
    changes and to share it through a remote, and the download stage depends on data/own/.
    """
    if not source:
        raise PipelineError(f"{what} is empty; set it to your data's path under data/own/, e.g. data/own/pets.")
    normal = Path(os.path.normpath(source))
    if normal.is_absolute() or normal.parts[:2] != paths.OWN_DATA_DIR.parts or len(normal.parts) < 3:
        raise PipelineError(
            f"{what}='{source}' is not inside {paths.OWN_DATA_DIR}/; move the data to {paths.OWN_DATA_DIR}/NAME and "
            f"track it with `dvc add {paths.OWN_DATA_DIR}/NAME`, so that DVC reruns the stages when it changes "
            "and shares it through your remote."
        )
    if not normal.exists():
        raise PipelineError(f"{what}: {normal} does not exist; put your data there (or `dvc pull` it).")
    return normal


# One size or index suffix at the end of a file's name (before its extension): "_16", "-32x32", "@2x", " (2)",
# "_64px", ".1". Stripped again and again, so "icon_16@2x" and "icon" are one group.
NAME_SUFFIX = re.compile(r"[\s_.\-]*(?:\(\d+\)|@\d+x|\d+x\d+|\d+px|\d+)$")


def name_group(path: str) -> str:
    """The group of an image file under data.group_by_name: its folder and its name, lower case, without its
    extension and any size or index suffixes (`NAME_SUFFIX`); a name of nothing but digits stays whole."""
    stem = Path(path).stem.lower()
    while (shorter := NAME_SUFFIX.sub("", stem)) and shorter != stem:
        stem = shorter
    return f"{Path(path).parent}/{stem}"


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Skipped:
    """Files the index leaves out, counted for the one log line."""

    hidden: int = 0  # names starting with "." (.DS_Store) and system files (Thumbs.db)
    not_images: int = 0  # other extensions (.txt, .csv, .json, ...)
    outside_classes: int = 0  # files lying beside the class folders rather than in one
    linked_folders: int = 0  # symbolic links to folders inside a class folder: DVC does not track what they hold
    example: str = ""
    linked_example: str = ""

    def note(self, kind: str, path: Path) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind == "linked_folders":
            self.linked_example = self.linked_example or str(path)
        else:
            self.example = self.example or str(path)

    @property
    def count(self) -> int:
        return self.hidden + self.not_images + self.outside_classes + self.linked_folders

    def sentence(self) -> str:
        kinds = [
            (self.hidden, "hidden or system"), (self.not_images, "without an image extension"),
            (self.outside_classes, "outside the class folders"),
        ]  # fmt: skip
        counted = ", ".join(f"{n} {what}" for n, what in kinds if n)
        files, parts = self.count - self.linked_folders, []
        if files:
            parts.append(f"skipped {_counted(files, 'file')} ({counted}; e.g. {self.example})")
        if self.linked_folders:
            parts.append(
                f"did not enter {_counted(self.linked_folders, 'link')} to a folder (e.g. {self.linked_example}): "
                "DVC does not track what a link to a folder holds, so move the files in"
            )
        return "; ".join(parts) or "no files skipped"


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_files(folder: Path, skipped: Skipped) -> list[Path]:
    """Image files anywhere below `folder`, sorted by path; hidden folders are not entered, other files noted."""
    found = []
    for root, dirs, files in os.walk(folder):  # not into links to folders: `dvc add` does not follow them either
        for name in dirs:
            if not name.startswith(".") and os.path.islink(os.path.join(root, name)):
                skipped.note("linked_folders", Path(root) / name)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(root) / name
            if name.startswith(".") or name.lower() in SYSTEM_FILES:
                skipped.note("hidden", path)
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.note("not_images", path)
            else:
                found.append(path)
    return sorted(found)


def _class_files(folder: Path, skipped: Skipped) -> list[Path]:
    found = image_files(folder, skipped)
    if not found:
        raise PipelineError(
            f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder."
        )
    return found


def _count_loose_files(folder: Path, skipped: Skipped) -> None:
    for path in sorted(folder.iterdir()):
        if path.is_file():
            hidden = path.name.startswith(".") or path.name.lower() in SYSTEM_FILES
            skipped.note("hidden" if hidden else "outside_classes", path)


def _index_classes(
    folder: Path, class_names: list[str] | None, skipped: Skipped, progress: Progress
) -> tuple[list[str], list[list]]:
    """[(path, label, sha256)] of one folder of class folders; `class_names` given = they must be the same."""
    _count_loose_files(folder, skipped)
    found = [d.name for d in _visible_dirs(folder)]
    if class_names is not None and found != class_names:
        raise PipelineError(
            f"{folder} has class folders {found}, but {folder.parent / 'train'} has {class_names}; "
            "give train/ and test/ the same class folders."
        )
    if not found:
        raise PipelineError(
            f"{folder} has no class folders; put the images into one subfolder per class "
            f"({folder}/cat/..., {folder}/dog/...)."
        )
    if len(found) == 1:
        raise PipelineError(
            f"{folder} has only one class folder ('{found[0]}'); a classifier needs at least two, one subfolder each."
        )
    entries = []
    for label, name in enumerate(found):
        for path in _class_files(folder / name, skipped):
            entries.append(
                [str(path), label, file_sha256(read_image_file(path, "replace it with the image, or remove it."))]
            )
            progress.advance()
    return found, entries


def index_folder(source: Path) -> dict[str, Any]:
    """The index the download stage writes: classes (sorted folder names), every image's path and sha256."""
    if not source.is_dir():
        raise PipelineError(f"data.source: {source} is not a folder; data.dataset=image_folder needs a folder.")
    skipped, progress = Skipped(), Progress(f"indexing {source}", unit="files read and hashed")
    subfolders = [d.name for d in _visible_dirs(source)]
    if all(name in subfolders for name in SPLIT_FOLDERS):
        others = [name for name in subfolders if name not in SPLIT_FOLDERS]
        if others:
            raise PipelineError(
                f"{source / others[0]}: a folder with train/ and test/ may hold nothing else; validation is carved "
                "from train/ (preprocess.val_fraction): merge it into train/ or move it out."
            )
        _count_loose_files(source, skipped)
        class_names, train = _index_classes(source / "train", None, skipped, progress)
        _, test = _index_classes(source / "test", class_names, skipped, progress)
        layout = "train/ and test/ folders"
    else:
        class_names, train = _index_classes(source, None, skipped, progress)
        test, layout = [], "class folders"
    progress.finish()
    return {
        "source": str(source),
        "layout": layout,
        "class_names": class_names,
        "train": train,
        "test": test,
        "skipped": skipped.sentence(),
    }
