"""XLA flags for the test process and the ones tests start. Tests compile hundreds of small programs
and run each a few times, so LLVM's optimisation of the CPU kernels costs more than it saves:
without it a compile-heavy slice of the suite ran 1.4x faster. Large matmuls are library calls
either way, and the HLO passes (fusion, layout, sharding) still run: the programs tested are the
same ones."""

FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def for_devices(count: int) -> str:
  """XLA_FLAGS for a process with `count` simulated CPU devices."""
  return f"--xla_force_host_platform_device_count={count} {FAST_COMPILE}"
