"""VICReg (Bardes, Ponce & LeCun 2022, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning").

One network (encoder -> projector, 8192-8192-8192 on ImageNet) and no negatives,
no momentum network, no predictor, no stop-gradient: the two views' projections
are regressed onto each other while two regularisers keep them from collapsing
(``losses.vicreg``):

    L = lambda mean((z1 - z2)^2)                                  (invariance)
        + mu [mean_i relu(1 - sqrt(Var(z1)_i + eps)) + same for z2] / 2   (variance)
        + nu [sum_{i != j} C(z1)_ij^2 / d + same for z2],         (covariance)

the variance term holding every dimension's standard deviation over the batch
up to 1, the covariance term decorrelating the dimensions (``vicreg.sim_coeff``
lambda = 25, ``std_coeff`` mu = 25, ``cov_coeff`` nu = 1, the paper's).

Global batch: the variance and the covariance C (denominator N - 1) of each
dimension run over the whole global batch, as the reference code gathers the
projections of every GPU before them; here the mean goes through ``pmean`` and
C's sum over samples through ``psum``, so every device holds the same C and the
same loss, the single-device loss of the concatenated batch, and the gradients
flow back through the collectives to every device's samples.

Each view goes through the network separately (two BatchNorm groups, each
synchronised over the mesh, as the reference code's SyncBatchNorm;
``base.PairLossMethod``). The projector has BN and ReLU after every hidden layer
and a plain linear output (``head.last_bn`` False). ``configs/vicreg.py``.
"""

from cvrl_jax import losses
from cvrl_jax.methods import base


class VICReg(base.PairLossMethod):
  defaults = {"vicreg": dict(sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0),
              "head": dict(last_bn=False)}

  def pair_loss(self, z1, z2, axis_name):
    v = self.config.vicreg
    return losses.vicreg(z1, z2, sim_coeff=v.sim_coeff, std_coeff=v.std_coeff,
                         cov_coeff=v.cov_coeff, axis_name=axis_name)


METHODS = {"vicreg": VICReg}
