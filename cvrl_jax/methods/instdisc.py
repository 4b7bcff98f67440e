"""InstDisc (Wu, Xiong, Yu & Lin 2018, "Unsupervised Feature Learning via
Non-Parametric Instance Discrimination").

Every training image is a class of its own. One network (encoder -> a linear
128-d head, no BatchNorm) maps one augmented view of image i to a unit vector
f_i; a memory bank V holds one unit vector per training image, and the class
weights are those rows: P(i | f) = exp(v_i . f / tau) / Z_i, a non-parametric
softmax over the n images (``instdisc.temperature`` tau = 0.07).

Loss (``instdisc.loss``):

* ``nce`` (the paper's, the default): noise-contrastive estimation with m =
  ``instdisc.num_noise`` noise rows drawn uniformly from the bank for each
  sample (P_n = 1/n, with replacement, as the authors' code):

      h(v) = P(v) / (P(v) + m / n),   P(v) = exp(v . f / tau) / Z,
      L = mean_i [ -log h(v_i) - sum_{k=1..m} log(1 - h(v_noise_ik)) ]

  (``nce_loss``). Z is the paper's constant: estimated once, on the first step, as
  Z = n mean_{i,k} exp(v_noise_ik . f_i / tau) over the first global batch and its
  noise rows (the authors' code also averages in the positive, 1 of m + 1
  columns), then kept in the train state (``extra["z"]``; 0 until estimated).
* ``softmax``: the exact non-parametric softmax over the whole bank,
  ``-log softmax(V f / tau)_i`` (``softmax_loss``; the authors' CIFAR-10 command,
  and ``configs/instdisc.py``'s ``cifar10`` and ``cpu`` presets).

``instdisc.proximal`` = lambda > 0 adds the proximal term of the paper's eq. 10,
lambda ||f_i - v_i||^2 with v_i the bank row before this step's update, which
keeps a sample's feature near its previous value (0, off, by default, as in the
authors' released code).

The bank (``extra["bank"]``, initialised to random unit vectors) is updated after
the loss with momentum ``instdisc.bank_momentum`` = 0.5: v_i <- normalise(0.5 v_i +
0.5 f_i), by each image's index in the train split (``batch["index"]``; the
pipeline adds it when ``config.example_index`` is set, as ``configs/instdisc.py``
does). Rows are never differentiated.

Global batch semantics: BatchNorm is synchronised over the mesh; the noise rows
of a sample are drawn from the step's RNG folded with the sample's row in the
global batch (``noise_indices``), so they do not depend on the number of
devices; Z's estimate is a mean over the whole global batch. Being part of the
train state, the bank and Z are checkpointed and restored with it.

The bank is sharded by rows over the mesh (``extra_specs``): on ImageNet
(1,281,167 images x 128 float32, 656 MB) each of 8 devices holds 82 MB. Every
device draws the noise indices of the whole global batch, computes the logits
against the rows it holds (zero elsewhere) and a ``psum`` completes them
(``sharded_logits``); a sample's own row is read the same way (``sharded_rows``)
and each device writes the updated rows it holds. The sums add one nonzero term
to zeros, so 1 device and 8 give the same logits. The cost is the noise logits
of the global batch on every device (B m d multiply-adds, computed a local batch
at a time) and one psum of the B x m logits a step. The bank has a row per
example, rounded up to a multiple of the mesh's devices (``bank_rows``); the
extra rows are never indexed, drawn or counted in the softmax.

The representation evaluated downstream (kNN monitor, linear probe, export) is
the encoder's output (``base.Method.features``), as for every other method here,
so the figures compare across methods; the paper's kNN figures are on the
normalised 128-d embedding instead.
"""

import functools
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from cvrl_jax import losses, parallel
from cvrl_jax.methods import base

LOSSES = ("nce", "softmax")


def noise_indices(rng: jax.Array, rows: jax.Array, num_noise: int, bank_size: int
                  ) -> jax.Array:
  """[len(rows), num_noise] bank rows drawn uniformly, with replacement, for the
  samples at ``rows`` of the global batch: each sample's draw is keyed by its row,
  so it is the same whichever device holds the sample."""
  draw = lambda row: jax.random.randint(jax.random.fold_in(rng, row), (num_noise,), 0,
                                        bank_size)
  return jax.vmap(draw)(rows)


