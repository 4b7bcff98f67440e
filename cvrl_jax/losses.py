"""The methods' objectives, written once for one device and for a device mesh.

Every loss takes the *local* shard of the batch. With ``axis_name=None`` it is the
plain single-device loss. With ``axis_name`` set (inside ``jax.shard_map``) the
quantities of the whole global batch come through the collectives of
``parallel.py``: negatives gathered with ``parallel.gather``, statistics and
Sinkhorn's sums with ``pmean`` / ``psum``. A loss returns the mean over the
device's own anchors, so that ``pmean`` of it over the axis equals the
single-device loss of the concatenated global batch (the losses that are global
already, Barlow Twins' and VICReg's, return that value on every device). That
equality is what makes a run on 8 devices give the same losses as a run on 1
(``tests/test_losses.py`` and each method's tests).

Contrastive: ``nt_xent`` (SimCLR) and the alternatives SimCLR can train with,
``dcl``, ``nt_logistic``, ``margin_triplet``; ``supcon_loss`` (SupCon),
``moco_infonce`` (MoCo v1 / v2), ``moco_v3_ctr`` (MoCo v3, also decoupled),
``nnclr_loss`` (NNCLR), ``cpc_infonce`` (CPC, over a grid of patches).
Regression onto a stop-gradient target: ``byol_loss``, ``simsiam_loss``.
Redundancy reduction: ``barlow_twins_loss``, ``vicreg``.
Cross-entropy against other crops' targets: ``swapped_prediction`` with
``sinkhorn``'s codes (SwAV), ``dino_loss`` (DINO).
"""

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from cvrl_jax import parallel

# Logit given to an anchor's similarity with itself: large enough to vanish under
# softmax, finite so that 0 * mask stays 0 (an -inf would give NaN gradients).
_LARGE_NUM = 1e9


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """Unit-length rows; eps keeps the gradient finite at zero."""
  x = x.astype(jnp.float32)
  return x * lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps))


def cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """Row-wise cosine similarity of ``a`` and ``b``, (n,)."""
  return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def _cross_entropy(logits: jax.Array, labels: jax.Array,
                   decoupled: bool = False) -> jax.Array:
  """Mean softmax cross-entropy with integer labels, in float32. ``decoupled``
  (DCL): each row's label is left out of its normaliser, ``-l_y + log sum_{j != y}
  exp(l_j)``."""
  logits = logits.astype(jnp.float32)
  picked = jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0]
  if decoupled:
    logits = logits - jax.nn.one_hot(labels, logits.shape[-1]) * _LARGE_NUM
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)


def _contrast(anchors: jax.Array, positives: jax.Array, temperature: float,
              axis_name: Optional[str], decoupled: bool = False) -> jax.Array:
  """Cross-entropy of ``a_i . b_j / tau`` over the ``b_j`` of the global batch
  (gathered, differentiated through the gather), the positive being ``b_i``
  (``decoupled``: left out of the normaliser); rows L2-normalised; the mean over
  the local anchors."""
  a, b = l2_normalize(anchors), l2_normalize(positives)
  labels = parallel.first_row(a.shape[0], axis_name) + jnp.arange(a.shape[0])
  return _cross_entropy(a @ parallel.gather(b, axis_name).T / temperature, labels, decoupled)


