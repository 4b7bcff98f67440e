"""``python -m cvrl_jax.evaluation.digits_folder``, kept working: the tool is
``cvrl_jax.tools.digits_folder``."""

import runpy

if __name__ == "__main__":
  runpy.run_module("cvrl_jax.tools.digits_folder", run_name="__main__", alter_sys=True)
