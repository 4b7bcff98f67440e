"""``python -m cvrl_jax.report``, kept working: the tool is ``cvrl_jax.tools.report``."""

from cvrl_jax.tools import report

if __name__ == "__main__":
  report.cli()
