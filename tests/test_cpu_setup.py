"""afx.cpu_setup: the unrolled Threefry lowering on CPU draws JAX's own bits, as one fused loop."""

import json
import subprocess
import sys

DRAW = """
import json, sys
import jax, jax.numpy as jnp
import flax.linen as nn
from afx.cpu_setup import unroll_threefry_on_cpu
unrolled = sys.argv[1] == "unrolled" and unroll_threefry_on_cpu()
key = jax.random.key(3)
dropout = lambda k, x: nn.Dropout(0.3).apply({}, x, deterministic=False, rngs={"dropout": k})
draw = jax.jit(lambda k: (jax.random.bits(k, (257,)), jax.random.uniform(jax.random.fold_in(k, 1), (5, 7)),
                          dropout(k, jnp.ones((4, 33)))))
bits, uniform, dropped = draw(key)
program = draw.lower(key).compile().as_text()
print(json.dumps({"unrolled": unrolled, "bits": bits.tolist(), "uniform": uniform.tolist(),
                  "dropped": dropped.tolist(), "loops": program.count(" while(")}))
"""


def _draw(mode: str) -> dict:
  done = subprocess.run([sys.executable, "-c", DRAW, mode], capture_output=True, text=True, check=True)
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_unrolled_threefry_gives_the_same_draws_without_a_loop():
  rolled, unrolled = _draw("rolled"), _draw("unrolled")
  assert unrolled["unrolled"] and not rolled["unrolled"]
  assert rolled["loops"] > 0 and unrolled["loops"] == 0
  for name in ("bits", "uniform", "dropped"):
    assert unrolled[name] == rolled[name], name
