"""``python -m cvrl_jax.export``, kept working: the tool is ``cvrl_jax.tools.export``."""

from cvrl_jax.tools import export

if __name__ == "__main__":
  export.cli()