def _two_view_similarities(z1: jax.Array, z2: jax.Array, axis_name: Optional[str]
                           ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The similarities SimCLR's losses (and SupCon's) read, over the global batch.

  Anchors: this device's 2n views ``[z1; z2]``; candidates: the 2N views of the
  global batch ``[z1 of every device; z2 of every device]`` (gathered,
  differentiated through the gather). Returns the cosine similarities (2n, 2N),
  a 0/1 mask of each anchor's own column (``is_self``, same shape) and the column
  of its positive, the other view of its image, (2n,); every other column is one
  of its 2N - 2 negatives.
  """
  z1, z2 = l2_normalize(z1), l2_normalize(z2)
  n = z1.shape[0]
  own, total = parallel.first_row(n, axis_name) + jnp.arange(n), n * parallel.axis_size(axis_name)
  candidates = jnp.concatenate([parallel.gather(z1, axis_name), parallel.gather(z2, axis_name)])
  sims = jnp.concatenate([z1, z2]) @ candidates.T
  is_self = jax.nn.one_hot(jnp.concatenate([own, total + own]), 2 * total)
  return sims, is_self, jnp.concatenate([total + own, own])


def _mean_over_negatives(z1: jax.Array, z2: jax.Array, axis_name: Optional[str],
                         pair_loss: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """The mean over this device's 2n anchors of the mean of ``pair_loss(s_pos,
  s_neg)`` over each anchor's 2N - 2 negatives (``_two_view_similarities``)."""
  sims, is_self, positive = _two_view_similarities(z1, z2, axis_name)
  is_negative = 1.0 - is_self - jax.nn.one_hot(positive, sims.shape[-1])
  s_pos = jnp.take_along_axis(sims, positive[:, None], axis=-1)
  per_pair = is_negative * pair_loss(s_pos, sims)
  return jnp.mean(jnp.sum(per_pair, axis=-1) / jnp.sum(is_negative, axis=-1))


# ---------------------------------------------------------------- contrastive


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float,
            axis_name: Optional[str] = None) -> jax.Array:
  """SimCLR's normalised temperature-scaled cross-entropy (NT-Xent).

  Args:
    z1, z2: projections of the two views of the same n images, shape (n, d); row k
      of ``z1`` and row k of ``z2`` are a positive pair. Normalised here.
    temperature: softmax temperature tau (0.1 for ImageNet, 0.5 for CIFAR-10).
    axis_name: mesh axis over which the global batch is sharded, or None.

  Returns:
    L = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)] over the N pairs of the global
    batch, where l(i, j) = -log softmax_j(sim(i, .) / tau) with cosine similarity
    and the anchor itself excluded. With ``axis_name`` the mean is over this
    device's 2n anchors (every device holds the same n, so pmean gives L).
    SimCLR's other losses below (``dcl``, ``nt_logistic``, ``margin_triplet``)
    take the same arguments and keep the same contract.
  """
  # Written per view (not through ``_two_view_similarities``, which sums the same
  # terms in another order) to keep the float rounding, and so the runs, of before.
  z1, z2 = l2_normalize(z1), l2_normalize(z2)
  n = z1.shape[0]
  z1_all, z2_all = parallel.gather(z1, axis_name), parallel.gather(z2, axis_name)
  labels = parallel.first_row(n, axis_name) + jnp.arange(n)
  self_mask = jax.nn.one_hot(labels, z1_all.shape[0]) * _LARGE_NUM

  def anchor_loss(anchor, same_view_all, other_view_all):
    # Candidates for each anchor: all 2N views except itself; the positive is
    # the other view of the same image.
    pos_and_negs = anchor @ other_view_all.T / temperature
    negs_same_view = anchor @ same_view_all.T / temperature - self_mask
    logits = jnp.concatenate([pos_and_negs, negs_same_view], axis=1)
    return _cross_entropy(logits, labels)

  return 0.5 * (anchor_loss(z1, z1_all, z2_all) + anchor_loss(z2, z2_all, z1_all))


def dcl(z1: jax.Array, z2: jax.Array, *, temperature: float,
        axis_name: Optional[str] = None) -> jax.Array:
  """The decoupled contrastive loss (Yeh et al. 2022): NT-Xent with the positive
  left out of each anchor's denominator,
  ``-s_ij / tau + log sum_{k not in {i, j}} exp(s_ik / tau)``, the mean over the
  2N anchors (``nt_xent``'s arguments and global contract). Without the positive
  in the normaliser, the gradient loses what the paper calls negative-positive
  coupling, a down-weighting that is strongest at small batches. It can be negative.
  """
  sims, is_self, positive = _two_view_similarities(z1, z2, axis_name)
  return _cross_entropy(sims / temperature - is_self * _LARGE_NUM, positive, decoupled=True)


