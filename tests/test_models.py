"""Model builders: the tutorials' architectures, with pinned parameter counts."""

from __future__ import annotations

import pytest
import yaml

from pipeline import models
from pipeline.errors import PipelineError
from pipeline.params import MODELS, TrainParams, parse_section
from tests.harness import PROJECT_ROOT

BASE = parse_section(TrainParams, yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())["train"])


def with_mlp(**mlp: object) -> TrainParams:
    return BASE.model_copy(update={"model": "mlp", "mlp": BASE.mlp.model_copy(update=mlp)})


@pytest.mark.parametrize(
    ("input_shape", "n_classes", "hidden", "dropout", "expected_params"),
    [
        ((4,), 3, (50, 40), 0.0, 4 * 50 + 50 + 50 * 40 + 40 + 40 * 3 + 3),  # the Iris tutorial: 2,413
        ((28, 28, 1), 10, (100,), 0.0, 784 * 100 + 100 + 100 * 10 + 10),  # MNIST 784-100-10: 79,510
        ((28, 28, 1), 10, (512, 512), 0.2, 669_706),  # the 512-512 net with dropout
    ],
)
def test_mlp_matches_the_tutorials(input_shape, n_classes, hidden, dropout, expected_params) -> None:
    model = models.build_model(with_mlp(hidden_units=hidden, dropout=dropout), input_shape, n_classes)
    assert model.count_params() == expected_params
    assert model.output_shape == (None, n_classes)
    dropouts = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert dropouts == ([dropout] * len(hidden) if dropout else [])


def test_cnn_matches_the_keras_mnist_convnet() -> None:
    params = BASE.model_copy(update={"model": "cnn"})
    model = models.build_model(params, (28, 28, 1), 10)
    assert model.count_params() == 1_199_882
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "Conv2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense",
    ]  # fmt: skip


def test_cnn_pooling_after_each_conv() -> None:
    params = BASE.model_copy(update={"model": "cnn", "cnn": BASE.cnn.model_copy(update={"pool_after_each_conv": True})})
    model = models.build_model(params, (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout",
        "Dense",
    ]  # fmt: skip
    # 28 -conv-> 26 -pool-> 13 -conv-> 11 -pool-> 5: 5 * 5 * 64 = 1600 features into Dense(128).
    assert model.count_params() == 32 * 10 + 64 * (9 * 32 + 1) + (1600 * 128 + 128) + (128 * 10 + 10)


def test_cnn_batch_norm_sits_between_each_conv_and_its_relu() -> None:
    cnn = BASE.cnn.model_copy(update={"pool_after_each_conv": True, "batch_norm": True})
    model = models.build_model(BASE.model_copy(update={"model": "cnn", "cnn": cnn}), (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    conv = ["Conv2D", "BatchNormalization", "Activation", "MaxPooling2D"]
    assert kinds == ["InputLayer", *conv, *conv, "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert all(not layer.use_bias and layer.activation.__name__ == "linear" for layer in convs)
    # Bias-free convolutions; each normalisation holds scale, offset, moving mean and variance per filter.
    assert model.count_params() == 9 * 32 + 4 * 32 + 9 * 32 * 64 + 4 * 64 + (1600 * 128 + 128) + (128 * 10 + 10)


def test_cnn_on_tabular_data_is_a_clear_error() -> None:
    with pytest.raises(PipelineError, match="use train.model=mlp"):
        models.build_model(BASE.model_copy(update={"model": "cnn"}), (4,), 3)


def test_cnn_too_large_for_the_image_is_a_clear_error() -> None:
    params = BASE.model_copy(update={"model": "cnn", "cnn": BASE.cnn.model_copy(update={"kernel_size": 9})})
    with pytest.raises(PipelineError, match="does not fit input shape"):
        models.build_model(params, (8, 8, 1), 10)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop", "adadelta", "adagrad", "adamax", "nadam", "ftrl"])
def test_every_optimizer_by_name_with_learning_rate(optimizer: str) -> None:
    params = BASE.model_copy(update={"optimizer": optimizer, "learning_rate": 0.05})
    model = models.build_model(params, (4,), 3)
    assert type(model.optimizer).__name__.lower() == optimizer
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.05)


def test_summary_counts_parameters() -> None:
    model = models.build_model(with_mlp(hidden_units=(50, 40), dropout=0.0), (4,), 3)
    summary = models.summarize_model(model)
    assert summary["params_total"] == summary["params_trainable"] == 2413
    assert [layer["type"] for layer in summary["layers"]] == ["InputLayer", "Dense", "Dense", "Dense"]


@pytest.mark.parametrize(
    ("schedule", "expected_by_step"),
    [
        ("constant", {0: 0.01, 20: 0.01, 40: 0.01}),
        ("cosine", {0: 0.01, 20: 0.005, 30: 0.01 * (1 - 2**-0.5) / 2, 40: 0.0}),
    ],
)
def test_learning_rate_schedule_over_the_run(schedule: str, expected_by_step: dict[int, float]) -> None:
    """4 epochs of 10 steps: the cosine reaches half the rate at step 20 and 0 at the run's last step."""
    params = with_mlp(hidden_units=(8,)).model_copy(
        update={"learning_rate": 0.01, "lr_schedule": schedule, "epochs": 4}
    )
    optimizer = models.build_model(params, (4,), 3, steps_per_epoch=10).optimizer
    for step, expected in expected_by_step.items():
        optimizer.iterations.assign(step)
        assert float(optimizer.learning_rate) == pytest.approx(expected, abs=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_params_allows_has_a_builder(name: str) -> None:
    """The model names are listed once (params.ARCHITECTURES); each one `train.model` accepts must build."""
    model = models.build_model(BASE.model_copy(update={"model": name}), (8, 8, 1), 3)
    assert model.name == name
