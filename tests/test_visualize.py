"""Pictures: grid geometry, augmented views from the training functions, retrieval."""

import os

import numpy as np
import pytest
from conftest import SHARED_TFDS
from helpers import fake_workdir

from configs import moco_v3, simclr_v2
from cvrl_jax.tools import export, visualize


def test_grid_has_the_computed_size_borders_and_pixels(tmp_path):
  tiles = np.random.default_rng(0).uniform(0, 1, (2, 3, 8, 8, 3))
  borders = [[visualize.QUERY, visualize.MATCH, visualize.MISMATCH]] * 2
  picture = visualize.grid(tiles, ["a", "b", "c"], borders, [["x"] * 3] * 2, scale=2)
  assert picture.size == visualize.grid_size(2, 3, 16, captions=True)
  assert picture.size == (3 * (16 + 6 + 4) + 4, 15 + 2 * (16 + 6 + 13 + 4) + 4)
  pixels = np.asarray(picture)
  x0, y0 = visualize.GAP, visualize.HEADER + visualize.GAP  # top-left tile, its frame
  assert tuple(pixels[y0, x0]) == visualize.QUERY
  tile = pixels[y0 + 3:y0 + 3 + 16:2, x0 + 3:x0 + 3 + 16:2]  # nearest-upscaled by 2
  np.testing.assert_array_equal(tile, np.round(tiles[0, 0] * 255).astype(np.uint8))
  path = str(tmp_path / "sub" / "grid.png")
  visualize.save_png(picture, path)
  assert visualize.Image.open(path).size == picture.size


@pytest.mark.parametrize("get_config", [lambda: simclr_v2.get_config("cpu"),
                                        lambda: moco_v3.get_config("cpu")],
                         ids=["simclr_v2", "moco_v3"])  # one view policy, two
def test_augmented_views_are_the_training_views(get_config):
  config = get_config()
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  tiles, headers = visualize.augmented_views(images, config, num_views=3, seed=1)
  assert tiles.shape == (2, 4, 32, 32, 3) and headers == ["image", "view 1", "view 2", "view 3"]
  np.testing.assert_allclose(tiles[:, 0], images / 255.0, atol=1e-6)  # the image as it is
  assert 0 <= tiles.min() and tiles.max() <= 1
  assert not np.allclose(tiles[:, 1], tiles[:, 2])  # views differ
  again, _ = visualize.augmented_views(images, config, num_views=3, seed=1)
  np.testing.assert_array_equal(tiles, again)  # stateless seeds: the same picture


def test_nearest_and_retrieval_tiles_mark_matches():
  bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [-1.0, 0.0]])
  idx, sim = visualize.nearest(np.array([[2.0, 0.1]]), bank, k=3)
  assert idx.tolist() == [[0, 2, 1]] and sim[0, 0] > sim[0, 1] > sim[0, 2]

  images = np.zeros((2, 3, 4, 4, 3))
  tiles, headers, borders, captions = visualize.retrieval_tiles(
      np.ones((2, 4, 4, 3)), np.array([0, 1]), images, np.array([[0, 1, 0], [0, 1, 1]]),
      ["cat", "dog"])
  assert tiles.shape == (2, 4, 4, 4, 3) and headers == ["query", "1", "2", "3"]
  M, X = visualize.MATCH, visualize.MISMATCH
  assert borders == [[visualize.QUERY, M, X, M], [visualize.QUERY, X, M, M]]
  assert captions[1] == ["dog", "cat", "dog", "dog"]


@pytest.mark.skipif(not os.path.isdir(SHARED_TFDS), reason="needs ../shared/tfds (CIFAR-10)")
def test_retrieval_picture_from_a_workdir(tmp_path):
  workdir, _, _ = fake_workdir(tmp_path, width=0.125)
  run = export.restore_run(workdir)
  run.config.data_dir = SHARED_TFDS
  picture = visualize.retrieval_picture(run, num_queries=2, k=3, bank_size=40, query_pool=20,
                                        batch=16, scale=1)
  assert picture.size == visualize.grid_size(2, 4, 32, captions=True)
  # Neighbour frames are green or red only.
  pixels = np.asarray(picture)
  x = visualize.GAP + (32 + 2 * visualize.BORDER + visualize.GAP)  # second column
  assert tuple(pixels[visualize.HEADER + visualize.GAP, x]) in (visualize.MATCH,
                                                                visualize.MISMATCH)
