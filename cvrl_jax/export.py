"""``python -m cvrl_jax.export``, kept working: the tool is ``cvrl_jax.tools.export``."""

import runpy

if __name__ == "__main__":
  runpy.run_module("cvrl_jax.tools.export", run_name="__main__", alter_sys=True)
