"""Supervised autoencoder: reconstruction + classifier_weight * cross-entropy of a classifier head on
the latent (Le, Patterson & White 2018, "Supervised autoencoders"). The head is `model.classifier_hidden`
layers (default none: a linear classifier) with their own activation and dropout."""

from __future__ import annotations

import jax.numpy as jnp

from jaxae import losses, models, validation
from jaxae import data as data_lib
from jaxae.variants import base


def make_loss(config, net):
  recon = base.reconstruction(config, net)

  def loss_fn(params, hp, batch, key, train):
    x, y = batch["x"], batch["y"]
    z, logits = base.autoencode(net, params, x, key, train)
    loss, metrics = recon(logits, x)
    class_logits = net.head(params, "classifier", z, key, train)
    ce = losses.cross_entropy(class_logits, y)
    loss = loss + hp["classifier_weight"] * ce
    accuracy = jnp.mean(jnp.argmax(class_logits, -1) == y)
    return loss, {**metrics, "cross_entropy": ce, "accuracy": accuracy, "loss": loss}

  return loss_fn


def heads(config) -> dict:
  m = config.model
  return {"classifier": models.MLPHead(config.loss.num_classes, tuple(m.classifier_hidden), m.classifier_activation,
                                       float(m.classifier_dropout), m.init)}


def validate(config) -> None:
  validation.positive_int(config, "loss.num_classes")


def check_data(config, data) -> None:
  who = f"variant='supervised' (loss.num_classes={config.loss.num_classes})"
  for split in (data.train, data.eval):
    data_lib.check_labels(split, config.loss.num_classes, who)


VARIANT = base.register(base.Variant(
    name="supervised", make_loss=make_loss, heads=heads, validate=validate, check_data=check_data, needs_labels=True,
    hparams={"classifier_weight": "loss.classifier_weight"},
    options={"loss.classifier_weight": 1.0, "loss.num_classes": 10},
    description="reconstruction + cross-entropy of a classifier head on the latent"))
