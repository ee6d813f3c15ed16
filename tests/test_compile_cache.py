"""The program store shared by processes: a set of programs that one holder of the cache's lock
is compiling is waited for and then loaded, not compiled a second time."""

import pickle
import threading
import warnings
import time
import uuid

import jax
import jax.numpy as jnp
import pytest

from ppo_jax.run import compile_cache


def _double(x):
    return x * 2


def test_a_waiting_obtain_loads_what_the_lock_holder_stored():
    key = compile_cache.store_key("double", {"test": uuid.uuid4().hex})
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
    key = compile_cache.store_key("double", {"test": uuid.uuid4().hex})
    lines = []
    compiled, infos = compile_cache.obtain(
        {"double": key}, lambda names: [(n, compile_cache.lower(_double, jnp.ones(3), name=key))
                                        for n in names], "the double", lines.append)
    assert infos["double"].source in ("compiled", "jax_cache")
    assert not any("waiting" in line for line in lines)
    assert compile_cache.load_stored("double", key) is not None


def test_a_stored_program_loads_onto_the_device_it_was_compiled_for():
    """Each device of a stored program is named by platform and id (a GPU job's ``stats``
    program runs on the host's CPU, whose device 0 is not the GPU's): here a program on the
    third of the forced CPU devices comes back on that device, not on the default one."""
    device = jax.devices("cpu")[2]
    x = jax.ShapeDtypeStruct((3,), jnp.float32,
                             sharding=jax.sharding.SingleDeviceSharding(device))
    key = compile_cache.store_key("double", {"test": uuid.uuid4().hex})
    compiled, _ = compile_cache.compile_lowered("double", compile_cache.lower(_double, x, name=key))
    assert compile_cache.store(key, compiled)
    with open(compile_cache._store_path(key), "rb") as f:
        assert pickle.load(f)[-1] == [("cpu", 2)]
    loaded, info = compile_cache.load_stored("double", key)
    assert info.source == compile_cache.STORE_DIR
    out = loaded(jax.device_put(jnp.arange(3.0), device))
    assert out.devices() == {device} != {jax.devices()[0]}
    assert jnp.array_equal(out, jnp.arange(3.0) * 2)


# an env class as a notebook cell defines it: no file holds it
CELL = """
import jax, jax.numpy as jnp, numpy as np
from ppo_jax.envs import EnvState

class Cell:
    env_id, observation_size, action_size, max_episode_steps = "Cell-v0", 1, 1, 5
    action_low, action_high = np.array([-1.0], np.float32), np.array([1.0], np.float32)

    def spec(self):
        return {}

    def reset(self, key):
        x = jax.random.uniform(key, (1,))
        return EnvState(data=x, obs=x, reward=jnp.zeros(()), terminated=jnp.bool_(False),
                        truncated=jnp.bool_(False), steps=jnp.int32(0))

    def step(self, state, action):
        x, steps = state.data + 0.1 * action, state.steps + 1
        return EnvState(data=x, obs=x, reward=-x[0] ** 2, terminated=jnp.bool_(False),
                        truncated=steps >= 5, steps=steps)
"""


def cell_env():
    ns = {"__name__": "notebook_cell"}
    exec(compile(CELL, "<cell>", "exec"), ns)
    return ns["Cell"]()


class _Asked(Exception):
    pass


def asked_of_the_caches(monkeypatch, build) -> dict:
    """What ``build()`` asks ``compile_cache.obtain`` for: the keys, ``persist``, and the name
    of every module it lowers (nothing is traced past the lowering, nothing compiled)."""
    asked = {"names": []}

    def lower(fn, *args, name=None, **kw):
        asked["names"].append(name)

    def obtain(keys, lower_missing, what, announce=None, persist=True, family=None):
        asked.update(keys=dict(keys), persist=persist)
        list(lower_missing(tuple(keys)))
        raise _Asked

    monkeypatch.setattr(compile_cache, "lower", lower)
    monkeypatch.setattr(compile_cache, "obtain", obtain)
    with pytest.raises(_Asked):
        build()
    monkeypatch.undo()
    return asked