def nt_logistic(z1: jax.Array, z2: jax.Array, *, temperature: float,
                axis_name: Optional[str] = None) -> jax.Array:
  """SimCLR's NT-Logistic loss (its table 2), per anchor
  ``-log sigmoid(s_pos / tau) - mean_neg log sigmoid(-s_neg / tau)``: a binary
  logistic regression of the positive against each of the 2N - 2 negatives of the
  global batch, cosine similarities over the temperature. How the negatives weigh
  is this library's choice: their mean (the positive and the negatives count
  alike), none mined (the paper's "sh" rows use semi-hard negative mining). The
  mean over the 2N anchors (``nt_xent``'s arguments and global contract).
  """
  log_sigmoid = jax.nn.log_sigmoid
  return _mean_over_negatives(z1, z2, axis_name, lambda pos, neg: (
      -log_sigmoid(pos / temperature) - log_sigmoid(-neg / temperature)))


def margin_triplet(z1: jax.Array, z2: jax.Array, *, margin: float,
                   axis_name: Optional[str] = None) -> jax.Array:
  """SimCLR's margin triplet loss (its table 2), ``max(s_neg - s_pos + m, 0)``
  with cosine similarities (no temperature, as the paper writes it), averaged
  over each anchor's 2N - 2 negatives of the global batch (none mined) and over
  the 2N anchors (``nt_xent``'s global contract).
  """
  return _mean_over_negatives(z1, z2, axis_name,
                              lambda pos, neg: jax.nn.relu(neg - pos + margin))


def supcon_loss(z1: jax.Array, z2: jax.Array, labels: jax.Array, *, temperature: float,
                axis_name: Optional[str] = None) -> jax.Array:
  """SupCon's L_out: every other view of the anchor's class in the global batch is
  a positive, ``-1/|P(i)| sum_{p in P(i)} log softmax_p(z_i . z_a / tau, a != i)``,
  averaged over this device's 2n anchors. With distinct labels it is NT-Xent.

  Args:
    z1, z2: projections of the two views of the local n images, (n, d);
      normalised here.
    labels: the images' classes, (n,).
    temperature: tau (0.1 in the paper).
    axis_name: mesh axis over which the global batch is sharded, or None.
  """
  sims, is_self, _ = _two_view_similarities(z1, z2, axis_name)
  log_prob = jax.nn.log_softmax(sims / temperature - is_self * _LARGE_NUM, axis=-1)
  labels_all = jnp.tile(parallel.gather(labels, axis_name), 2)
  positive = (jnp.tile(labels, 2)[:, None] == labels_all[None, :]) * (1.0 - is_self)
  per_anchor = -jnp.sum(positive * log_prob, axis=-1) / jnp.sum(positive, axis=-1)
  return jnp.mean(per_anchor)


def moco_infonce(q: jax.Array, k: jax.Array, queue: jax.Array, *,
                 temperature: float) -> jax.Array:
  """MoCo v1 / v2's InfoNCE against a queue of negative keys.

  Args:
    q: queries, (n, c); they carry the gradient.
    k: the positive key of each query, (n, c); row i is query i's positive.
    queue: negative keys from earlier batches, (K, c).
    temperature: tau (0.07 in MoCo v1, 0.2 in v2).

  Returns:
    The mean over the n queries of cross-entropy(``[q.k, q.queue^T] / tau``, 0):
    the positive is logit 0, the K queue entries are the negatives. All rows
    are L2-normalised here. The loss is local to the queries given, so
    ``lax.pmean`` of it over a mesh is the loss of the global batch.
  """
  q, k, queue = l2_normalize(q), l2_normalize(k), l2_normalize(queue)
  positive = jnp.sum(q * k, axis=-1, keepdims=True)
  logits = jnp.concatenate([positive, q @ queue.T], axis=1) / temperature
  return _cross_entropy(logits, jnp.zeros(q.shape[0], jnp.int32))


