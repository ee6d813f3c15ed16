"""The program store shared by processes: a set of programs that one holder of the cache's lock
is compiling is waited for and then loaded, not compiled a second time."""

import threading
import time
import uuid

import jax.numpy as jnp

from ppo_jax import compile_cache


def _double(x):
    return x * 2


def test_a_waiting_obtain_loads_what_the_lock_holder_stored():
    key = compile_cache.program_key("double", {"test": uuid.uuid4().hex})
    keys = {"double": key}
    lowered_by_waiter, lines, result = [], [], {}

    def lower_missing(names):
        lowered_by_waiter.append(names)
        for n in names:
            yield n, compile_cache.lower(_double, jnp.ones(3), name=key)

    def waiter():
        result["out"] = compile_cache.obtain(keys, lower_missing, "the double", lines.append)

    # This thread plays the other process: it holds the set's lock while it compiles.
    with compile_cache._compiling([key], None) as waited:
        assert not waited
        t = threading.Thread(target=waiter)
        t.start()
        deadline = time.monotonic() + 60
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lines == ["another process is compiling the same programs: waiting for it"]
        assert "out" not in result  # it waits for the lock
        compiled, _ = compile_cache.compile_lowered(
            "double", compile_cache.lower(_double, jnp.ones(3), name=key))
        assert compile_cache.store(key, compiled)
    t.join(60)
    compiled, infos = result["out"]
    assert lowered_by_waiter == []  # nothing traced again
    assert infos["double"].source == compile_cache.STORE_DIR
    assert lines[-1].startswith("loaded the double from the compile cache")
    assert jnp.array_equal(compiled["double"](jnp.arange(3.0)), jnp.arange(3.0) * 2)


def test_without_a_holder_obtain_compiles_and_stores():
    key = compile_cache.program_key("double", {"test": uuid.uuid4().hex})
    lines = []
    compiled, infos = compile_cache.obtain(
        {"double": key}, lambda names: [(n, compile_cache.lower(_double, jnp.ones(3), name=key))
                                        for n in names], "the double", lines.append)
    assert infos["double"].source in ("compiled", "jax_cache")
    assert not any("waiting" in line for line in lines)
    assert compile_cache.load_stored("double", key) is not None
