"""Pretrained backbones from Keras Applications (`train.model` mobilenet_v3_small, mobilenet_v3_large,
efficientnetv2_b0): the model built around one, where its weights come from, and the two phases it trains in.

The model takes the prepared arrays as every other model does (pixels scaled to [0, 1], one or three channels):
a grayscale image is repeated to three channels and a Rescaling layer gives the backbone the input it expects,
inside the model, so predict and the exports need nothing extra. The phases follow the
Keras transfer-learning guide: the head alone over the frozen backbone, then the top layers fine-tuned at a smaller
learning rate; the batch normalisation of pretrained weights stays in inference mode in both (the backbone is called
with training=False and its normalisation layers stay frozen), so a few small batches do not overwrite its statistics.
A backbone from scratch (weights none) trains as any convnet, its batch normalisation included.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import keras
from keras import layers

from pipeline.errors import PipelineError, error_detail
from pipeline.models import build_with_policy, compile_model
from pipeline.params import TrainParams

CONSTRUCTORS = {
    "mobilenet_v3_small": keras.applications.MobileNetV3Small,
    "mobilenet_v3_large": keras.applications.MobileNetV3Large,
    "efficientnetv2_b0": keras.applications.EfficientNetV2B0,
}
# EfficientNetV2-B0's input scaling, ImageNet's mean and spread per channel, as one Rescaling of [0, 1] pixels instead
# of Keras's Rescaling + Normalization: tf2onnx turns that Normalization's constants into two extra model inputs.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# The batch normalisation momentum of a backbone trained from scratch, at most (PyTorch's default, EfficientNetV2's
# own). The moving variances start at 1, far above what these layers compute from scratch; with MobileNetV3's 0.999
# (suited to ImageNet's 10,000 steps an epoch), or even 0.99, they stay too large for hundreds of steps, each layer
# in inference mode shrinks its input, and after some 30 layers every image gives the same features: validation,
# evaluate and a backbone saved to fine-tune elsewhere all predict one class (measured: docs/backbones.md).
SCRATCH_MOMENTUM = 0.9
# Keras Applications refuse smaller images (all three downsample by 32). EfficientNetV2B0 rather than EfficientNetB0:
# the latter adds a layer to its input scaling only when it downloads ImageNet's weights, so the same weights saved
# from it and loaded from a file would meet other inputs; V2's scaling is the same whatever the weights.
MIN_SIDE = 32
BACKBONE_LAYER = "backbone"  # the backbone's name inside the model: its weights are saved from model.get_layer(...)
FROZEN, FINE_TUNE = "frozen", "fine_tune"


def check_input(name: str, input_shape: Sequence[int]) -> None:
    """Images of at least MIN_SIDE pixels a side, one or three channels; else one sentence saying what to set."""
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise PipelineError(
            f"train.model={name} needs images of shape (H, W, 1 or 3), but the prepared data has shape {shape}; "
            "use train.model=mlp for tabular data such as iris."
        )
    if min(shape[:2]) < MIN_SIDE:
        raise PipelineError(
            f"train.model={name} needs images of at least {MIN_SIDE}x{MIN_SIDE} pixels, but the prepared images are "
            f"{shape[0]}x{shape[1]} (data/prepared/meta.json); for an image folder set preprocess.image_size to "
            f"[{MIN_SIDE}, {MIN_SIDE}] or more (the built-in datasets are smaller: docs/backbones.md)."
        )


def _imagenet_unreachable(name: str, err: Exception) -> PipelineError | None:
    """Keras's download failure as one sentence naming the file it wanted and where to put it; None for other errors."""
    failure = re.match(r"URL fetch failure on (\S+): (.*)", str(err))
    if not failure:
        return None
    url, reason = failure[1], failure[2]
    cache = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser() / "models" / url.rsplit("/", 1)[-1]
    return PipelineError(
        f"train.backbone.weights is imagenet, but Keras could not download the {name} weights from {url} ({reason}); "
        f"copy that file to {cache} (Keras's cache: it checks the hash), or put it under data/backbone/, dvc add it "
        "and set train.backbone.weights to its path (docs/backbones.md)."
    )


def load_backbone(name: str, side: tuple[int, int], weights: str) -> keras.Model:
    """Keras's backbone without its top, for RGB images of `side`, with `weights` (imagenet, none or a file)."""
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise PipelineError(
            f"train.backbone.weights: {weights} not found; put the weights file there (dvc pull, if it is tracked), "
            "or set train.backbone.weights to imagenet or none."
        )
    with warnings.catch_warnings():
        # MobileNetV3 warns that it loads the 224x224 weights at other sizes: exactly what is wanted here.
        warnings.filterwarnings("ignore", message="`input_shape` is undefined or non-square")
        try:
            backbone = CONSTRUCTORS[name](
                input_shape=(*side, 3),
                include_top=False,
                weights=None if weights == "none" else weights,
                include_preprocessing=not _scales_itself(name),
            )
        except Exception as err:  # noqa: BLE001 - a download, h5py or shape error: each becomes one sentence
            if weights == "none":
                raise
            if weights == "imagenet":
                raise _imagenet_unreachable(name, err) or PipelineError(
                    f"train.backbone.weights is imagenet, but Keras could not load the {name} weights "
                    f"({error_detail(err)}); delete the damaged file from its cache (~/.keras/models) and run again."
                ) from None
            raise PipelineError(
                f"train.backbone.weights: {weights} could not be loaded into {name} ({error_detail(err)}); it must "
                f"hold the weights of a {name} without its top, e.g. saved with model.get_layer('{BACKBONE_LAYER}')"
                ".save_weights(...) (docs/backbones.md)."
            ) from None
    # Renamed once built: EfficientNetV2 looks up its blocks by the name it is given.
    backbone.name = BACKBONE_LAYER
    if weights == "none":
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = min(layer.momentum, SCRATCH_MOMENTUM)
    return backbone