def moco_v3_ctr(q: jax.Array, k: jax.Array, *, temperature: float,
                axis_name: Optional[str] = None, decoupled: bool = False) -> jax.Array:
  """MoCo v3's contrastive loss ``ctr(q, k)`` with the keys of the global batch.

  Args:
    q: predictions of one view, (n, c).
    k: momentum-encoder keys of the other view of the same n images, (n, c).
    temperature: tau (1.0 for ResNet-50, 0.2 for ViT in MoCo v3).
    axis_name: mesh axis over which the global batch is sharded, or None.
    decoupled: DCL's form (Yeh et al. 2022, as ``dcl``): each query's own key
      left out of the softmax's denominator, ``-q.k_i / tau + log sum_{j != i}
      exp(q.k_j / tau)``, still times 2 tau.

  Returns:
    ``2 tau * CE(q . k_all^T / tau, labels)``, where ``k_all`` is ``k``
    gathered over ``axis_name`` (or ``k`` itself) and each query's label is
    the row of its own key in ``k_all``; averaged over the local queries, so
    that ``lax.pmean`` over the mesh is the single-device loss of the global
    batch. The factor 2 tau is MoCo v3's, making the gradient scale roughly
    independent of tau. Rows are L2-normalised here.
  """
  return 2.0 * temperature * _contrast(q, k, temperature, axis_name, decoupled)


def nnclr_loss(nn: jax.Array, p: jax.Array, *, temperature: float,
               axis_name: Optional[str] = None) -> jax.Array:
  """NNCLR's ``L(nn, p)``: cross-entropy of ``nn_i . p_j / tau`` over the
  predictions ``p_j`` of the global batch, the positive being ``p_i``; the mean
  over the local rows.

  Args:
    nn: the nearest neighbours of one view's projections, (n, d).
    p: the other view's predictions of the same n images, (n, d); gathered over
      ``axis_name`` (and differentiated through the gather).
  """
  return _contrast(nn, p, temperature, axis_name)


def cpc_infonce(predictions: Sequence[jax.Array], targets: jax.Array, *,
                offsets: Sequence[int], axis_name: Optional[str] = None) -> jax.Array:
  """CPC's InfoNCE over a grid of patch embeddings (Hénaff et al. 2019, eq. 2).

  Args:
    predictions: one [n, gh, gw, d] array per offset k of ``offsets``: entry
      (b, i, j) is the prediction of the embedding k rows below, z_{b, i+k, j}.
    targets: the patch embeddings z, [n, gh, gw, d]. Every patch of every image
      of the global batch is a candidate (gathered over ``axis_name`` and
      differentiated through the gather): n N gh gw candidates, one positive.
    offsets: the prediction lengths k >= 1 (each < gh).

  Returns:
    sum over k of the mean over the anchors (b, i, j), i < gh - k, of
    ``-log softmax_l(p_{b,i,j} . z_l)_{(b, i+k, j)}``: dot products, no
    normalisation and no temperature (CPC's). With ``axis_name``, the means are over
    this device's anchors (every device has as many), so pmean gives the loss.
  """
  n, gh, gw, d = targets.shape
  candidates = parallel.gather(targets.reshape(-1, d), axis_name)
  image = parallel.first_row(n, axis_name) + jnp.arange(n)  # rows of the global batch
  total = 0.0
  for k, p in zip(offsets, predictions, strict=True):
    if not 0 < k < gh:
      raise ValueError(f"CPC offset {k} needs 0 < k < {gh} grid rows.")
    rows, cols = jnp.arange(gh - k), jnp.arange(gw)
    labels = (image[:, None, None] * gh + rows[None, :, None] + k) * gw + cols[None, None, :]
    anchors = p[:, :gh - k].reshape(-1, d)
    total += _cross_entropy(anchors @ candidates.T, labels.reshape(-1))
  return total


# ----------------------------------------------------- regression onto a target


def byol_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
  """BYOL's symmetric ``l(p1, z2) + l(p2, z1)``, in [0, 8], where
  ``l(p, z) = mean_i || p_i/|p_i| - z_i/|z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))``;
  the targets ``z`` are not differentiated."""
  normalized_mse = lambda p, z: jnp.mean(2.0 - 2.0 * cosine(p, lax.stop_gradient(z)))
  return normalized_mse(p1, z2) + normalized_mse(p2, z1)


