"""The export stage's work: convert a Keras model to serving formats, describe its input once, check parity.

Every format is written from one serving function (`serving_function`): float32
inputs named `inputs`, float32 probabilities named `probabilities`, whatever
dtype the model computes in (a mixed_bfloat16 model included). Each export is then
read back through its own runtime (pipeline/runtimes.py) and must give model.keras's
probabilities on the whole test split, within a tolerance, with the same top-1
classes; otherwise nothing is written. TensorFlow and the converters are imported
inside the functions that need them.
Longer than most modules on purpose: the three converters share the serving function and the parity rule.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.calibration import SMALLEST_PROBABILITY, apply_temperature
from pipeline.errors import PipelineError, counted
from pipeline.io.atomic import atomic_directory, write_json_atomic
from pipeline.meta import INPUT_NAME, OUTPUT_NAME, PreparedMeta
from pipeline.runtimes import INSTALL_HINT, keras_runner, open_model

# What each format writes inside models/export/ (params.EXPORT_FORMATS lists the same names).
FORMATS = {"saved_model": "saved_model", "tflite": "model.tflite", "onnx": "model.onnx"}
KERAS_FILE = "model.keras"  # the reference every format is checked against, shipped beside them
DESCRIPTION = "serving.json"  # what a consumer needs: input, scaling, class names (describe_export)
# ONNX opset 17 (2022): run by every ONNX Runtime since 1.13 and by tf2onnx's whole op table.
ONNX_OPSET = 17

log = logging.getLogger("export")


# ----------------------------------------------------------------------------- the description


def describe_export(meta: PreparedMeta, formats: Sequence[str], temperature: float = 1.0) -> dict[str, Any]:
    """serving.json: everything a consumer needs to use an export without this repository.

    meta.json's record plus the tensors, the scaling in words, the files and the temperature baked into
    every format but model.keras (`PreparedMeta.serving`), so predict reads it as it reads meta.json.
    """
    files = {"keras": KERAS_FILE} | {name: FORMATS[name] for name in formats}
    return meta.serving(files, temperature).dump()


def description_beside(model_path: Path) -> Path | None:
    """The serving.json that came with an exported model, if `model_path` is one."""
    candidate = model_path.parent / DESCRIPTION
    return candidate if candidate.is_file() else None


# ----------------------------------------------------------------------------- parity


def parity_figures(reference: np.ndarray, probabilities: np.ndarray) -> dict[str, Any]:
    """How far an export's probabilities are from model.keras's, example by example."""
    if probabilities.shape != reference.shape:
        return {"max_abs_diff": float("inf"), "top1_mismatches": len(reference), "top1_agreement": 0.0}
    mismatches = int(np.sum(reference.argmax(axis=1) != probabilities.argmax(axis=1)))
    return {
        "max_abs_diff": float(np.max(np.abs(probabilities.astype(np.float64) - reference), initial=0.0)),
        "top1_mismatches": mismatches,
        "top1_agreement": 1.0 - mismatches / max(len(reference), 1),
    }


def check_parity(name: str, figures: dict[str, Any], tolerance: float, n_examples: int) -> None:
    """Raise, naming the format and its largest difference, when an export does not match model.keras."""
    if figures["max_abs_diff"] <= tolerance and figures["top1_mismatches"] == 0:
        return
    raise PipelineError(
        f"the {name} export does not match model.keras: its probabilities differ by up to "
        f"{figures['max_abs_diff']:.3g} (tolerance {tolerance:g}) and its top-1 class differs on "
        f"{figures['top1_mismatches']} of {counted(n_examples, 'test example')}, so no export was written "
        "(models/export is unchanged); report it with the model, or drop the format from export.formats."
    )


# ----------------------------------------------------------------------------- converters


def serving_function(model, input_shape: Sequence[int], temperature: float = 1.0):
    """The one function every format is made from: float32 in, float32 probabilities out, scaled by `temperature`."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)

    @tf.function(input_signature=[spec])
    def serve(inputs):
        # The layers cast the input to their own compute dtype (bfloat16 under mixed precision);
        # the output is cast back so that every consumer gets float32 whatever the model computes in.
        probabilities = tf.cast(model(inputs, training=False), tf.float32)
        if temperature != 1.0:  # pipeline.calibration.apply_temperature, in the graph: log, divide, softmax
            probabilities = tf.nn.softmax(tf.math.log(tf.maximum(probabilities, SMALLEST_PROBABILITY)) / temperature)
        return {OUTPUT_NAME: probabilities}

    return serve


def float32_twin(model):
    """`model` with every layer computing in float32 and the same weights; `model` itself if it already does.

    A model trained under `mixed_bfloat16` keeps float32 weights but computes in bfloat16,
    and LiteRT has no bfloat16 kernels (the converter refuses Conv2D, MatMul, ... on bfloat16,
    measured): every format is made from this twin, which any runtime runs. A model inside the model (a
    pretrained backbone, pipeline/backbones.py) is cloned layer by layer too: its layers carry their own policy.
    """
    import keras

    if all(layer.compute_dtype == "float32" for layer in model.layers):
        return model

    def in_float32(layer):
        # Plain operations between layers (MobileNetV3's `x + 3`, `x * (1/6)`) have no policy: they compute in
        # their inputs' dtype, float32 once the layers before them do.
        dtype = {"dtype": "float32"} if isinstance(layer, keras.layers.Layer) else {}
        return layer.__class__.from_config(layer.get_config() | dtype)

    twin = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    twin.set_weights([np.asarray(weight, dtype=np.float32) for weight in model.get_weights()])
    return twin


def write_saved_model(model, serve, dest: Path) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(name="serve", fn=serve)  # also written as the serving_default signature
    archive.write_out(str(dest), verbose=False)


