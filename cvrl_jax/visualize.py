"""``python -m cvrl_jax.visualize``, kept working: the tool is ``cvrl_jax.tools.visualize``."""

import runpy

if __name__ == "__main__":
  runpy.run_module("cvrl_jax.tools.visualize", run_name="__main__", alter_sys=True)
