"""``python -m cvrl_jax.visualize``, kept working: the tool is ``cvrl_jax.tools.visualize``."""

from cvrl_jax.tools import visualize

if __name__ == "__main__":
  visualize.cli()