def simsiam_loss(p1: jax.Array, p2: jax.Array, z1: jax.Array, z2: jax.Array) -> jax.Array:
  """SimSiam's symmetric ``D(p1, z2) / 2 + D(p2, z1) / 2``, in [-1, 1], where
  ``D(p, z) = -mean_i cos(p_i, z_i)``; the projections ``z`` are not differentiated."""
  negative_cosine = lambda p, z: -jnp.mean(cosine(p, lax.stop_gradient(z)))
  return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


# ------------------------------------------------------- redundancy reduction


def global_moments(z: jax.Array, axis_name: Optional[str]) -> tuple[jax.Array, jax.Array]:
  """Per-dimension mean and (biased) variance of ``z`` over the global batch."""
  z = z.astype(jnp.float32)
  mean = parallel.pmean(jnp.mean(z, axis=0), axis_name)
  return mean, parallel.pmean(jnp.mean(jnp.square(z - mean), axis=0), axis_name)


def cross_correlation(z1: jax.Array, z2: jax.Array, axis_name: Optional[str],
                      eps: float = 1e-5) -> jax.Array:
  """Barlow Twins' ``C`` (d x d) over the global batch of the projections, each
  dimension standardised over the global batch (a BatchNorm without scale and
  offset, as the paper applies before ``C``)."""

  def standardize(z):
    mean, var = global_moments(z, axis_name)
    return (z.astype(jnp.float32) - mean) * lax.rsqrt(var + eps)

  n = z1.shape[0] * parallel.axis_size(axis_name)
  return parallel.psum(standardize(z1).T @ standardize(z2), axis_name) / n


def _off_diagonal_squares(c: jax.Array) -> jax.Array:
  """``sum_{i != j} c_ij^2`` of a square matrix."""
  return jnp.sum(jnp.square(c)) - jnp.sum(jnp.square(jnp.diagonal(c)))


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, *, lambd: float,
                      axis_name: Optional[str] = None) -> jax.Array:
  """``sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2``; the same value on every
  device, the loss of the global batch."""
  c = cross_correlation(z1, z2, axis_name)
  return jnp.sum(jnp.square(1.0 - jnp.diagonal(c))) + lambd * _off_diagonal_squares(c)


def vicreg(z1: jax.Array, z2: jax.Array, *, sim_coeff: float = 25.0, std_coeff: float = 25.0,
           cov_coeff: float = 1.0, eps: float = 1e-4,
           axis_name: Optional[str] = None) -> jax.Array:
  """VICReg's loss (Bardes et al. 2022): invariance, variance and covariance.

      sim_coeff mean((z1 - z2)^2)
      + std_coeff [mean_i relu(1 - sqrt(Var(z1)_i + eps)) + same for z2] / 2
      + cov_coeff [sum_{i != j} C(z1)_ij^2 / d + same for z2],

  with the variance and the covariance C (d x d) of each dimension taken over
  the batch with denominator n - 1, as the reference code's ``torch.var``. The
  variance term keeps every dimension's standard deviation up to 1 (no collapse),
  the covariance term decorrelates the dimensions; eps keeps the square root's
  gradient finite at zero variance. The paper's coefficients are the defaults.

  Args:
    z1, z2: projections of the two views of the local n images, (n, d); not
      normalised (VICReg regresses the raw projections).
    axis_name: mesh axis of the batch, or None. With it, every term is over the
      global batch of N rows: the mean through ``pmean``, the sums of the
      covariance through ``psum``, so every device returns the same value, the
      single-device loss of the concatenated batch, and the gradients flow back
      through the collectives to every device's rows.
  """
  z1, z2 = z1.astype(jnp.float32), z2.astype(jnp.float32)
  n = z1.shape[0] * parallel.axis_size(axis_name)

  def variance_and_covariance_terms(z):
    centred = z - parallel.pmean(jnp.mean(z, axis=0), axis_name)
    c = parallel.psum(centred.T @ centred, axis_name) / (n - 1)
    std = jnp.sqrt(jnp.diagonal(c) + eps)
    return jnp.mean(jax.nn.relu(1.0 - std)), _off_diagonal_squares(c) / z.shape[1]

  (var1, cov1), (var2, cov2) = map(variance_and_covariance_terms, (z1, z2))
  invariance = parallel.pmean(jnp.mean(jnp.square(z1 - z2)), axis_name)
  return sim_coeff * invariance + std_coeff * (var1 + var2) / 2 + cov_coeff * (cov1 + cov2)


