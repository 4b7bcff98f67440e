"""``python -m cvrl_jax.evaluation.digits_folder``, kept working: the tool is
``cvrl_jax.tools.digits_folder``."""

from cvrl_jax.tools import digits_folder

if __name__ == "__main__":
  digits_folder.cli()
