"""host_memory: compiling a jitted function ahead of its first call must not make that call
compile again (else train.py would compile its step twice), and releasing the freed heap must
leave the process working."""

import jax
import jax.numpy as jnp
import numpy as np

from vdm_jax import host_memory


def test_compile_then_release_heap_leaves_the_executable_in_jits_cache():
  step = jax.jit(lambda x, y: jnp.sin(x) @ y + 1.)
  x = jax.device_put(np.arange(12.).reshape(3, 4))  # device_put: no compile of its own.
  y, other_y = jax.device_put(np.ones((4, 2))), jax.device_put(np.ones((4, 3)))
  compiles = []
  listener = lambda event, duration, **kw: (compiles.append(event) if 'backend_compile' in event
                                            else None)
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    host_memory.compile_then_release_heap(step, x, y)
    assert len(compiles) == 1, compiles
    out = step(x, y)  # The first real call: runs the executable compiled above.
    assert len(compiles) == 1, compiles
    np.testing.assert_allclose(out, np.sin(np.asarray(x)) @ np.ones((4, 2)) + 1., rtol=1e-6)
    step(x, other_y)  # Another shape does compile: the listener does see compiles.
    assert len(compiles) == 2, compiles
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
