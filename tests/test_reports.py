"""`dvc plots show` renders one HTML report that draws offline, checked in headless Chromium."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.harness import (
    console_messages,
    copy_repo,
    drawn_charts,
    dvc,
    open_in_chromium,
    read_metrics,
    report_specs,
)

pytestmark = pytest.mark.slow  # dvc plots show, rendered in headless Chromium

# The charts the report must hold (issue #4): training curves, confusion matrix, per-class scores.
CHARTS = [
    "Accuracy per epoch",
    "Loss per epoch",
    "Confusion matrix (test)",
    "Precision per class (test)",
    "Recall per class (test)",
    "F1 per class (test)",
    # Issue #30: which threshold to pick, and whether the probabilities can be trusted.
    "ROC curve per class (test)",
    "Precision-recall curve per class (test)",
    "Reliability diagram (test)",
]


def chart_id(title: str) -> str:
    """The element id DVC gives a chart: its title with punctuation and spaces as underscores."""
    return "".join("_" if c in r"!@#$%^&*()[]{};,<>?\/:.|`~=_+ " else c for c in title)


@pytest.fixture(scope="module")
def report(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = copy_repo(digits_run, tmp_path_factory.mktemp("report") / "repo")
    dvc(repo, "plots", "show", "-o", str(repo.parent / "report"))
    return repo.parent / "report" / "index.html"


def test_report_holds_every_chart_with_the_runs_data(report: Path, digits_run: Path) -> None:
    specs = report_specs(report)
    assert list(specs) == CHARTS
    meta = json.loads((digits_run / "data/prepared/meta.json").read_text())
    history = list(csv.DictReader((digits_run / "reports/train_history.csv").open()))
    accuracy = specs["Accuracy per epoch"]["data"]["values"]
    assert {row["field"] for row in accuracy} == {"accuracy", "val_accuracy"}
    assert len(accuracy) == 2 * len(history)
    # The confusion matrix is labelled with the class names, one cell per test example.
    confusion = specs["Confusion matrix (test)"]["data"]["values"]
    assert {row["actual"] for row in confusion} == set(meta["class_names"])
    assert len(confusion) == meta["sizes"]["test"]
    per_class = read_metrics(digits_run)["per_class"]
    for title, score in [("Precision", "precision"), ("Recall", "recall"), ("F1", "f1")]:
        rows = specs[f"{title} per class (test)"]["data"]["values"]
        assert {row["class"]: float(row[score]) for row in rows} == {
            name: pytest.approx(values[score]) for name, values in per_class.items()
        }
    # One line per class in each curve chart (colour by class), thresholds in the tooltips; the reliability
    # diagram shows the probabilities as trained and at the fitted temperature.
    for title in ("ROC curve per class (test)", "Precision-recall curve per class (test)"):
        spec = specs[title]
        assert spec["encoding"]["color"]["field"] == "class"
        assert {row["class"] for row in spec["data"]["values"]} == set(meta["class_names"])
        assert all(0.0 <= float(row["threshold"]) <= 1.0 for row in spec["data"]["values"])
    reliability = specs["Reliability diagram (test)"]
    temperature = read_metrics(digits_run)["calibration"]["temperature"]
    series = {row["probabilities"] for row in reliability["data"]["values"]}
    assert series == {"as trained", f"temperature {temperature:g}"}
    # The misclassified-images grid is an image beside the page.
    html = report.read_text(encoding="utf-8")
    assert 'id="reports_misclassified_png"' in html
    assert len(list((report.parent / "static").glob("*misclassified.png"))) == 1


def test_report_carries_its_chart_libraries(report: Path) -> None:
    html = report.read_text(encoding="utf-8")
    assert "cdn.jsdelivr.net" not in html
    assert "<script src=" not in html.replace(" ", "")
    for library in ("vega 5.20.2", "vega-lite 5.2.0", "vega-embed 6.18.2"):
        assert f"/* {library} */" in html


def test_report_draws_every_chart_offline_in_chromium(report: Path, tmp_path: Path) -> None:
    result = open_in_chromium(report, tmp_path / "profile", "--dump-dom")
    errors = [m for m in console_messages(result.stderr) if m.startswith(("Uncaught", "ERROR", "Error"))]
    assert errors == []
    assert drawn_charts(result.stdout) >= {chart_id(title) for title in CHARTS}
    assert 'src="static/' in result.stdout  # the misclassified grid

    screenshot = tmp_path / "report.png"
    open_in_chromium(
        report, tmp_path / "profile", "--hide-scrollbars", "--window-size=1400,2000", f"--screenshot={screenshot}"
    )
    with Image.open(screenshot) as image:
        assert image.size == (1400, 2000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 50  # charts, not a blank page
    if os.environ.get("REPORT_SCREENSHOT_DIR"):  # CI can keep the picture as an artifact
        shutil.copy(screenshot, Path(os.environ["REPORT_SCREENSHOT_DIR"]) / "report.png")


def test_default_dvc_page_stays_blank_offline(digits_run: Path, tmp_path: Path) -> None:
    """The control: without our template the same check fails, as it would for a user offline."""
    repo = copy_repo(digits_run, tmp_path / "repo")
    dvc(repo, "config", "--unset", "plots.html_template")
    dvc(repo, "plots", "show", "-o", str(tmp_path / "default"))
    result = open_in_chromium(tmp_path / "default" / "index.html", tmp_path / "profile", "--dump-dom")
    assert drawn_charts(result.stdout) == set()
    assert "Uncaught ReferenceError: vegaEmbed is not defined" in console_messages(result.stderr)
