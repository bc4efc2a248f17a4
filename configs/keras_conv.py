"""The Keras reference note's convolutional autoencoder (max-pooling, a 7x7x16 spatial code).

The built-in config `--config=keras_conv` (jaxae/config_files/keras_conv.py), kept here so that
`--config=configs/keras_conv.py[:setting]` works from a clone of the repository.
"""

from jaxae.config_files.keras_conv import get_config  # noqa: F401
