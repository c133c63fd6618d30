"""Model builders, chosen by name: `build_mlp` (the tutorials' dense nets) and `build_cnn` (the MNIST convnet)."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
from keras import layers

from pipeline.errors import PipelineError, error_detail
from pipeline.io.atomic import atomic_path
from pipeline.params import CnnParams, MlpParams, TrainParams


def build_mlp(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    hidden_units: Sequence[int],
    activation: str,
    dropout: float,
) -> keras.Model:
    """Dense net. Images are flattened by the first layer, so the same prepared data serves mlp and cnn."""
    inputs = keras.Input(shape=tuple(input_shape))
    x = layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for units in hidden_units:
        x = layers.Dense(units, activation=activation)(x)
        if dropout > 0:
            x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)  # see `build_model`
    return keras.Model(inputs, outputs, name="mlp")


def build_cnn(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    filters: Sequence[int],
    kernel_size: int,
    pool_size: int,
    pool_after_each_conv: bool,
    batch_norm: bool,
    dense_units: int,
    conv_dropout: float,
    dense_dropout: float,
) -> keras.Model:
    """Conv32-Conv64-MaxPool-Dropout-Flatten-Dense128-Dropout-softmax (the Keras MNIST convnet), sizes from params.

    `pool_after_each_conv` pools after every convolution instead of once after all of them
    (Conv32-Pool-Conv64-Pool-...): each later convolution then runs on a quarter of the positions,
    ~4.5x less arithmetic for the default filters on 28x28 images. `batch_norm` normalises each
    convolution's outputs over the batch before their ReLU (the convolution then has no bias: the
    normalisation's own offset takes its place).
    """
    if len(input_shape) != 3:
        raise PipelineError(
            f"train.model=cnn needs images of shape (H, W, C), but the prepared data has shape {tuple(input_shape)}; "
            "use train.model=mlp for tabular data such as iris."
        )
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for count in filters:
        if batch_norm:
            x = layers.Conv2D(count, kernel_size, use_bias=False)(x)
            x = layers.Activation("relu")(layers.BatchNormalization()(x))
        else:
            x = layers.Conv2D(count, kernel_size, activation="relu")(x)
        if pool_after_each_conv and pool_size > 1:
            x = layers.MaxPooling2D(pool_size)(x)
    if not pool_after_each_conv and pool_size > 1:
        x = layers.MaxPooling2D(pool_size)(x)
    x = layers.Dropout(conv_dropout)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    x = layers.Dropout(dense_dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)  # see `build_model`
    return keras.Model(inputs, outputs, name="cnn")


# The builder of each architecture, keyed by its params section: the model names themselves are listed once,
# in pipeline.params.ARCHITECTURES (`train.model` names the section whose keys are the builder's arguments).
MODEL_BUILDERS: dict[type, Callable[..., keras.Model]] = {MlpParams: build_mlp, CnnParams: build_cnn}


def learning_rate(params: TrainParams, steps_per_epoch: int) -> float | keras.optimizers.schedules.CosineDecay:
    """Fixed, or falling along a half cosine from `params.learning_rate` to 0 over all steps of `params.epochs`.

    The schedule reads the optimizer's step counter, which the resume state holds with the optimizer's
    other variables, so a resumed run continues on the same curve.
    """
    if params.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(params.learning_rate, params.epochs * steps_per_epoch)
    return params.learning_rate


def build_with_policy(precision: str, build: Callable[[], keras.Model]) -> keras.Model:
    """Build the model's layers under the dtype policy `precision` ("float32" | "mixed_bfloat16").

    Each layer keeps the policy it was built with (the `.keras` file records it, so evaluate and
    predict compute as training did), so the global policy is set only for the build and restored
    after it: a later model in the same process is not changed by this one.

    With mixed_bfloat16 the weights stay float32 and the layers compute in bfloat16, except the
    output layer, which the builders give `dtype="float32"` (Keras's advice for mixed precision:
    a softmax in bfloat16, with its 8 bits of mantissa, loses the small probabilities). The loss
    then also runs in float32: Keras's losses compute in float32 unless given another dtype.
    bfloat16 keeps float32's exponent range, so unlike float16 no loss scaling is needed (Keras
    adds none for it).
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def build_model(
    params: TrainParams, input_shape: Sequence[int], n_classes: int, *, steps_per_epoch: int = 1
) -> keras.Model:
    """Build `params.model` and compile it with the optimizer, learning rate and loss from params.

    `steps_per_epoch` (batches in one epoch) sets the length of a cosine learning-rate schedule.
    """
    sizes = getattr(params, params.model)  # the architecture's section: train.mlp or train.cnn
    try:
        builder = MODEL_BUILDERS[type(sizes)]
        model = build_with_policy(params.precision, lambda: builder(input_shape, n_classes, **vars(sizes)))
    except ValueError as err:  # e.g. kernels larger than the image
        raise PipelineError(
            f"train.{params.model} does not fit input shape {tuple(input_shape)} ({err}); use smaller kernels or pools."
        ) from None
    optimizer = keras.optimizers.get(
        {"class_name": params.optimizer, "config": {"learning_rate": learning_rate(params, steps_per_epoch)}}
    )
    model.compile(
        optimizer=optimizer,
        loss=params.loss,
        metrics=["accuracy"],
        jit_compile=params.jit_compile,
        steps_per_execution=params.steps_per_execution,
    )
    return model


