"""Orbax checkpoints of a run: train state (params, optimizer, step) and the data iterator.

Saves are atomic (orbax writes to a temporary folder, then renames), so an interrupted save
never replaces the last good checkpoint; the temporary folders such a save leaves are removed
when the next run opens the directory. A SIGTERM (a preempted TPU VM) asks the loop to save
and stop at the next step boundary.

Every save records a digest of the state's bits in the step's metadata and refuses a state with
NaN or infinite values; a restore checks both, so bytes damaged on disk are named at the restore
instead of turning into a NaN loss steps later.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any, Iterator

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from lora_hyper import files
from lora_hyper.errors import CheckpointError, NonFiniteLossError

PyTree = Any

_DIGEST_KEY = "lora_hyper_state_digest"  # in each step's custom metadata: {leaf path: digest}
_RESUME_FLAG = "resume_from_previous=True (--resume-from-previous)"


class _SkippingNameFormat(ocp.step.NameFormat):
  """orbax's standard step names, with the unreadable steps a resume went back past left out of
  the listing: the manager then saves, counts and prunes as if they were not there."""

  def __init__(self):
    self.inner = ocp.step.standard_name_format()
    self.skipped: set[int] = set()

  def build_name(self, step: int) -> str:
    return self.inner.build_name(step)

  def find_all(self, base_path) -> Iterator[Any]:
    return (m for m in self.inner.find_all(base_path) if m.step not in self.skipped)

  def find_step(self, base_path, step: int) -> Any:
    return self.inner.find_step(base_path, step)


class Manager(ocp.CheckpointManager):
  """orbax's manager of a run's checkpoints; `names.skipped` holds the steps a resume went back past."""

  def __init__(self, directory: epath.Path, *, save_every: int, keep: int):
    self.names = _SkippingNameFormat()
    options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False, step_name_format=self.names)
    super().__init__(directory, options=options, item_handlers={
        "state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})


def workdir_path(path: str | os.PathLike) -> epath.Path:
  """A run's folder: a URL (gs://bucket/run) as it is, a local path made absolute. pathlib would
  turn gs://bucket/run into <cwd>/gs:/bucket/run, a local folder on each host."""
  return epath.Path(os.fspath(path) if files.is_url(path) else os.path.abspath(path))


def checkpoint_dir(workdir: str | os.PathLike) -> epath.Path:
  """Where a run in `workdir` keeps its checkpoints."""
  return workdir_path(workdir) / "checkpoints"


def manager(directory: str | os.PathLike, *, save_every: int, keep: int) -> Manager:
  """A manager of `directory` (a local path or a URL such as gs://bucket/run/checkpoints); first
  (process 0) removes the temporary folders of saves a killed run never finished."""
  directory = workdir_path(directory)
  _remove_unfinished_saves(directory)
  return Manager(directory, save_every=save_every, keep=keep)


def check_shared_workdir(workdir: str | os.PathLike) -> None:
  """Raises a ValueError, on every process, when some process does not see the folder process 0
  writes to: orbax's saves are collective, and with one local folder per host the first save would
  crash (after a whole save interval). Process 0 writes a file named by a nonce it broadcasts; the
  others look for it. A no-op with one process."""
  if jax.process_count() == 1:
    return
  workdir = workdir_path(workdir)
  nonce = np.asarray(multihost_utils.broadcast_one_to_all(np.frombuffer(os.urandom(16), np.uint32))).tobytes().hex()
  marker = workdir / f".shared-check-{nonce}"
  written = None
  if jax.process_index() == 0:
    try:
      workdir.mkdir(parents=True, exist_ok=True)
      marker.write_text(nonce)
    except OSError as e:
      written = e
  multihost_utils.sync_global_devices("lora_hyper: shared workdir marker written")
  seen = written is None and _read_or_none(marker) == nonce
  blind = [i for i, ok in enumerate(multihost_utils.process_allgather(np.asarray(seen))) if not ok]
  if jax.process_index() == 0 and written is None:
    marker.unlink(missing_ok=True)
  if written is not None:
    raise written
  if 0 in blind:
    raise ValueError(f"process 0 could not write to workdir {str(workdir)!r}: its log says why")
  if blind:
    raise ValueError(f"workdir {str(workdir)!r} is not shared by every host: process(es) {blind} of "
                     f"{jax.process_count()} do not see the file process 0 wrote there. Every host must see the same "
                     "folder: use gs://bucket/... or a mount that every host shares (OUTPUT_DIR in tpu_launch.sh)")