def nce_loss(positive_logits: jax.Array, noise_logits: jax.Array, *, z: jax.Array,
             bank_size: int) -> jax.Array:
  """The NCE loss above, from ``v . f / tau`` of each sample's own bank row [b] and
  of its m noise rows [b, m]: ``mean_i -log h(v_i) - sum_k log(1 - h(v_ik))``, with
  the constant ``z``. In log space: log h = log P - log(P + m/n)."""
  log_noise = jnp.log(noise_logits.shape[-1] / bank_size)  # log(m P_n) = log(m / n)
  log_p = lambda logits: logits - jnp.log(z)
  data = log_p(positive_logits) - jnp.logaddexp(log_p(positive_logits), log_noise)
  noise = log_noise - jnp.logaddexp(log_p(noise_logits), log_noise)
  return -jnp.mean(data + jnp.sum(noise, axis=-1))


def estimate_z(noise_logits: jax.Array, bank_size: int, axis_name: Optional[str]
               ) -> jax.Array:
  """The paper's Monte-Carlo Z = n mean exp(v . f / tau) over the noise rows of the
  global batch (a constant: no gradient)."""
  mean = parallel.pmean(jnp.mean(jnp.exp(noise_logits)), axis_name)
  return lax.stop_gradient(bank_size * mean)