def test_an_env_without_a_file_keeps_its_programs_in_the_process(tiny_config, monkeypatch):
    """An env class that no file holds (defined in a notebook cell): its program keys are this
    process's and this class object's own, and the program store is neither read nor written
    for them; its XLA modules are named alike in every process, so that JAX's cache, which
    also keys a program by its content, serves the next process. An env with a file: one
    name for both, stored."""
    from ppo_jax.eval import evaluate
    from ppo_jax.run import programs
    from ppo_jax.core.train import make_train

    trainer, ported = make_train(tiny_config, env=cell_env()), make_train(tiny_config)
    assert programs.storable(ported) and not programs.storable(trainer)
    assert programs.program_key(ported, 1, "init") == programs.module_name(ported, 1, "init")
    key, module = programs.program_key(trainer, 1, "init"), programs.module_name(trainer, 1, "init")
    assert key != module
    # the class defined again (same code, same process): another key, the same module name
    again = make_train(tiny_config, env=cell_env())
    assert programs.program_key(again, 1, "init") != key
    assert programs.module_name(again, 1, "init") == module
    assert programs.program_key(trainer, 1, "init") == key  # stable for the class object
    # what the training and evaluation programs ask of the caches (the same env, held by
    # this file, for the stored case)
    filed = type("Filed", (type(cell_env()),), {"__module__": __name__})
    for t, stored in ((trainer, False), (make_train(tiny_config, env=filed()), True)):
        asked = asked_of_the_caches(monkeypatch, lambda: programs.build_programs(t, 1))
        assert asked["persist"] is stored
        assert asked["names"] == [programs.module_name(t, 1, n) for n in asked["keys"]]
        assert (asked["names"] == list(asked["keys"].values())) is stored
        state = programs.state_shapes(t, 1)
        asked = asked_of_the_caches(monkeypatch, lambda: evaluate.mjx_episodes(
            t, state, jnp.zeros((2, 2), jnp.uint32), 5, "mean"))
        assert asked["persist"] is stored
        assert (asked["names"] == list(asked["keys"].values())) is stored
    # another process: another key, the same module name
    monkeypatch.setattr(programs.os, "getpid", lambda: -1)
    assert programs.program_key(trainer, 1, "init") != key
    assert programs.module_name(trainer, 1, "init") == module
    monkeypatch.undo()
    # obtain(persist=False) compiles and leaves the store alone
    key = compile_cache.store_key("double", {"test": uuid.uuid4().hex})
    compiled, infos = compile_cache.obtain(
        {"double": key}, lambda names: [(n, compile_cache.lower(_double, jnp.ones(3), name="d"))
                                        for n in names], "the double", persist=False)
    assert infos["double"].source in ("compiled", "jax_cache")
    assert compile_cache.load_stored("double", key) is None
    assert jnp.array_equal(compiled["double"](jnp.arange(3.0)), jnp.arange(3.0) * 2)


def test_a_spec_that_holds_an_array_keys_it_by_every_element(tiny_config):
    """An env's ``spec()`` may hold an array (a heightmap, a gain table): two specs that
    differ in any element or in the last bits of a float are two programs, although numpy
    prints them alike (it elides long arrays and rounds floats)."""
    import numpy as np

    from ppo_jax.core.train import make_train
    from ppo_jax.run import programs

    class Table(type(cell_env())):
        def __init__(self, table):
            self.table = table

        def spec(self):
            return {"table": self.table}

    base = np.ones(2000)
    bumped, nudged = base.copy(), base.copy()
    bumped[1000] = 2.0
    nudged[0] = 1.0 + 1e-12
    assert str(base) == str(bumped) == str(nudged)  # what a printout would have keyed
    keys = {programs.program_key(make_train(tiny_config, env=Table(t)), 1, "init")
            for t in (base, bumped, nudged, jnp.asarray(bumped), base.astype(np.float32),
                      base.reshape(40, 50), np.float32(0.1), np.float64(0.1))}
    assert len(keys) == 8
    again = programs.program_key(make_train(tiny_config, env=Table(base.copy())), 1, "init")
    assert again == programs.program_key(make_train(tiny_config, env=Table(base)), 1, "init")


def test_the_compile_estimate_prefers_the_same_envs_earlier_compiles(monkeypatch, tmp_path):
    """A first compile's announced time: the median of earlier compiles of the same env on
    this device, of the same kind (training or evaluation), where there are some (a brax
    env compiles for minutes where the pendulum takes seconds), else of any, saying so."""
    device = jax.devices()[0].device_kind
    times = {f"k{i}": {"seconds": s, "device": device, "family": f}
             for i, (s, f) in enumerate([(20, "A-v0 training"), (24, "A-v0 training"),
                                         (30, "A-v0 training"), (140, "brax:humanoid training"),
                                         (100, "brax:humanoid training"), (9, None),
                                         (500, "A-v0 training"), (3, "A-v0 evaluation")])}
    times["other"] = {"seconds": 999, "device": "another device", "family": "C-v0 training"}
    monkeypatch.setattr(compile_cache, "_read_times", lambda: times)
    monkeypatch.setattr(compile_cache, "cache_dir", lambda: str(tmp_path))
    said = compile_cache.expectation(["new"], "brax:humanoid training")
    assert said.startswith(f"takes about 140 s on this {device} (earlier brax:humanoid "
                           "training compiles)")
    assert "about 30 s" in compile_cache.expectation(["new"], "A-v0 training")
    assert "about 3 s" in compile_cache.expectation(["new"], "A-v0 evaluation")
    said = compile_cache.expectation(["new"], "C-v0 training")  # only another device's
    assert said.startswith(f"takes about 30 s on this {device} (earlier compiles of other "
                           "programs: these may differ)")