def _read_or_none(path: epath.Path) -> str | None:
  try:
    return path.read_text()
  except OSError:
    return None


def _remove_unfinished_saves(directory: epath.Path) -> None:
  if jax.process_index() != 0 or not directory.is_dir():
    return
  leftovers = sorted((p for p in directory.iterdir() if ocp.step.TMP_DIR_SUFFIX in p.name), key=lambda p: p.name)
  for path in leftovers:
    if path.is_dir():
      path.rmtree()
    else:
      path.unlink()
  if leftovers:
    print(f"[lora-hyper] removed {len(leftovers)} unfinished checkpoint save(s) an interrupted run left in "
          f"{directory}: {', '.join(p.name for p in leftovers)}", flush=True)


def save(mgr: Manager, step: int, state: PyTree, data_iterator, *, force: bool = False) -> bool:
  """Saves `step` when it is due (every `save_every` steps) or `force`d; False when not due.

  Raises NonFiniteLossError, saving nothing, when the state holds NaN or infinite values. A step
  that a `resume_from_previous` restore found unreadable is replaced when this run saves that step.
  """
  if not (force or mgr.should_save(step)):
    return False
  digest, non_finite = _inspect(state)
  if non_finite:
    kept = mgr.latest_step()
    kept = f"checkpoint step {kept} is kept" if kept is not None else "no checkpoint had been saved yet"
    raise NonFiniteLossError(f"the train state after step {step} holds NaN or infinite values in "
                             f"{_names(non_finite)}; it was not saved and {kept}")
  if step in mgr.names.skipped:  # the user chose to go back past it: this save replaces it
    mgr.names.skipped.discard(step)
    mgr.reload()
    mgr.delete(step)
  saved = mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=grain.checkpoint.CheckpointSave(data_iterator)),
                   force=True, custom_metadata={_DIGEST_KEY: digest})
  mgr.wait_until_finished()
  return saved


def restore(mgr: Manager, abstract_state: PyTree, data_iterator, *,
            resume_from_previous: bool = False) -> tuple[int, PyTree] | None:
  """(step, state) of the latest checkpoint, placed with `abstract_state`'s shardings; the data
  iterator is rewound in place. None when the directory holds no checkpoint.

  A checkpoint that orbax cannot read, whose arrays differ from the digest saved with them, or
  that holds NaN or infinite values raises CheckpointError (nothing is deleted). With
  `resume_from_previous` the newest earlier step that restores is used instead; the unreadable
  newer steps stay on disk, out of the manager's listing, until this run saves the same step.
  """
  steps = sorted(mgr.all_steps(), reverse=True)
  if not steps:
    return None
  directory = str(mgr.directory)
  unreadable: list[tuple[int, str]] = []
  for step in steps:
    state, problem = _try_restore(mgr, step, abstract_state, data_iterator)
    if problem is None:
      break
    unreadable.append((step, problem))
    if not resume_from_previous:
      earlier = [s for s in steps if s < step]
      remedy = (f"to resume from step {max(earlier)}, rerun with {_RESUME_FLAG} or move step {step}'s folder "
                "out of the way" if earlier else "use another workdir to start afresh")
      raise CheckpointError(f"checkpoint step {step} in {directory!r} cannot be restored (corrupt, partial, or from "
                            f"another config?): {problem}\nNothing was deleted; {remedy}")
  else:
    listed = "\n".join(f"  step {s}: {p}" for s, p in unreadable)
    raise CheckpointError(f"no checkpoint in {directory!r} can be restored (corrupt, partial, or from another "
                          f"config?):\n{listed}\nNothing was deleted; use another workdir to start afresh")
  if unreadable:
    mgr.names.skipped.update(s for s, _ in unreadable)
    mgr.reload()
    if jax.process_index() == 0:
      skipped = "; ".join(f"step {s} is unreadable ({p})" for s, p in unreadable)
      print(f"[lora-hyper] resuming from step {step}: {skipped}. Left in place; this run's save of the same step "
            "replaces it", flush=True)
  return step, state