def save_model_atomic(model: keras.Model, dest: Path) -> None:
    """Native `.keras` file, written beside `dest` and renamed onto it (Keras itself writes in place)."""
    with atomic_path(dest) as tmp:
        model.save(tmp)


def load_model(path: Path) -> keras.Model:
    """The model at `path`, in Keras's safe mode: a file whose config would run code (a Lambda layer) is refused.

    A damaged file makes Keras raise almost anything (zipfile, h5py, JSON, KeyError, TypeError), so
    every exception becomes one sentence here: there is nothing in such a file worth a traceback.
    Every `.keras` file the project opens comes through here (predict's too, via pipeline.runtimes).
    """
    if not path.exists():
        raise PipelineError(f"{path} not found; run the train stage first (dvc repro train).")
    if path.is_file() and not zipfile.is_zipfile(path):  # Keras would call it "File not found"
        raise PipelineError(
            f"{path} is not a readable Keras model: not a zip archive (truncated, overwritten or another kind of "
            "file); rerun the stage that writes it: dvc repro -f train."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - see the docstring
        message = str(err)
        if "Lambda" in message or "safe_mode" in message:
            raise PipelineError(
                f"{path} is refused: its config would run Python code when loaded (a Lambda layer, refused by Keras's "
                "safe mode); use a model this project's train stage wrote (dvc repro -f train)."
            ) from None
        # A config naming a function outside Keras (os.system, say): Keras finds no such function among its own
        # and says so deep inside a long message that quotes the whole config.
        unknown = re.search(r"Could not locate (class|function) '([^']*)'", message)
        if unknown:
            raise PipelineError(
                f"{path} is refused: its config names the {unknown[1]} '{unknown[2]:.60}', which is not Keras's own "
                "(the train stage writes only Keras's); use a model this project's train stage wrote "
                "(dvc repro -f train)."
            ) from None
        raise PipelineError(
            f"{path} is not a readable Keras model ({error_detail(err)}); rerun the stage that writes it: "
            "dvc repro -f train."
        ) from None


def check_model_fits(model: keras.Model, path: Path, input_shape: Sequence[int], n_classes: int) -> None:
    """The model must take meta.json's input shape and give its number of classes (not another dataset's model)."""
    takes, gives = tuple(model.input_shape[1:]), model.output_shape[-1]
    if takes != tuple(input_shape) or gives != n_classes:
        raise PipelineError(
            f"{path} takes inputs of shape {takes} and gives {gives} classes, but data/prepared/meta.json describes "
            f"{tuple(input_shape)} and {n_classes} classes: it was trained on other data; rerun dvc repro -f train."
        )


def summarize_model(model: keras.Model) -> dict:
    """Architecture and parameter counts as plain data, saved beside the model and shown in metrics."""
    trainable = sum(int(v.numpy().size) for v in model.trainable_weights)
    total = sum(int(v.numpy().size) for v in model.weights)
    return {
        "name": model.name,
        "params_total": total,
        "params_trainable": trainable,
        "layers": [
            {
                "name": layer.name,
                "type": type(layer).__name__,
                "output_shape": list(layer.output.shape[1:]) if hasattr(layer, "output") else None,
                "params": int(layer.count_params()),
            }
            for layer in model.layers
        ],
    }
