"""Library code shared by the pipeline's stages.

Nothing in this package imports TensorFlow or Keras at module level except
`pipeline.models` and `pipeline.training`, which only the train and evaluate
stages import: the other stages start in a fraction of a second.
"""

import os

# TensorFlow's C++ start-up chatter (CPU feature notices) buries the useful log lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
