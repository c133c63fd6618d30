"""Model builders: the tutorials' architectures, with pinned parameter counts."""

from __future__ import annotations

import pytest
import yaml

from pipeline import models
from pipeline.errors import PipelineError
from pipeline.params import BACKBONES, MODELS, TrainParams, parse_section
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
    conv = ["Conv2D", "FusedBatchNormalization", "Activation", "MaxPooling2D"]
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


@pytest.mark.parametrize(
    "optimizer", ["adam", "sgd", "rmsprop", "adadelta", "adagrad", "adamax", "nadam", "ftrl", "adamw"]
)
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
        # 12 of the 40 steps (warmup_fraction 0.3) rise linearly from 0; the other 28 fall along a half cosine.
        ("one_cycle", {0: 0.0, 6: 0.005, 12: 0.01, 19: 0.01 * (1 + 2**-0.5) / 2, 26: 0.005, 40: 0.0, 50: 0.0}),
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


# Each backbone takes seconds to build: one in the fast tier (tests/test_backbones.py pins all three).
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if name in BACKBONES[1:] else []) for name in MODELS]
)
def test_every_model_params_allows_has_a_builder(name: str) -> None:
    """The model names are listed once (params.ARCHITECTURES, params.BACKBONES); each one `train.model` accepts must
    build. (The backbones need 32x32 images, and build here without their ImageNet download.)"""
    untrained = BASE.backbone.model_copy(update={"weights": "none", "frozen_epochs": 0})
    params = BASE.model_copy(update={"model": name, "backbone": untrained})
    model = models.build_model(params, (32, 32, 1) if name in BACKBONES else (8, 8, 1), 3)
    assert model.name == name


def test_fast_cnn_is_the_measured_fast_recipe() -> None:
    """Conv24 5x5-Pool-Conv32 3x3-Pool ('same' padding)-Flatten-Dense256-softmax, trained as measured."""
    model = models.build_model(BASE.model_copy(update={"model": "fast_cnn"}), (28, 28, 1), 10, steps_per_epoch=211)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    # 28 -pool-> 14 -pool-> 7: 7 * 7 * 32 = 1568 features into Dense(256).
    assert model.count_params() == (25 * 24 + 24) + (9 * 24 * 32 + 32) + (1568 * 256 + 256) + (256 * 10 + 10)
    assert model.count_params() == 411_802
    config = model.optimizer.get_config()
    assert (type(model.optimizer).__name__, config["beta_1"], config["beta_2"]) == ("Adam", 0.7, 0.9)
    # One cycle over 3 epochs of 211 steps, peaking at 0.01 after 30 % of them.
    model.optimizer.iterations.assign(int(0.3 * 3 * 211))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_fast_cnn_with_global_pooling_and_batch_norm() -> None:
    fast = BASE.fast_cnn.model_copy(update={"global_pool": True, "batch_norm": True, "dense_units": 0})
    model = models.build_model(BASE.model_copy(update={"model": "fast_cnn", "fast_cnn": fast}), (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    conv = ["Conv2D", "FusedBatchNormalization", "Activation", "MaxPooling2D"]
    assert kinds == ["InputLayer", *conv, *conv, "GlobalAveragePooling2D", "Dense"]
    assert model.count_params() == 25 * 24 + 4 * 24 + 9 * 24 * 32 + 4 * 32 + 32 * 10 + 10


def test_fast_cnn_with_two_convolutions_before_the_second_pool_and_dropout_after_each() -> None:
    """convs_per_pool [1, 2]: Conv24 5x5-Pool-Drop-Conv32 3x3-Conv32 3x3-Pool-Drop-Flatten-Dense256-softmax."""
    fast = BASE.fast_cnn.model_copy(update={"convs_per_pool": (1, 2), "conv_dropout": 0.2})
    model = models.build_model(BASE.model_copy(update={"model": "fast_cnn", "fast_cnn": fast}), (28, 28, 1), 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    block1, block2 = ["Conv2D", "MaxPooling2D", "Dropout"], ["Conv2D", "Conv2D", "MaxPooling2D", "Dropout"]
    assert kinds == ["InputLayer", *block1, *block2, "Flatten", "Dense", "Dense"]
    # The second 3x3 convolution (32 -> 32 filters) adds its weights only: 'same' padding keeps 7 * 7 * 32 features.
    assert model.count_params() == 411_802 + (9 * 32 * 32 + 32)


def test_fast_cnn_recipe_replaces_trains_own_keys_only_for_fast_cnn() -> None:
    fast = BASE.model_copy(update={"model": "fast_cnn"}).effective()
    assert (fast.batch_size, fast.epochs, fast.learning_rate, fast.lr_schedule) == (256, 3, 0.01, "one_cycle")
    assert BASE.effective() is BASE  # the tutorials' recipes read train's keys as they are


def test_default_optimizer_and_loss_are_the_tutorials() -> None:
    """With the defaults the seed recipes build exactly today's optimizer and loss: Adam at Keras's betas, no decay."""
    model = models.build_model(with_mlp(hidden_units=(8,)), (4,), 3)
    config = model.optimizer.get_config()
    assert (config["beta_1"], config["beta_2"], config["weight_decay"]) == (0.9, 0.999, None)
    assert model.loss == "categorical_crossentropy"


def test_label_smoothing_and_weight_decay() -> None:
    params = with_mlp(hidden_units=(8,)).model_copy(
        update={"label_smoothing": 0.1, "optimizer": "adamw", "weight_decay": 0.01}
    )
    model = models.build_model(params, (4,), 3)
    assert model.loss.get_config()["label_smoothing"] == 0.1
    assert model.optimizer.get_config()["weight_decay"] == 0.01
    adamw_without_decay = models.build_model(params.model_copy(update={"weight_decay": 0.0}), (4,), 3)
    assert adamw_without_decay.optimizer.get_config()["weight_decay"] == 0.0  # not AdamW's own default