_OBTAIN_ONE = """
import sys
import jax
import numpy as np
from ppo_jax.run import compile_cache

compile_cache.enable_compile_cache(sys.argv[1])
key = compile_cache.store_key("double", {"test": sys.argv[2]})
shape = jax.ShapeDtypeStruct((3,), np.float32)  # (no eager op: its program is not watched)
lowered = lambda names: [(n, compile_cache.lower(lambda x: x * 2, shape, name=key))
                         for n in names]
compiled, infos = compile_cache.obtain({"double": key}, lowered, "the double", print)
print(infos["double"].source, compiled["double"](np.ones(3, np.float32)).tolist())
"""


def _obtain_one(cache, tag):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", _OBTAIN_ONE, str(cache), tag],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines(), p.stderr


def _jax_entries(cache, tag):
    """The entries of JAX's cache of :data:`_OBTAIN_ONE`'s program."""
    key = compile_cache.store_key("double", {"test": tag})
    return [p for p in cache.iterdir() if p.name.startswith(f"jit_{key}-")]


def test_an_entry_the_cache_cannot_read_is_one_line_and_removed(tmp_path):
    """JAX never replaces an entry of its cache: one cut short (by a full disk) warned in
    every later process, a path into JAX a program. Now: one line, and the entry goes, so
    the next compile writes a whole one."""
    cache, tag = tmp_path / "cache", uuid.uuid4().hex
    out, err = _obtain_one(cache, tag)
    assert out[-1] == "compiled [2.0, 2.0, 2.0]" and err == ""
    [entry] = _jax_entries(cache, tag)
    entry.write_bytes(entry.read_bytes()[:100])  # cut short, as by a full disk
    for p in (cache / compile_cache.STORE_DIR).iterdir():  # so that JAX's cache is asked
        p.unlink()
    out, err = _obtain_one(cache, tag)
    assert err == ""
    assert out[1].startswith(f"the compile cache in {cache} held 1 unreadable entry for the "
                             "double (") and out[1].endswith("): compiled again, and the "
                                                             "entries removed")
    assert out[-1] == "compiled [2.0, 2.0, 2.0]" and not _jax_entries(cache, tag)
    out, err = _obtain_one(cache, tag)  # the store serves it; nothing to say
    assert err == "" and len(out) == 2 and out[0].startswith("loaded the double")


def test_a_full_cache_disk_is_one_line_and_leaves_no_part_entries(tmp_path):
    """A compile cache on a full disk: one line that says so (JAX printed two lines a
    program, each with a path into JAX), and no entry left cut short (it warned in every
    later process: JAX never replaces an entry), nor a temporary file of the program store's
    or the compile-time record's."""
    import subprocess

    cache, tag = tmp_path / "cache", uuid.uuid4().hex
    cache.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(cache)],
                      capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs privileges this process lacks")
    try:
        (cache / "filler").write_bytes(b"x" * 4096)  # what room is left: less than an entry
        out, err = _obtain_one(cache, tag)
        left = _jax_entries(cache, tag)
        temporary = [p.name for p in cache.rglob("*.tmp")]  # write_atomic's, if it failed
    finally:
        subprocess.run(["umount", str(cache)], capture_output=True)
    assert err == ""
    assert out[1] == (f"the compile cache in {cache} could not keep the double (No space "
                      "left on device): the next run compiles them again")
    assert out[-1] == "compiled [2.0, 2.0, 2.0]" and left == [] and temporary == []


def test_only_the_programs_an_obtain_compiles_have_their_cache_warnings_gathered(monkeypatch):
    """JAX's warning about another program's entry (an eager op, a jit of the user's) shows
    as JAX gives it; one about a program being obtained goes to that obtain's line."""
    shown = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *a, **k: shown.append(
        str(message)))
    compile_cache._gather_cache_warnings()
    text = ("Error writing persistent compilation cache entry for '{}': OSError: [Errno 28] "
            "No space left on device")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with compile_cache._watching(["jit_obtained"]) as watched:
            warnings.warn(text.format("jit_users_own"))
            warnings.warn(text.format("jit_obtained"))
            warnings.warn("something else")
        assert watched["jit_obtained"] == [("unwritten", "No space left on device")]
        warnings.warn(text.format("jit_obtained"))  # its obtain is over: shown
    assert shown == [text.format("jit_users_own"), "something else", text.format("jit_obtained")]
    assert "jit_obtained" not in compile_cache._WATCHED


def _mapped(monkeypatch, cap=10_000, base=0, each=1000):
    """``memory_maps`` as if each program held in the process took ``each`` mappings."""
    monkeypatch.setattr(compile_cache, "memory_maps",
                        lambda: (base + each * len(compile_cache._IN_PROCESS), cap))


