"""The weighted kNN classifier against a hand-worked case and its padding rule."""

import numpy as np
import pytest

from cvrl_jax.evaluation import knn


def test_weighted_vote_hand_worked():
  bank = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], np.float32)
  labels = np.array([0, 1, 1])
  query = np.array([[1.0, 0.1]], np.float32)
  scores = np.asarray(knn.knn_predict(query, bank, labels, num_classes=2, k=3,
                                      temperature=0.1))
  q = query[0] / np.linalg.norm(query[0])
  w = np.exp(bank @ q / 0.1)
  np.testing.assert_allclose(scores[0], [w[0], w[1] + w[2]], rtol=1e-5)
  # With k=1 only the nearest (class 0) votes.
  top1 = np.asarray(knn.knn_predict(query, bank, labels, num_classes=2, k=1))
  assert top1[0, 1] == 0 and top1[0, 0] > 0


def test_padding_rows_never_vote_or_count():
  bank = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]], np.float32)
  bank_labels = np.array([0, -1, 1])  # the padded row sits nearest to the query
  queries = np.array([[1.0, 0.0], [5.0, 5.0]], np.float32)
  acc = knn.knn_top1(queries, np.array([0, -1]), bank, bank_labels, num_classes=2, k=1)
  assert acc == pytest.approx(100.0)


def test_separable_clusters_are_classified():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(3, 16)) * 5
  bank_labels = rng.integers(0, 3, 300)
  bank = centres[bank_labels] + rng.normal(size=(300, 16))
  q_labels = rng.integers(0, 3, 50)
  queries = centres[q_labels] + rng.normal(size=(50, 16))
  assert knn.knn_top1(queries, q_labels, bank, bank_labels, num_classes=3, k=20) > 95
  assert knn.knn_top1(queries, (q_labels + 1) % 3, bank, bank_labels, num_classes=3) < 5
