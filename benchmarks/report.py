"""How a benchmark shows one result: a key / value table on stdout, and JSON if asked.

Plain Python (no JAX, no torch), so every benchmark, the PyTorch peer included,
reports alike.
"""

import json


def emit(result: dict, json_out: str | None) -> None:
  width = max(map(len, result))
  for k, v in result.items():
    print(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}")
  if json_out:
    with open(json_out, "w") as f:
      json.dump(result, f, indent=2)
