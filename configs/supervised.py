"""Supervised autoencoder: reconstruction + loss.classifier_weight * cross-entropy of a classifier on the latent.

The built-in config `--config=supervised` (jaxae/config_files/supervised.py), kept here so that `--config=configs/supervised.py`
works from a clone of the repository.
"""

from jaxae.config_files.supervised import get_config  # noqa: F401
