"""Model builders, chosen by name: `build_mlp` (the tutorials' dense nets), `build_cnn` (the MNIST convnet) and
`build_fast_cnn` (a small modern convnet), the pretrained backbones through pipeline/backbones.py; and the optimizer,
learning-rate schedule and loss they compile with.
Longer than most modules on purpose: every architecture a user can name is built here, beside its compile.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import keras
from keras import layers

from pipeline.errors import PipelineError, error_detail
from pipeline.io.atomic import atomic_path
from pipeline.layers import FusedBatchNormalization, keras_classes
from pipeline.params import ADAM_FAMILY, BACKBONES, RECIPE_KEYS, CnnParams, FastCnnParams, MlpParams, TrainParams


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
            x = layers.Activation("relu")(FusedBatchNormalization()(x))
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


def build_fast_cnn(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    filters: Sequence[int],
    kernel_sizes: Sequence[int],
    convs_per_pool: Sequence[int],
    pool_size: int,
    batch_norm: bool,
    conv_dropout: float,
    global_pool: bool,
    dense_units: int,
    dropout: float,
) -> keras.Model:
    """One block per filter count: `convs_per_pool` convolutions of that many filters and that kernel ('same'
    padding, so each pool alone shrinks the image), then a pool and optional dropout; then flatten or global
    average pooling, an optional dense layer and softmax. Per-block kernels: a wide first kernel sees a stroke,
    the later small ones combine strokes, for little arithmetic on the pooled maps; a second convolution before
    a pool deepens the net at the pooled resolution, where it costs a quarter of what it would before."""
    if len(input_shape) != 3:
        raise PipelineError(
            f"train.model=fast_cnn needs images of shape (H, W, C), but the prepared data has shape "
            f"{tuple(input_shape)}; use train.model=mlp for tabular data such as iris."
        )
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for count, kernel_size, convs in zip(filters, kernel_sizes, convs_per_pool, strict=True):
        for _ in range(convs):
            if batch_norm:  # no bias: the normalisation's offset takes its place
                x = layers.Conv2D(count, kernel_size, padding="same", use_bias=False)(x)
                x = layers.Activation("relu")(FusedBatchNormalization()(x))
            else:
                x = layers.Conv2D(count, kernel_size, padding="same", activation="relu")(x)
        if pool_size > 1 and min(x.shape[1:3]) >= pool_size:  # small images (digits' 8x8) stop pooling at 1x1
            x = layers.MaxPooling2D(pool_size)(x)
        if conv_dropout > 0:
            x = layers.Dropout(conv_dropout)(x)
    x = layers.GlobalAveragePooling2D()(x) if global_pool else layers.Flatten()(x)
    if dense_units:
        x = layers.Dense(dense_units, activation="relu")(x)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)  # see `build_model`
    return keras.Model(inputs, outputs, name="fast_cnn")


# The builder of each architecture, keyed by its params section: the model names themselves are listed once,
# in pipeline.params.ARCHITECTURES (`train.model` names the section whose keys are the builder's arguments).
MODEL_BUILDERS: dict[type, Callable[..., keras.Model]] = {
    MlpParams: build_mlp,
    CnnParams: build_cnn,
    FastCnnParams: build_fast_cnn,
}


def learning_rate(params: TrainParams, steps_per_epoch: int) -> float | keras.optimizers.schedules.CosineDecay:
    """Fixed; or falling along a half cosine from `params.learning_rate` to 0 over all steps of `params.epochs`;
    or one cycle: rising linearly from 0 to `params.learning_rate` over `params.warmup_fraction` of the steps,
    then the half cosine to 0 over the rest.

    The schedule reads the optimizer's step counter, which the resume state holds with the optimizer's
    other variables, so a resumed run continues on the same curve. One cycle is Keras's own CosineDecay with
    its warm-up, so a saved model's config names only Keras's classes (load_model's safe mode).
    """
    total = params.epochs * steps_per_epoch
    if params.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(params.learning_rate, total)
    if params.lr_schedule == "one_cycle":
        warmup = int(params.warmup_fraction * total)  # < total: warmup_fraction < 1
        return keras.optimizers.schedules.CosineDecay(
            0.0, total - warmup, warmup_target=params.learning_rate, warmup_steps=warmup
        )
    return params.learning_rate


def build_optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """`params.optimizer` with its learning rate; betas for the Adam family; weight decay where asked (always for
    adamw, whose own default would otherwise apply). With the defaults this is the tutorials' optimizer exactly."""
    config: dict = {"learning_rate": learning_rate(params, steps_per_epoch)}
    if params.optimizer in ADAM_FAMILY:
        config |= {"beta_1": params.beta_1, "beta_2": params.beta_2}
    if params.weight_decay or params.optimizer == "adamw":
        config["weight_decay"] = params.weight_decay
    return keras.optimizers.get({"class_name": params.optimizer, "config": config})


def build_loss(params: TrainParams) -> str | keras.losses.Loss:
    """The loss by name, as the tutorials compile it; a loss object only when label smoothing is asked for."""
    if not params.label_smoothing:
        return params.loss
    smoothed = {
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "categorical_focal_crossentropy": keras.losses.CategoricalFocalCrossentropy,
    }  # params.py refuses label smoothing with the other losses
    return smoothed[params.loss](label_smoothing=params.label_smoothing)


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
    """Build `params.model` and compile it with the optimizer, learning rate and loss from params (for fast_cnn,
    its own recipe's: `TrainParams.effective`).

    `steps_per_epoch` (batches in one epoch) sets the length of a cosine or one-cycle learning-rate schedule.
    """
    params = params.effective()
    if params.model in BACKBONES:  # several names, one section (train.backbone) and two phases: their own module
        from pipeline import backbones

        return backbones.build_and_compile(params, input_shape, n_classes, steps_per_epoch=steps_per_epoch)
    sizes = getattr(params, params.model)  # the architecture's section: train.mlp, train.cnn or train.fast_cnn
    shape = {name: value for name, value in vars(sizes).items() if name not in RECIPE_KEYS}
    try:
        builder = MODEL_BUILDERS[type(sizes)]
        model = build_with_policy(params.precision, lambda: builder(input_shape, n_classes, **shape))
    except ValueError as err:  # e.g. kernels larger than the image
        raise PipelineError(
            f"train.{params.model} does not fit input shape {tuple(input_shape)} ({err}); use smaller kernels or pools."
        ) from None
    compile_model(model, params, steps_per_epoch)
    return model


def compile_model(model: keras.Model, params: TrainParams, steps_per_epoch: int) -> None:
    """Compile `model` with the optimizer, learning rate (over `params.epochs`) and loss from params."""
    model.compile(
        optimizer=build_optimizer(params, steps_per_epoch),
        loss=build_loss(params),
        metrics=["accuracy"],
        jit_compile=params.jit_compile,
        steps_per_execution=params.steps_per_execution,
    )


def save_model_atomic(model: keras.Model, dest: Path) -> None:
    """Native `.keras` file, written beside `dest` and renamed onto it (Keras itself writes in place), naming only
    Keras's classes (pipeline/layers.py)."""
    with atomic_path(dest) as tmp, keras_classes(model):
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
