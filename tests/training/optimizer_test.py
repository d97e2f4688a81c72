"""Schedules, clipping and gradient accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lora_hyper.training.optimizer import OptimizerConfig, for_steps, learning_rate_schedule, make_optimizer


def test_warmup_then_cosine_to_the_end_rate():
  cfg = OptimizerConfig(learning_rate=1e-3, end_learning_rate=1e-5, warmup_steps=10, total_steps=110)
  lr = learning_rate_schedule(cfg)
  assert float(lr(0)) == 0.0 and float(lr(5)) == pytest.approx(5e-4)
  assert float(lr(10)) == pytest.approx(1e-3)
  assert float(lr(60)) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-3)
  assert float(lr(110)) == pytest.approx(1e-5)


def test_accumulation_equals_one_big_batch():
  """Two accumulated half-batch gradients give the update of the whole batch (mean losses)."""
  w = {"w": jnp.array([1.0, -2.0, 0.5])}
  xs = jax.random.normal(jax.random.key(0), (8, 3))
  loss = lambda p, x: jnp.mean((x @ p["w"]) ** 2)
  big = make_optimizer(OptimizerConfig(learning_rate=0.1, total_steps=10))
  state = big.init(w)
  updates, _ = big.update(jax.grad(loss)(w, xs), state, w)
  expected = optax.apply_updates(w, updates)

  acc = make_optimizer(OptimizerConfig(learning_rate=0.1, total_steps=10, accumulation_steps=2))
  state, params = acc.init(w), w
  for half in (xs[:4], xs[4:]):
    updates, state = acc.update(jax.grad(loss)(params, half), state, params)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(params["w"], expected["w"], rtol=1e-6)


def test_clipping_bounds_the_update():
  cfg = OptimizerConfig(learning_rate=1.0, total_steps=10, grad_clip_norm=1e-3, weight_decay=0.0, b1=0.0, b2=0.0,
                        eps=0.0)
  tx = optax.chain(optax.clip_by_global_norm(cfg.grad_clip_norm))
  clipped, _ = tx.update({"g": jnp.array([3.0, 4.0])}, tx.init(None))
  assert float(optax.tree.norm(clipped)) == pytest.approx(1e-3)
  assert make_optimizer(cfg) is not None


def test_every_param_is_decayed_and_statistics_never_reach_the_optimizer():
  """Weight decay applies to every param; a hypernetwork's running statistics are their own variable
  collection, which the train state keeps beside the params and the optimizer never sees."""
  from lora_hyper.training import step as step_lib

  params = {"w": jnp.ones(3)}
  tx = make_optimizer(OptimizerConfig(learning_rate=1.0, total_steps=10, weight_decay=0.5))
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  np.testing.assert_allclose(optax.apply_updates(params, updates)["w"], 0.5)  # decayed
  stats = {"code_stats": {"centre": {"ema": jnp.ones(3), "weight": jnp.ones(())}}}
  state = step_lib.create_state({"params": params, **stats}, tx)
  assert state.stats == stats and state.params == params
  assert jax.tree.structure(state.opt_state) == jax.tree.structure(tx.init(params))


def test_bad_settings_are_named():
  with pytest.raises(ValueError, match="schedule"):
    OptimizerConfig(schedule="step")
  with pytest.raises(ValueError, match="warmup_steps"):
    OptimizerConfig(warmup_steps=20, total_steps=10)


def test_param_groups_scale_and_warm_up_their_modules_only():
  """A group's update is multiplier x min(1, step / warm-up) times the rest's, for the same gradient."""
  params = {"encoder": {"kernel": jnp.ones(2)}, "gates_down": {"kernel": jnp.ones(2)}}
  cfg = OptimizerConfig(learning_rate=0.1, schedule="constant", weight_decay=0.0, b1=0.0, b2=0.0, eps=0.0,
                        grad_clip_norm=None, param_groups=(("gates_down", 0.5, 4),), total_steps=10)
  tx = make_optimizer(cfg)
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.array([1.0, -2.0]), params)
  for step, expected_ratio in enumerate([0.0, 0.125, 0.25, 0.375, 0.5, 0.5]):
    updates, state = tx.update(grads, state, params)
    np.testing.assert_allclose(updates["encoder"]["kernel"], [-0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(updates["gates_down"]["kernel"], [-0.1 * expected_ratio, 0.1 * expected_ratio],
                               rtol=1e-6, err_msg=f"step {step}")


def test_param_groups_name_their_mistakes():
  with pytest.raises(ValueError, match="param_groups"):
    OptimizerConfig(param_groups=(("gates_down", -1.0, 10),))
  with pytest.raises(ValueError, match="twice"):
    OptimizerConfig(param_groups=(("gates_down", 1.0, 10), ("gates_down", 0.5, 0)))
  tx = make_optimizer(OptimizerConfig(param_groups=(("lookahed", 1.0, 10),), total_steps=10))
  with pytest.raises(ValueError, match="lookahed"):
    tx.init({"gates_down": {"kernel": jnp.ones(2)}})


def test_total_steps_defaults_to_the_runs_updates():
  assert for_steps(OptimizerConfig(), 300).total_steps == 300
  assert for_steps(OptimizerConfig(accumulation_steps=4), 400).total_steps == 100
  assert for_steps(OptimizerConfig(total_steps=50), 400).total_steps == 50  # bound: kept
  with pytest.raises(ValueError, match="accumulation_steps=4"):
    for_steps(OptimizerConfig(accumulation_steps=4), 10)
  with pytest.raises(ValueError, match="warmup_steps"):
    for_steps(OptimizerConfig(warmup_steps=20), 10)  # the warm-up is checked against the resolved length
  with pytest.raises(ValueError, match="for_steps"):
    make_optimizer(OptimizerConfig())
