"""The Keras reference note's dense autoencoder (784-500-300-100-2, tanh, RMSprop, binary cross-entropy).

The built-in config `--config=keras_dense` (jaxae/config_files/keras_dense.py), kept here so that
`--config=configs/keras_dense.py[:setting]` works from a clone of the repository.
"""

from jaxae.config_files.keras_dense import get_config, PIXELS  # noqa: F401