def _unsupported_ops(message: str) -> str:
    """The ops a converter named as missing, else the first line of its message: the part a user can act on."""
    ops = re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", message)
    ops = ops or re.findall(r"\[[^\]]*: (\w+)\] is not supported", message)
    if ops:
        return f"ops it cannot convert: {', '.join(dict.fromkeys(ops))}"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return (lines[0] if lines else "no reason given")[:200].rstrip(".")


def write_tflite(saved_model: Path, serve, dest: Path) -> None:
    """The .tflite converted from the SavedModel.

    Not from the serving function's concrete function: with Keras 3 models that route kept
    the weights as resource variables the LiteRT interpreter never initialises (all outputs
    NaN, or `READ_VARIABLE failed to invoke`; measured on this stack, caught by the parity check).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    # Built-in ops only: a file that needs TensorFlow's "flex" ops does not run on a phone's
    # or a Raspberry Pi's plain LiteRT runtime, so such a model is refused rather than shipped.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as err:  # the converter raises ConverterError or plain errors from MLIR
        raise PipelineError(
            f"the tflite converter refused the model ({_unsupported_ops(str(err))}); use layers LiteRT has "
            "built-in ops for, or drop tflite from export.formats."
        ) from None
    dest.write_bytes(flatbuffer)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def write_onnx(saved_model: Path, serve, dest: Path) -> None:
    try:
        import tf2onnx
    except ImportError:
        raise PipelineError(f"the onnx export needs tf2onnx; {INSTALL_HINT}.") from None
    # tf2onnx does not fail on an op it cannot map: it logs an error and writes a model no runtime
    # loads. Its errors are collected here (and kept off the console) and turned into one sentence.
    tf2onnx_log, errors = logging.getLogger("tf2onnx"), _Collect()
    tf2onnx_log.setLevel(logging.WARNING)  # its INFO lines narrate every optimisation pass
    tf2onnx_log.addHandler(errors)
    tf2onnx_log.propagate = False
    try:
        tf2onnx.convert.from_function(
            serve, input_signature=serve.input_signature, opset=ONNX_OPSET, output_path=str(dest)
        )
    except Exception as err:  # tf2onnx raises ValueError, KeyError, ... for graphs it cannot map
        errors.messages.append(str(err))
    finally:
        tf2onnx_log.removeHandler(errors)
        tf2onnx_log.propagate = True
    if errors.messages:
        raise PipelineError(
            f"the onnx converter (tf2onnx) refused the model ({_unsupported_ops(chr(10).join(errors.messages))}); "
            "drop onnx from export.formats."
        )


# Converters of the formats other than saved_model: (the SavedModel, the serving function, target).
CONVERTERS: dict[str, Callable[[Path, Any, Path], None]] = {"tflite": write_tflite, "onnx": write_onnx}


def size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size


def export_model(
    model,
    model_file: Path,
    meta: PreparedMeta,
    x_test: np.ndarray,
    *,
    formats: Sequence[str],
    tolerance: float,
    dest: Path,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Write every format into `dest` (replaced whole, only if all pass parity); return the parity figures.

    With a `temperature`, each format is checked against model.keras's probabilities scaled by the same
    temperature (`calibration.apply_temperature`): the reference is computed apart from the graph it checks.
    """

    def scaled(probabilities: np.ndarray) -> np.ndarray:
        return probabilities if temperature == 1.0 else apply_temperature(probabilities, temperature)

    reference = scaled(keras_runner(model).predict(x_test))
    figures: dict[str, Any] = {"tolerance": tolerance, "test_examples": len(x_test), "temperature": temperature}
    twin = float32_twin(model)
    if twin is not model:  # the exports are checked against the twin; how far it is from model.keras is recorded
        twin_reference = scaled(keras_runner(twin).predict(x_test))
        figures["float32_twin"] = parity_figures(reference, twin_reference)
        reference = twin_reference
    model = twin
    serve = serving_function(model, meta.input_shape, temperature)
    try:
        with atomic_directory(dest) as folder:
            shutil.copy2(model_file, folder / KERAS_FILE)
            write_json_atomic(folder / DESCRIPTION, describe_export(meta, formats, temperature))
            # Sizes are logged, not kept in the metrics file: the SavedModel's bytes differ run to run for the same
            # model, and `dvc metrics diff` would report a change where nothing changed.
            log.info("%s: %d bytes", KERAS_FILE, size_bytes(folder / KERAS_FILE))
            # The SavedModel is the others' source (see write_tflite), so it is written every time
            # and removed at the end when it is not one of the formats asked for.
            saved_model = folder / FORMATS["saved_model"]
            write_saved_model(model, serve, saved_model)
            for name in formats:
                target = folder / FORMATS[name]
                if name != "saved_model":
                    CONVERTERS[name](saved_model, serve, target)
                figures[name] = parity_figures(reference, open_model(target).predict(x_test))
                check_parity(name, figures[name], tolerance, len(x_test))
                # The difference as a share of the tolerance: `dvc metrics show` rounds to 5 decimals,
                # which turns a 2.7e-07 difference into 0.0; 0.027 of the tolerance still shows.
                figures[name]["tolerance_used"] = figures[name]["max_abs_diff"] / tolerance
                log.info("%s: %d bytes", FORMATS[name], size_bytes(target))
            if "saved_model" not in formats:
                shutil.rmtree(saved_model)
    except OSError as err:
        raise PipelineError(
            f"cannot write {dest} ({err.strerror or err}: {err.filename or dest}); make its folder writable "
            "and rerun (dvc repro export); the earlier export there is unchanged."
        ) from None
    return figures
