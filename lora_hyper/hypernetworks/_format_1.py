"""Saved hypernetwork folders of format 1 (before the experimental options moved into their own
sub-config and the code statistics out of the params), read into format 2's layout.

Format 1 kept Doc-to-LoRA's options as flat config fields whose defaults were our additions
(`normalize_features=True`, `center_momentum=0.9`), the running code centre as params
(`center_ema`, `center_weight`) and the chunk gates inside the heads (`heads_<m>/gate_w`, `gate_b`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

PARAMS_FILE = "params.safetensors"

# Format 1's defaults for the fields that now live in `Experimental`.
_EXPERIMENTAL_DEFAULTS = {"normalize_features": True, "center_momentum": 0.9, "zero_b_init": "scale",
                          "generated_factors": "ab", "chunk_gate": False, "chunk_gate_cut": False}
# Options removed since: a folder that uses one cannot be read by this version.
_REMOVED = {"lookahead": 0}


def upgrade_config(kind: str, config: Mapping[str, Any], where: str) -> dict[str, Any]:
  """A format-1 config dict -> format 2's."""
  config = dict(config)
  if kind != "doc_to_lora":
    return config
  for name, off in _REMOVED.items():
    value = config.pop(name, off)
    if value != off:
      raise ValueError(f"{where}: this hypernetwork uses {name}={value!r}, an experimental option "
                       "that lora-hyper no longer has (experiments/qa/README.md has the runs that used it)")
  experimental = {name: config.pop(name, default) for name, default in _EXPERIMENTAL_DEFAULTS.items()}
  if experimental["generated_factors"] == "b+a":
    raise ValueError(f"{where}: this hypernetwork uses generated_factors='b+a', an experimental option that "
                     "lora-hyper no longer has (experiments/qa/README.md has the runs that used it)")
  return {**config, "experimental": experimental}


def upgrade_variables(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Format-1 params (flat '/'-joined names) -> format 2's variables (names led by their collection)."""
  out = {}
  for name, value in flat.items():
    parts = name.split("/")
    if parts == ["center_ema"]:
      out["code_stats/centre/ema"] = value
    elif parts == ["center_weight"]:
      out["code_stats/centre/weight"] = value.reshape(())
    elif len(parts) == 2 and parts[0].startswith("heads_") and parts[1] in ("gate_w", "gate_b"):
      module = parts[0].removeprefix("heads_")
      out[f"params/gates_{module}/{'w' if parts[1] == 'gate_w' else 'c'}"] = value
    else:
      out[f"params/{name}"] = value
  return out
