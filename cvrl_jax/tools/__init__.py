"""Command-line tools on runs: ``export`` (encoder to .npz / .safetensors / torchvision
.pt), ``report`` (final metrics as a table), ``visualize`` (augmentation and
retrieval pictures), ``digits_folder`` (a real transfer dataset as an image folder).
Each runs as ``python -m cvrl_jax.tools.NAME``."""