def _scales_itself(name: str) -> bool:
    """Whether this module, not the backbone, scales the backbone's input (see IMAGENET_MEAN)."""
    return name.startswith("efficientnetv2")


def input_scaling(name: str) -> layers.Rescaling:
    """Prepared [0, 1] pixels to what the backbone takes: 0..255 (it scales them itself), or ImageNet-normalised."""
    if _scales_itself(name):
        return layers.Rescaling(
            scale=[1 / std for std in IMAGENET_STD],
            offset=[-mean / std for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)],
        )
    return layers.Rescaling(255.0)


def build_backbone_model(
    name: str, input_shape: Sequence[int], n_classes: int, *, weights: str, dropout: float
) -> keras.Model:
    """(Gray repeated to RGB) -> input scaling -> backbone -> global average pooling -> dropout -> softmax."""
    check_input(name, input_shape)
    height, width, channels = input_shape
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    if channels == 1:  # the backbones take RGB; a gray pixel is the same value on all three channels
        x = layers.Concatenate()([x, x, x])
    x = input_scaling(name)(x)
    backbone = load_backbone(name, (height, width), weights)
    # Pretrained statistics stay as they are (inference mode); a backbone from scratch learns its own, as any convnet.
    x = backbone(x) if weights == "none" else backbone(x, training=False)
    x = layers.GlobalAveragePooling2D()(x)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32")(x)  # see models.build_with_policy
    return keras.Model(inputs, outputs, name=name)


def phase_of(epoch: int, frozen_epochs: int) -> str:
    """The phase epoch `epoch` (0-based) trains in: the first `frozen_epochs` with the backbone frozen."""
    return FROZEN if epoch < frozen_epochs else FINE_TUNE


def phase_params(params: TrainParams, phase: str) -> TrainParams:
    """train's recipe for one phase: that phase's epochs (a schedule spans them) and its learning rate."""
    frozen = params.backbone.frozen_epochs
    if phase == FROZEN:
        return params.model_copy(update={"epochs": frozen})
    fine_tune = {"epochs": params.epochs - frozen, "learning_rate": params.backbone.fine_tune_learning_rate}
    return params.model_copy(update=fine_tune)


def set_trainable(model: keras.Model, phase: str, unfreeze: str | int, *, pretrained: bool = True) -> None:
    """Freeze the whole backbone (FROZEN), or train its top `unfreeze` layers (or all), but, when `pretrained`, not
    its batch normalisation (whose statistics came with the weights)."""
    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = phase == FINE_TUNE  # sets every layer inside it alike
    if phase == FINE_TUNE:
        chosen = {id(layer) for layer in (backbone.layers if unfreeze == "all" else backbone.layers[-unfreeze:])}
        for layer in backbone.layers:
            frozen_norm = pretrained and isinstance(layer, layers.BatchNormalization)
            layer.trainable = id(layer) in chosen and not frozen_norm


def current_phase(model: keras.Model) -> str:
    return FINE_TUNE if model.get_layer(BACKBONE_LAYER).trainable else FROZEN


def enter_phase(model: keras.Model, params: TrainParams, epoch: int, *, steps_per_epoch: int) -> None:
    """Before epoch `epoch`: put the model in that epoch's phase, if it is not in it yet, with a new optimizer
    compiled for the phase. A function of (model, epoch) only, so a resumed run enters the same phase as an
    uninterrupted one (pipeline/training.py calls it before each epoch, and before restoring a saved state)."""
    phase = phase_of(epoch, params.backbone.frozen_epochs)
    if phase != current_phase(model):
        set_trainable(model, phase, params.backbone.unfreeze, pretrained=params.backbone.weights != "none")
        compile_model(model, phase_params(params, phase), steps_per_epoch)


def build_and_compile(
    params: TrainParams, input_shape: Sequence[int], n_classes: int, *, steps_per_epoch: int
) -> keras.Model:
    """`params.model`'s backbone model, in the phase of the first epoch and compiled for it."""
    backbone = params.backbone
    model = build_with_policy(
        params.precision,
        lambda: build_backbone_model(
            params.model, input_shape, n_classes, weights=backbone.weights, dropout=backbone.dropout
        ),
    )
    phase = phase_of(0, backbone.frozen_epochs)
    set_trainable(model, phase, backbone.unfreeze, pretrained=backbone.weights != "none")
    compile_model(model, phase_params(params, phase), steps_per_epoch)
    return model
