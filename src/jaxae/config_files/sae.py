"""Sparse autoencoder for interpretability (variant 'sae'): TopK, k=32, m = 8 x D latents, AuxK.

Trains on vectors, e.g. a network's activations saved as .npy shards:

  python -m jaxae.main --config=sae --config.data.source='npy:acts/*.npy' --workdir=runs/sae \
      --config.sweep='{"sae.k": [16, 32, 64]}'

Inputs are scaled by one scalar so that E||x||^2 = D (data.normalize='unit_mean_square', stored with the
run). sae.activation: 'topk' | 'batchtopk' | 'relu' (L1 weight sae.l1_coefficient) | 'jumprelu' (L0 weight
sae.l0_coefficient) | 'gated' (L1 weight sae.l1_coefficient) | 'matryoshka_batchtopk' (nested sizes
sae.matryoshka_widths). The default data (the embedded MNIST images, 784 pixels) make a quick demonstration.
"""

from jaxae.configs import base_config


def get_config():
  config = base_config()
  config.variant = "sae"
  config.num_seeds = 3
  config.data.normalize = "unit_mean_square"
  config.model.output = "identity"
  config.model.expansion = 8
  config.sae.activation = "topk"
  config.sae.k = 32
  config.optimizer.learning_rate = 1e-3
  config.train.batch_size = 256
  config.train.epochs = 30
  config.train.eval_batch_size = 1024
  return config
