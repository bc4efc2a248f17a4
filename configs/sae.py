"""Sparse autoencoder for interpretability (variant 'sae'): TopK, k=32, m = 8 x D latents, AuxK.

The built-in config `--config=sae` (jaxae/config_files/sae.py), kept here so that `--config=configs/sae.py`
works from a clone of the repository.
"""

from jaxae.config_files.sae import get_config  # noqa: F401
