"""Barlow Twins (Zbontar et al. 2021, "Self-Supervised Learning via Redundancy
Reduction").

One network (encoder -> projector, 8192-8192-8192 on ImageNet). Each dimension
of the two views' projections is standardised over the batch, and their
cross-correlation matrix ``C`` (d x d) is pushed towards the identity
(``losses.barlow_twins_loss``):

    L = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2,
    C_ij = (1/N) sum_b z1n_bi z2n_bj,

the first term making the views' features invariant, the second decorrelating
the features (``barlow_twins.lambd`` = 0.0051, the paper's 5e-3 ~ 1/d scaled for
d = 8192).

Global batch: the means and variances that standardise each dimension, and the
sum over samples in ``C``, run over the whole global batch (``pmean`` /
``psum``), so every device holds the same ``C`` and the same loss, equal to the
single-device loss of the concatenated batch; the gradients flow back through
the collectives to every device's samples.

Each view goes through the network separately (two BatchNorm groups, each
synchronised over the mesh), as in the reference code (``base.PairLossMethod``).
The projector has BN and ReLU after every hidden layer and a plain linear output
(``head.last_bn`` False), standardised in the loss.
"""

from cvrl_jax import losses
from cvrl_jax.methods import base


class BarlowTwins(base.PairLossMethod):
  defaults = {"barlow_twins": dict(lambd=0.0051), "head": dict(last_bn=False)}

  def pair_loss(self, z1, z2, axis_name):
    return losses.barlow_twins_loss(z1, z2, lambd=self.config.barlow_twins.lambd,
                                    axis_name=axis_name)


METHODS = {"barlow_twins": BarlowTwins}