# -------------------------------------------- cross-entropy against other crops


def _other_crops_entropy(targets: list[jax.Array], logits: list[jax.Array],
                         temperature: float) -> jax.Array:
  """Mean over the pairs (i, v != i) of ``-sum_k t_ik log softmax(l_v / tau)_k``,
  averaged over the n local samples: ``targets[i]`` (n, K) belong to crops 0..,
  the first of ``logits``' crops."""
  log_p = [jax.nn.log_softmax(s.astype(jnp.float32) / temperature) for s in logits]
  pairs = [jnp.mean(jnp.sum(-t * lp, axis=-1))
           for i, t in enumerate(targets) for v, lp in enumerate(log_p) if v != i]
  return sum(pairs) / len(pairs)


def sinkhorn(scores: jax.Array, *, epsilon: float, num_iters: int,
             axis_name: Optional[str] = None,
             weights: Optional[jax.Array] = None) -> jax.Array:
  """SwAV's equal-partition soft codes of the samples of the global batch
  (Sinkhorn-Knopp).

  Args:
    scores: this device's samples' prototype scores, (n, K).
    epsilon: entropy weight; ``Q = exp(scores / epsilon)`` before balancing.
    num_iters: alternations of "every prototype holds 1/K of the mass" and
      "every sample holds 1/B" (B: samples of the global batch).
    axis_name: mesh axis of the batch; the sums over samples run across it.
    weights: 1 for samples to partition, 0 for rows to leave out (an unfilled
      queue), (n,); default all ones.

  Returns:
    The codes, (n, K): each counted sample's row sums to 1, and summed over the
    global batch each prototype receives B / K; no gradient.
  """
  scores = lax.stop_gradient(scores.astype(jnp.float32))
  if weights is None:
    weights = jnp.ones(scores.shape[0], jnp.float32)
  # Shifting by the global max changes nothing after normalising; it keeps exp finite.
  top = jnp.max(scores) if axis_name is None else lax.pmax(jnp.max(scores), axis_name)
  q = jnp.exp((scores - top) / epsilon) * weights[:, None]
  num_samples, num_prototypes = parallel.psum(jnp.sum(weights), axis_name), scores.shape[1]
  q = q / parallel.psum(jnp.sum(q), axis_name)
  for _ in range(num_iters):
    q = q / (parallel.psum(jnp.sum(q, axis=0), axis_name) * num_prototypes)
    per_sample = jnp.sum(q, axis=1, keepdims=True)
    q = q / (jnp.where(per_sample > 0, per_sample, 1.0) * num_samples)
  return q * num_samples


def swapped_prediction(codes: list[jax.Array], scores: list[jax.Array], *,
                       temperature: float) -> jax.Array:
  """SwAV's loss: every crop predicts the codes of every *other* assigned crop.

  ``codes[i]`` (n, K) are crop i's codes (crops 0.. len(codes)-1 are the large
  ones); ``scores[v]`` (n, K) crop v's prototype scores. The mean over the
  (i, v != i) pairs of the cross-entropy ``-sum_k q_k log softmax(scores /
  temperature)_k``, averaged over the n local samples (``pmean`` over the mesh
  gives the global batch's).
  """
  return _other_crops_entropy(codes, scores, temperature)


def dino_loss(student: list[jax.Array], teacher_probs: list[jax.Array], *,
              student_temp: float) -> jax.Array:
  """DINO's cross-entropy of every student crop against every teacher crop but its own.

  ``teacher_probs[i]`` (n, K): the centred, sharpened teacher distribution of
  large crop i; ``student[v]`` (n, K): student logits of crop v (crops
  0..len(teacher_probs)-1 are the same large crops). Mean over the (i, v != i)
  pairs of ``-sum_k p_k log softmax(s / student_temp)_k``, averaged over the n
  local samples (``pmean`` over the mesh gives the global batch's).
  """
  return _other_crops_entropy(teacher_probs, student, student_temp)