def _try_restore(mgr: Manager, step: int, abstract_state: PyTree,
                 data_iterator) -> tuple[PyTree | None, str | None]:
  """(state, None), or (None, what is wrong with the step), agreed by every process."""
  state, problem = None, None
  try:
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=grain.checkpoint.CheckpointRestore(data_iterator)))
    state = restored["state"]
    saved = (mgr.metadata(step).custom_metadata or {}).get(_DIGEST_KEY)
    digest, non_finite = _inspect(state)
  except Exception as e:  # orbax raises bare Exceptions for damaged files, with messages naming internals
    problem = _describe(e)
  else:
    changed = sorted(k for k in digest if saved is not None and saved.get(k) != digest[k])
    if changed:
      problem = f"its bytes changed on disk after the save: {_names(changed)} differ from the saved digest"
    elif non_finite:
      problem = f"it holds NaN or infinite values in {_names(non_finite)}"
  if not _everywhere(problem is None):
    return None, problem or "another process could not restore it"
  return state, None


def _describe(e: BaseException) -> str:
  """The innermost cause's first line: tensorstore puts the reason there, its wrapper a spec dump."""
  while e.__cause__ is not None:
    e = e.__cause__
  first = (str(e).strip().splitlines() or [""])[0]
  return f"{type(e).__name__}: {first[:300]}"


def _names(paths: list[str]) -> str:
  return ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _everywhere(ok: bool) -> bool:
  """Every process takes the same branch, so none waits in a collective the others skipped."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


@jax.jit
def _leaf_checks(state: PyTree) -> tuple[PyTree, PyTree]:
  finite = lambda x: jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
  return jax.tree.map(_digest, state), jax.tree.map(finite, state)


def _inspect(state: PyTree) -> tuple[dict[str, int], list[str]]:
  """({leaf path: digest}, paths of leaves with NaN or infinite values), computed where the state lives."""
  digests, finite = jax.device_get(_leaf_checks(state))
  paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(digests)[0]]
  return ({p: int(d) for p, d in zip(paths, jax.tree.leaves(digests))},
          [p for p, ok in zip(paths, jax.tree.leaves(finite)) if not ok])


def _digest(x: jax.Array) -> jax.Array:
  """A wrapping sum of the array's bits, each word weighted by an odd number from its position:
  integer sums do not depend on reduction order (so not on sharding), and a change to any one
  word always changes the result."""
  if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    words = x.astype(jnp.uint32)
  elif x.dtype.itemsize == 8:
    words = jax.lax.bitcast_convert_type(x, jnp.uint32)  # a trailing axis of two words
  else:
    words = jax.lax.bitcast_convert_type(x, jnp.dtype(f"uint{8 * x.dtype.itemsize}")).astype(jnp.uint32)
  index, stride = jnp.zeros(words.shape, jnp.uint32), 1
  for axis in reversed(range(words.ndim)):  # the flat index, without a reshape that would move shards
    index = index + jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis) * jnp.uint32(stride % 2**32)
    stride *= words.shape[axis]
  return jnp.sum(words * (2 * index + 1), dtype=jnp.uint32)


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
