"""Orbax checkpoints of a run: train state (params, optimizer, step) and the data iterator.

Saves are atomic (orbax writes to a temporary folder, then renames), so an interrupted save
never replaces the last good checkpoint. A SIGTERM (a preempted TPU VM) asks the loop to save
and stop at the next step boundary.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

PyTree = Any


def manager(directory: str | Path, *, save_every: int, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep, create=True,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(
      Path(directory).absolute(), options=options,
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})


def save(mgr: ocp.CheckpointManager, step: int, state: PyTree, data_iterator, *, force: bool = False) -> bool:
  saved = mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=grain.checkpoint.CheckpointSave(data_iterator)),
                   force=force)
  mgr.wait_until_finished()
  return saved


def restore(mgr: ocp.CheckpointManager, abstract_state: PyTree, data_iterator) -> tuple[int, PyTree] | None:
  """(step, state) of the latest checkpoint, placed with `abstract_state`'s shardings; the data
  iterator is rewound in place. None when the directory holds no checkpoint."""
  step = mgr.latest_step()
  if step is None:
    return None
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iterator)))
  except (ValueError, KeyError, OSError) as e:  # orbax's messages name internals, not the remedy
    earlier = [s for s in mgr.all_steps() if s < step]
    remedy = (f"to resume from step {max(earlier)}, move step {step}'s folder out of the way" if earlier
              else "use another workdir to start afresh")
    raise ValueError(f"checkpoint step {step} in {str(mgr.directory)!r} cannot be restored (corrupt, partial, or "
                     f"from another config?): {e}\nNothing was deleted; {remedy}") from e
  return step, restored["state"]


def abstract_like(state: PyTree) -> PyTree:
  """ShapeDtypeStructs (with shardings) of a live state: the target a restore fills."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


class PreemptionFlag:
  """Set by SIGTERM (and SIGINT); the training loop checks it at every step boundary."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = {}

  def __enter__(self) -> "PreemptionFlag":
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, lambda *_: self._event.set())
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  @property
  def is_set(self) -> bool:
    return self._event.is_set()

  def set(self) -> None:
    self._event.set()
