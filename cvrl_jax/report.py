"""``python -m cvrl_jax.report``, kept working: the tool is ``cvrl_jax.tools.report``."""

import runpy

if __name__ == "__main__":
  runpy.run_module("cvrl_jax.tools.report", run_name="__main__", alter_sys=True)
