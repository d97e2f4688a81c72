"""Every pod config's train step, as shipped, compiled for the TPU topology its header names (on
this CPU, with libtpu from the `tpu-compile` extra): it fits the chip's HBM and nothing big is
held whole by every chip. The table of every recipe is `python -m benchmarks.tpu_compile`
(benchmarks/README.md); that the per-chip share falls with the data axis is
sharding_scaling_test.py, on this machine's 8 CPU devices."""

import pytest

from lora_hyper.training import aot

from aot_test import POD_CONFIGS, ROOT, _clear_gin  # noqa: F401  (an autouse fixture: gin cleared after each test)

pytestmark = pytest.mark.tpu_compile


@pytest.mark.parametrize("gin_file", POD_CONFIGS)
def test_shipped_pod_config_fits_its_topology(gin_file):
  [plan] = [p for p in aot.pod_plans(str(ROOT / gin_file)) if p.shipped]
  _, memory = aot.check_plan(plan, "gemma2_2b")
  assert memory.compiled and memory.fits, memory.describe()
  assert memory.replicated == (), memory.describe()
  assert memory.flops > 0 and memory.step_seconds() > 0