def bank_rows(bank_size: int, num_devices: int) -> int:
  """Rows the bank is allocated with: ``bank_size`` rounded up to a multiple of the
  devices that shard it."""
  return -(-bank_size // num_devices) * num_devices


def _held(bank: jax.Array, index: jax.Array, axis_name: Optional[str]
          ) -> tuple[jax.Array, jax.Array]:
  """Where the global rows ``index`` lie in this device's block of the bank, and
  whether they lie there at all."""
  local = index - parallel.first_row(bank.shape[0], axis_name)
  return jnp.clip(local, 0, bank.shape[0] - 1), (local >= 0) & (local < bank.shape[0])


def sharded_rows(bank: jax.Array, index: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Global rows ``index`` (the same on every device) of a bank sharded by rows:
  each device reads those it holds, zeros for the rest, and a psum fills them in."""
  local, held = _held(bank, index, axis_name)
  return parallel.psum(jnp.where(held[..., None], bank[local], 0.0), axis_name)


def sharded_logits(f: jax.Array, index: jax.Array, bank: jax.Array,
                   axis_name: Optional[str]) -> jax.Array:
  """``f_b . v_{index_bk}`` [B, m] for every row b of the global batch ``f`` [B, d]
  and its bank rows ``index`` [B, m]: each device the rows it holds, a local batch
  at a time, and a psum. Each local batch's noise rows are read again for the
  gradient rather than kept (``jax.checkpoint``), so memory holds one local batch's
  rows [b, m, d], as a replicated bank's loss would, not the global batch's."""
  chunks = parallel.axis_size(axis_name)

  @jax.checkpoint
  def partial(args):
    f, index = args
    local, held = _held(bank, index, axis_name)
    return jnp.where(held, jnp.einsum("bd,bmd->bm", f, bank[local]), 0.0)

  split = lambda x: x.reshape(chunks, -1, *x.shape[1:])
  logits = lax.map(partial, (split(f), split(index))).reshape(index.shape)
  return parallel.psum(logits, axis_name)


def softmax_loss(f: jax.Array, bank: jax.Array, index: jax.Array, *, temperature: float,
                 bank_size: Optional[int] = None, axis_name: Optional[str] = None
                 ) -> jax.Array:
  """Per-sample ``-log softmax(V f_b / tau)_{index_b}`` over the bank's first
  ``bank_size`` rows (default: all), for the global batch ``f`` [B, d]; with
  ``axis_name``, ``bank`` is this device's block of rows, and the log-sum-exp
  is taken over every device's block."""
  logits = f @ bank.T / temperature
  rows = parallel.first_row(bank.shape[0], axis_name) + jnp.arange(bank.shape[0])
  logits = jnp.where(rows < (bank_size or rows.shape[0] * parallel.axis_size(axis_name)),
                     logits, -jnp.inf)
  peak = lax.stop_gradient(jnp.max(logits, axis=-1))
  if axis_name is not None:
    peak = lax.pmax(peak, axis_name)
  total = parallel.psum(jnp.sum(jnp.exp(logits - peak[:, None]), axis=-1), axis_name)
  positive = jnp.sum(f * sharded_rows(bank, index, axis_name), axis=-1) / temperature
  return peak + jnp.log(total) - positive


def update_bank(bank: jax.Array, index: jax.Array, f: jax.Array, momentum: float,
                axis_name: Optional[str] = None) -> jax.Array:
  """Rows ``index`` of the bank <- normalise(m v + (1 - m) f), for the global batch's
  ``index`` and ``f``; with ``axis_name`` each device writes the rows it holds. An
  image twice in one batch (the end of one epoch and the start of the next) moves
  by the mean of its features, so every copy writes the same row."""
  same = (index[:, None] == index[None, :]).astype(f.dtype)
  f = (same @ f) / jnp.sum(same, axis=1, keepdims=True)
  rows = losses.l2_normalize(momentum * sharded_rows(bank, index, axis_name)
                             + (1.0 - momentum) * f)
  local, held = _held(bank, index, axis_name)
  return bank.at[jnp.where(held, local, bank.shape[0])].set(rows.astype(bank.dtype),
                                                             mode="drop")


class InstDisc(base.Method):
  defaults = {"instdisc": dict(loss="nce", num_noise=4096, temperature=0.07,
                               bank_momentum=0.5,
                               proximal=0.0,  # lambda of eq. 10; 0: off
                               bank_size=0),  # 0: the train split's size (or num_train_examples)
              "head": dict(num_layers=1, hidden_dim=0, output_dim=128, use_bn=False)}

  def __init__(self, config, num_classes, total_steps):
    super().__init__(config, num_classes, total_steps)
    base.choice("instdisc.loss", config.instdisc.loss, dict.fromkeys(LOSSES))
    if not config.example_index:
      raise ValueError("InstDisc updates its memory bank by each image's index: set "
                       "--config.example_index=True (configs/instdisc.py does).")
    base.require_one_view(config, "InstDisc")

  @functools.cached_property
  def bank_size(self) -> int:
    """Rows of the bank, one per example the pipeline indexes: ``instdisc.bank_size``,
    else the first ``num_train_examples``, else the whole train split."""
    c = self.config
    if c.instdisc.bank_size:
      if c.num_train_examples > c.instdisc.bank_size:
        raise ValueError(f"instdisc.bank_size={c.instdisc.bank_size} rows cannot hold the "
                         f"num_train_examples={c.num_train_examples} indexed examples.")
      return c.instdisc.bank_size
    if c.num_train_examples:
      return c.num_train_examples
    # Imported here: the split's size is the only thing a method reads from the data,
    # and step.py (which imports every method) stays free of TensorFlow.
    from cvrl_jax.data import sources
    return sources.num_examples(c, c.train_split)

  def extra_specs(self):
    return {"bank": P(parallel.DATA), "z": P()}

  def init(self, rng, images):
    net_rng, bank_rng = jax.random.split(rng)
    params, batch_stats, _ = super().init(net_rng, images)
    c = self.config
    bank = base.random_unit_rows(bank_rng, self.bank_size, c.head.output_dim)
    rows = bank_rows(self.bank_size, c.num_devices or jax.device_count())
    bank = jnp.pad(bank, ((0, rows - self.bank_size), (0, 0)))
    return params, batch_stats, {"bank": bank, "z": jnp.zeros((), jnp.float32)}

  def loss(self, params, batch_stats, extra, batch, rng, step, axis_name):
    del step
    c, n = self.config.instdisc, self.bank_size
    (_, (z, _), _, logits), batch_stats = base.apply_together(
        self.net(axis_name), params, batch_stats, batch["views"])
    f = losses.l2_normalize(z.astype(jnp.float32))
    b, bank = f.shape[0], extra["bank"]
    everyone = lambda x: parallel.gather(x, axis_name, invariant=True)
    f_all, index = parallel.gather(f, axis_name), everyone(batch["index"])
    positive = parallel.own_rows(sharded_rows(bank, index, axis_name), b, axis_name)
    similarity = jnp.sum(f * positive, axis=-1)  # v_i before this step's update
    metrics = {"positive_similarity": parallel.pmean(jnp.mean(similarity), axis_name)}
    if c.loss == "nce":
      noise = noise_indices(rng, jnp.arange(f_all.shape[0]), c.num_noise, n)
      noise_logits = parallel.own_rows(sharded_logits(f_all, noise, bank, axis_name), b,
                                       axis_name) / c.temperature
      z_nce = jnp.where(extra["z"] > 0, extra["z"], estimate_z(noise_logits, n, axis_name))
      loss = nce_loss(similarity / c.temperature, noise_logits, z=z_nce, bank_size=n)
      extra, metrics["nce_z"] = {**extra, "z": z_nce}, z_nce
    else:
      per_sample = softmax_loss(f_all, bank, index, temperature=c.temperature,
                                bank_size=n, axis_name=axis_name)
      loss = jnp.mean(parallel.own_rows(per_sample, b, axis_name))
    if c.proximal:
      loss += c.proximal * jnp.mean(jnp.sum(jnp.square(f - positive), -1))
    bank = update_bank(bank, index, everyone(lax.stop_gradient(f)), c.bank_momentum,
                       axis_name)
    return base.with_probe(parallel.pmean(loss, axis_name), logits, batch["label"], axis_name,
                           batch_stats, {**extra, "bank": bank}, **metrics)


METHODS = {"instdisc": InstDisc}