def test_make_room_lets_go_of_the_programs_obtained_longest_ago(monkeypatch):
    """Past half of Linux's cap on memory mappings (a process past it crashed in XLA), the
    oldest programs go first, until under it; those asked for stay."""
    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(True))
    monkeypatch.setattr(compile_cache, "_IN_PROCESS", compile_cache.collections.OrderedDict(
        (k, object()) for k in "abcdefg"))
    _mapped(monkeypatch)
    compile_cache.make_room(keep=["a"])  # 7,000 of 10,000: b and c go
    assert list(compile_cache._IN_PROCESS) == ["a", "d", "e", "f", "g"] and not cleared
    compile_cache.make_room()  # 5,000: at the share, nothing goes
    assert list(compile_cache._IN_PROCESS) == ["a", "d", "e", "f", "g"]


def test_make_room_keeps_a_program_held_elsewhere(monkeypatch):
    """Letting go of a program that something else holds frees nothing, and would load it a
    second time when obtained again: it stays."""
    monkeypatch.setattr(jax, "clear_caches", lambda: None)
    monkeypatch.setattr(compile_cache, "_IN_PROCESS", compile_cache.collections.OrderedDict(
        (k, object()) for k in "abcdefg"))
    in_use = compile_cache._IN_PROCESS["a"]  # noqa: F841 (a trainer's, say)
    _mapped(monkeypatch)
    compile_cache.make_room()
    assert list(compile_cache._IN_PROCESS) == ["a", "d", "e", "f", "g"]


def test_make_room_clears_jax_caches_then_warns_once(monkeypatch):
    """Where the programs asked for (or held elsewhere) keep the mappings past the share,
    JAX's own caches go too (again only once the mappings have grown since), and one warning
    says why the process may crash."""
    cleared = []
    monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(True))
    monkeypatch.setattr(compile_cache, "_IN_PROCESS", compile_cache.collections.OrderedDict(
        (k, object()) for k in "abc"))
    monkeypatch.setattr(compile_cache, "_maps_warned", [])
    monkeypatch.setattr(compile_cache, "_jax_cleared_at", [0])
    _mapped(monkeypatch, base=6000)
    with pytest.warns(RuntimeWarning, match=r"holds 7,000 memory mappings of the 10,000 "
                                            r"Linux allows it \(vm.max_map_count\)"):
        compile_cache.make_room(keep=["c"])
    assert list(compile_cache._IN_PROCESS) == ["c"] and cleared == [True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile_cache.make_room(keep=["c"])  # said once; nothing new to clear
        assert cleared == [True]
        _mapped(monkeypatch, base=6400)  # 400 more: under 5% of the cap
        compile_cache.make_room(keep=["c"])
        assert cleared == [True]
        _mapped(monkeypatch, base=6600)  # 600 more since the last clear
        compile_cache.make_room(keep=["c"])
    assert cleared == [True, True]


def test_obtain_makes_room_first_and_keeps_the_order_of_use(monkeypatch):
    """``obtain`` makes room before it loads or compiles (not for programs it holds), and a
    program obtained again counts as the newest."""
    monkeypatch.setattr(compile_cache, "_IN_PROCESS", compile_cache.collections.OrderedDict())
    monkeypatch.setattr(compile_cache, "memory_maps", lambda: (0, 10_000))  # room to spare
    shape = jax.ShapeDtypeStruct((3,), jnp.float32)
    keys = {f"p{i}": compile_cache.store_key("double", {"test": uuid.uuid4().hex})
            for i in range(3)}

    def get(name):
        lowered = lambda names: [(n, compile_cache.lower(_double, shape, name=keys[n]))
                                 for n in names]
        return compile_cache.obtain({name: keys[name]}, lowered, name, persist=False)

    for name in keys:
        get(name)
    made_room = []
    monkeypatch.setattr(compile_cache, "make_room", lambda keep=(): made_room.append(
        list(keep)))
    get("p0")  # held: no room needed, and now the newest
    assert made_room == [] and list(compile_cache._IN_PROCESS) == [keys["p1"], keys["p2"],
                                                                   keys["p0"]]
    monkeypatch.setitem(keys, "p3", compile_cache.store_key("double", {"test": "new"}))
    get("p3")
    assert made_room == [[keys["p3"]]]


def test_memory_maps_counts_this_process(monkeypatch):
    maps = compile_cache.memory_maps()
    if maps is None:
        pytest.skip("no /proc here")
    with open("/proc/self/maps") as f:
        assert abs(maps[0] - len(f.readlines())) < 50 and maps[1] > 0
    monkeypatch.setattr("builtins.open", lambda *a, **k: (_ for _ in ()).throw(OSError()))
    assert compile_cache.memory_maps() is None
