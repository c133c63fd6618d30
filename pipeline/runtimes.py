"""Run a model file through its own runtime: Keras, TensorFlow (SavedModel), LiteRT (.tflite), ONNX Runtime.

One `Runner` per format, all with the same face (`input_shape`, `n_outputs`,
`predict`), so that predict and the export stage's parity check treat every
format alike. Each runtime is imported only when its format is opened: a .tflite
or .onnx file runs without TensorFlow being imported at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError, error_detail

BATCH_SIZE = 256  # examples per call into a runtime: memory only, the results do not depend on it
INSTALL_HINT = "install the export extra (pip install -e '.[export]'; make setup has it)"
# Each format in a sentence, and the stage that writes it: what to rerun when a file of it is unreadable.
FORMAT_NAMES = {"keras": "Keras model", "saved_model": "SavedModel", "tflite": "LiteRT model", "onnx": "ONNX model"}
REWRITE = {"keras": "dvc repro -f train", **dict.fromkeys(("saved_model", "tflite", "onnx"), "dvc repro -f export")}


@dataclass(frozen=True)
class Runner:
    """A loaded model: float32 inputs of `input_shape` (batch axis first, None) in, probabilities out."""

    format: str
    input_shape: tuple[int | None, ...]
    n_outputs: int
    run_batch: Callable[[np.ndarray], np.ndarray]
    handle: object = None  # what must stay alive while run_batch is used (a SavedModel's variables)

    def predict(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        # Batch by batch: `x` may be a split on disk (`prepared.StoredRows`), read and scaled per slice.
        parts = [
            np.asarray(self.run_batch(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32)))
            for start in range(0, len(x), batch_size)
        ]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, self.n_outputs), np.float32)


def format_of(path: Path) -> str:
    """Which runtime reads `path`: keras, saved_model (a folder with saved_model.pb), tflite or onnx."""
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return "saved_model"
        raise PipelineError(f"{path} is a folder without saved_model.pb; give a SavedModel folder or a model file.")
    formats = {".keras": "keras", ".tflite": "tflite", ".onnx": "onnx"}
    if path.suffix.lower() not in formats:
        raise PipelineError(
            f"{path}: a '{path.suffix or 'suffixless'}' file is not a model this tool reads; "
            "give a .keras, .tflite or .onnx file or a SavedModel folder."
        )
    if not path.is_file():
        raise PipelineError(f"{path} not found; run the pipeline first (dvc repro) or pass another --model.")
    return formats[path.suffix.lower()]


def _batch_dim(shape: tuple) -> tuple[int | None, ...]:
    # Runtimes name an unknown batch size -1, a string ('unk__36') or None: all mean "any".
    return tuple(None if not isinstance(d, (int, np.integer)) or d < 0 else int(d) for d in shape)


def open_keras(path: Path) -> Runner:
    from pipeline.models import load_model  # the project's one .keras loader: safe mode, one-sentence errors

    return keras_runner(load_model(path))


def keras_runner(model) -> Runner:
    def run_batch(x: np.ndarray) -> np.ndarray:
        return model.predict_on_batch(x)

    return Runner("keras", tuple(model.input_shape), int(model.output_shape[-1]), run_batch)


def open_saved_model(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if "serving_default" not in loaded.signatures:
        raise PipelineError(f"{path} has no serving_default signature; export it again: dvc repro -f export.")
    signature = loaded.signatures["serving_default"]
    (input_name, input_spec), *others = signature.structured_input_signature[1].items()
    outputs = signature.structured_outputs
    if others or len(outputs) != 1:
        raise PipelineError(
            f"{path}: its serving signature must take one input and give one output; export it again: "
            "dvc repro -f export."
        )
    (output_name, output_spec) = next(iter(outputs.items()))

    def run_batch(x: np.ndarray) -> np.ndarray:
        return signature(**{input_name: tf.constant(x)})[output_name].numpy()

    shape = _batch_dim(tuple(input_spec.shape))
    return Runner("saved_model", shape, int(output_spec.shape[-1]), run_batch, handle=loaded)


def open_tflite(path: Path) -> Runner:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise PipelineError(f"reading {path} needs the LiteRT interpreter (ai-edge-litert); {INSTALL_HINT}.") from None
    interpreter = Interpreter(model_path=str(path))
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        raise PipelineError(
            f"{path} has {len(signatures)} signatures, but one (serving_default) is needed; export it again: "
            "dvc repro -f export."
        )
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    (input_name, input_detail), *_ = runner.get_input_details().items()
    (output_name, output_detail), *_ = runner.get_output_details().items()

    def run_batch(x: np.ndarray) -> np.ndarray:
        # The signature runner resizes the input tensor to each batch's size itself.
        return runner(**{input_name: x})[output_name]

    shape = _batch_dim(tuple(input_detail["shape_signature"]))
    return Runner("tflite", shape, int(output_detail["shape"][-1]), run_batch)


def open_onnx(path: Path) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise PipelineError(f"reading {path} needs ONNX Runtime (onnxruntime); {INSTALL_HINT}.") from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    model_output = session.get_outputs()[0]

    def run_batch(x: np.ndarray) -> np.ndarray:
        return session.run([model_output.name], {model_input.name: x})[0]

    return Runner("onnx", _batch_dim(tuple(model_input.shape)), int(model_output.shape[-1]), run_batch)


OPENERS: dict[str, Callable[[Path], Runner]] = {
    "keras": open_keras,
    "saved_model": open_saved_model,
    "tflite": open_tflite,
    "onnx": open_onnx,
}


def open_model(path: Path) -> Runner:
    """Load `path` (any format this project writes) into its own runtime.

    A damaged or truncated file makes each runtime raise its own exceptions (OSError, IndexError,
    TensorFlow's OpError, ONNX Runtime's, a protobuf DecodeError, ...), while opening it or while
    reading its signature: every one becomes one sentence, as `pipeline.models.load_model` does for Keras.
    """
    model_format = format_of(path)
    try:
        return OPENERS[model_format](path)
    except PipelineError:
        raise
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise PipelineError(
            f"{path} is not a readable {FORMAT_NAMES[model_format]} ({error_detail(err)}); rerun the stage that "
            f"writes it: {REWRITE[model_format]}."
        ) from None
