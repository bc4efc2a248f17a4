"""pythae's side of benchmarks/zoo_vs_pythae.py: one process training S seeds of one pythae model, one after another.

    /path/to/pythae-venv/bin/python benchmarks/pythae_zoo.py --model vae --seeds 4 --epochs 5 --data DATA.npz

Runs in its own environment (`pip install torch==2.13.0 pythae`; never a dependency of jaxae, imports no
jaxae): what a pythae user writes to train S seeds of a model. DATA.npz holds the training images
`x_train` (N, 28, 28, 1) uint8 and held-out `x_eval` (the same 10% stratified hold-out jaxae makes). Every
model gets the network of jaxae's configs: an MLP 784-512-256-d encoder (ReLU; mean and log-variance heads)
and its mirror decoder with sigmoid outputs (pythae's own discriminators for FactorVAE and the AAE), Adam
1e-3, batch 128, held-out loss every epoch (pythae's trainer), pythae's final checkpoint. Prints one JSON
line: {"model", "seeds", "epochs", "seconds" (from process start), "final_eval_loss" (per seed, pythae's loss)}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

T0 = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from pythae import models as pm  # noqa: E402
from pythae.models.base.base_utils import ModelOutput  # noqa: E402
from pythae.models.nn import BaseDecoder, BaseEncoder  # noqa: E402
from pythae.pipelines import TrainingPipeline  # noqa: E402
from pythae.trainers import AdversarialTrainerConfig, BaseTrainerConfig, CoupledOptimizerTrainerConfig  # noqa: E402


class Encoder(BaseEncoder):
  """784-512-256 ReLU, then Dense(d) mean and Dense(d) log-variance (jaxae's Gaussian MLP encoder)."""

  def __init__(self, d: int):
    super().__init__()
    self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU())
    self.mean, self.log_var = nn.Linear(256, d), nn.Linear(256, d)

  def forward(self, x):
    h = self.body(x)
    return ModelOutput(embedding=self.mean(h), log_covariance=self.log_var(h))


class Decoder(BaseDecoder):
  """d-256-512-784 ReLU with sigmoid outputs (jaxae's MLP decoder and `model.output='sigmoid'`)."""

  def __init__(self, d: int):
    super().__init__()
    self.body = nn.Sequential(nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 784))

  def forward(self, z):
    return ModelOutput(reconstruction=torch.sigmoid(self.body(z)).reshape(-1, 1, 28, 28))


def build(name: str, d: int):
  """(pythae model, trainer config class) of jaxae's config `name`, with the weights of jaxae's configs."""
  shape = dict(input_dim=(1, 28, 28), latent_dim=d)
  bce = dict(reconstruction_loss="bce")
  table = {
      "vae": (pm.VAE, pm.VAEConfig(**shape, **bce), BaseTrainerConfig),
      "iwae": (pm.IWAE, pm.IWAEConfig(**shape, **bce, number_samples=5), BaseTrainerConfig),
      "beta_tcvae": (pm.BetaTCVAE, pm.BetaTCVAEConfig(**shape, **bce, beta=6.0, use_mss=True), BaseTrainerConfig),
      "beta_vae_capacity": (pm.DisentangledBetaVAE, pm.DisentangledBetaVAEConfig(**shape, **bce, beta=1000.0, C=25.0),
                            BaseTrainerConfig),
      "factor_vae": (pm.FactorVAE, pm.FactorVAEConfig(**shape, **bce), AdversarialTrainerConfig),
      "infovae": (pm.INFOVAE_MMD, pm.INFOVAE_MMD_Config(**shape, **bce, kernel_choice="imq"), BaseTrainerConfig),
      "vamp": (pm.VAMP, pm.VAMPConfig(**shape, **bce, number_components=50), BaseTrainerConfig),
      "vae_flow": (pm.VAE_LinNF, pm.VAE_LinNF_Config(**shape, **bce, flows=["Planar"] * 4), BaseTrainerConfig),
      "wae": (pm.WAE_MMD, pm.WAE_MMD_Config(**shape, kernel_choice="imq"), BaseTrainerConfig),
      "rae": (pm.RAE_L2, pm.RAE_L2_Config(**shape), CoupledOptimizerTrainerConfig),
      "aae": (pm.Adversarial_AE, pm.Adversarial_AE_Config(**shape), AdversarialTrainerConfig),
      "vqvae": (pm.VQVAE, pm.VQVAEConfig(**shape), BaseTrainerConfig),
  }
  if name not in table:
    raise SystemExit(f"--model={name!r} is not one of {', '.join(table)}")
  cls, cfg, trainer = table[name]
  return cls(model_config=cfg, encoder=Encoder(d), decoder=Decoder(d)), trainer


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--model", required=True)
  p.add_argument("--seeds", type=int, default=4)
  p.add_argument("--epochs", type=int, default=5)
  p.add_argument("--latent", type=int, default=32)
  p.add_argument("--data", required=True)
  p.add_argument("--threads", type=int, default=0)
  args = p.parse_args(argv)
  if args.threads:
    torch.set_num_threads(args.threads)
  with np.load(args.data) as f:
    x_train = (f["x_train"].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
    x_eval = (f["x_eval"].transpose(0, 3, 1, 2) / 255.0).astype(np.float32)
  final = []
  with tempfile.TemporaryDirectory() as out:
    for seed in range(args.seeds):
      torch.manual_seed(seed)
      model, trainer_config = build(args.model, args.latent)
      kwargs = dict(output_dir=os.path.join(out, f"seed{seed}"), num_epochs=args.epochs, learning_rate=1e-3,
                    per_device_train_batch_size=128, per_device_eval_batch_size=1000, seed=seed, no_cuda=True)
      pipeline = TrainingPipeline(training_config=trainer_config(**kwargs), model=model)
      pipeline(train_data=x_train, eval_data=x_eval)
      model.eval()
      with torch.no_grad():  # a sanity check that the model trained: its own loss on the held-out images
        final.append(float(model({"data": torch.from_numpy(x_eval)}).loss))
  print(json.dumps({"model": args.model, "seeds": args.seeds, "epochs": args.epochs,
                    "seconds": time.perf_counter() - T0, "final_eval_loss": final}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
