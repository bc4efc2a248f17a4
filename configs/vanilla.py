"""Vanilla autoencoder: MLP 784-512-256-32, MSE on sigmoid outputs, Adam 1e-3, batch 128, 30 epochs.

The built-in config `--config=vanilla` (jaxae/config_files/vanilla.py), kept here so that `--config=configs/vanilla.py`
works from a clone of the repository.
"""

from jaxae.config_files.vanilla import get_config  # noqa: F401
