"""jaxae: autoencoder experiments in JAX/Flax, every seed and hyperparameter setting in one compiled pass."""

from jaxae.configs import base_config
from jaxae.load import Run, load_run
from jaxae.run import train_and_evaluate

__all__ = ["Run", "base_config", "load_run", "train_and_evaluate"]
__version__ = "0.1.0"
