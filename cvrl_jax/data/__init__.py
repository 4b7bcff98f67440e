"""Input data: ``sources`` (TFDS datasets by name, image folders), ``pipeline``
(the tf.data streams of every run), ``augment`` (tf.image augmentations),
``device_augment`` (their colour part in JAX, in the train step), ``subsets``
(labelled fractions).

Imports nothing itself: ``device_augment`` must load without TensorFlow.
"""
