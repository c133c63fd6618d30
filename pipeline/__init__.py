"""Library code shared by the pipeline's stages, and the process-wide settings they need before TensorFlow loads.

No module of this package imports TensorFlow or Keras at its top except those only the train, evaluate,
export and predict stages import (models, training, resume, feeding, augment, backbones): download and
preprocess start in a fraction of a second.
"""

import importlib.abc
import os
import sys

# TensorFlow's C++ start-up chatter (CPU feature notices) buries the useful log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Two imports hidden from the library modules that ask for them: Keras imports scikit-learn for its scikit-learn
# wrappers, and TensorFlow Lite and Keras's Orbax checkpoint callback import JAX, whenever they are installed (as
# they are here: scikit-learn for evaluate's metrics, JAX for distributed training). No stage uses these
# integrations, and loading them is about a third of `import keras` in every TensorFlow stage (BENCHMARKS.md,
# section 3e). The libraries guard these imports (`try: import ... except ImportError`), so the integrations are
# off and nothing else changes: our own `import sklearn` or `import jax` works as before.
_HIDDEN_FROM = {
    "sklearn": ("keras.src.wrappers",),
    "jax": ("tensorflow.lite.python", "keras.src.callbacks.orbax_checkpoint"),
}


class _HideOptionalIntegrations(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        importers = _HIDDEN_FROM.get(name)
        if importers is None:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(("importlib", "_frozen_importlib")):
            frame = frame.f_back  # the import machinery's own frames, up to the module whose import statement ran
        importer = frame.f_globals.get("__name__", "") if frame is not None else ""
        if importer.startswith(importers):
            raise ModuleNotFoundError(f"{name} is not loaded for {importer} in this pipeline", name=name)
        return None


if not any(isinstance(finder, _HideOptionalIntegrations) for finder in sys.meta_path):
    sys.meta_path.insert(0, _HideOptionalIntegrations())
