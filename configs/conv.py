"""Convolutional autoencoder: Conv 16 and 32 channels (stride 2), Dense bottleneck, upsampling back to 28x28.

The built-in config `--config=conv` (jaxae/config_files/conv.py), kept here so that `--config=configs/conv.py`
works from a clone of the repository.
"""

from jaxae.config_files.conv import get_config  # noqa: F401
