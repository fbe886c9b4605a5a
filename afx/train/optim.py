"""Optimiser and learning-rate schedule from the `optimizer` config group."""

import jax.numpy as jnp
import ml_collections
import optax

from afx.errors import ConfigError

SCHEDULES = ("constant", "cosine", "linear", "noam")


def noam_schedule(peak: float, warmup_steps: int) -> optax.Schedule:
  """Vaswani et al.'s schedule as ESPnet's `WarmupLR`: `peak · √warmup · min(step^−½, step · warmup^−1.5)`,
  rising linearly to `peak` at `warmup_steps` and decaying as 1/√step after."""
  if warmup_steps <= 0:
    raise ConfigError("optimizer.schedule 'noam' needs optimizer.warmup_steps > 0 (ESPnet's recipes use 25000)")

  def schedule(step):
    step = jnp.maximum(jnp.asarray(step, jnp.float32), 1.0)
    return peak * warmup_steps**0.5 * jnp.minimum(step**-0.5, step * warmup_steps**-1.5)
  return schedule


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 over `warmup_steps`, then constant, cosine or linear decay to `end_factor`·lr;
  or "noam", whose warm-up and 1/√step decay are one formula (`noam_schedule`)."""
  peak, warmup = opt.learning_rate, opt.warmup_steps
  if opt.schedule == "noam":
    return noam_schedule(peak, warmup)
  end = peak * opt.get("end_factor", 0.0)
  decay_steps = max(total_steps - warmup, 1)
  if opt.schedule == "constant":
    after = optax.constant_schedule(peak)
  elif opt.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif opt.schedule == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  else:
    raise ConfigError(f"unknown optimizer.schedule {opt.schedule!r}; choose one of {', '.join(SCHEDULES)}")
  if warmup <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """AdamW, Adam or SGD (momentum) with optional global-norm clipping."""
  schedule = learning_rate_schedule(opt, total_steps)
  if opt.name == "adamw":
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay)
  elif opt.name == "adam":
    core = optax.adam(schedule, b1=opt.b1, b2=opt.b2)
  elif opt.name == "sgd":
    core = optax.sgd(schedule, momentum=opt.get("momentum", 0.9))
  else:
    raise ConfigError(f"unknown optimizer.name {opt.name!r}; choose adamw, adam or sgd")
  clip = opt.get("grad_clip_norm", 0.0)
  return optax.chain(optax.clip_by_global_norm(clip), core) if clip else core
