"""ONNX export (scripts/export_onnx.py, ppo_jax.interop.onnx_export): onnxruntime's actions equal
ppo_jax's on observations that MuJoCo C episodes of the restored policy visit, in both
modes; an episode driven by the ONNX graph in MuJoCo C returns what ``evaluate.py --sim
mujoco`` returns from the same start state; the batch axis is dynamic; the jaxpr translator
covers the primitives it names and refuses others in one line; bad input is one line."""

import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppo_jax.run import checkpoint
from ppo_jax.eval import evaluate
from ppo_jax.envs import mujoco_c
from ppo_jax.interop import onnx_export
from ppo_jax.cli.common import CLIError
from ppo_jax.cli import export_onnx as command

MODES = onnx_export.MODES
MIN_OBSERVATIONS = 1000
ACTION_ATOL = 1e-5  # ONNX vs ppo_jax, both normalizing the float32 observation
# ONNX vs ppo_jax's MuJoCo C evaluation, relative difference of an episode's return: the
# ONNX graph normalizes the float32 observation, the MuJoCo C policy the float64 one (then
# float32); measured up to 6e-9 on the tiny run's 7-9-step episodes
RETURN_RTOL = 1e-7


def _require(name: str):
    """Import an onnx-extra module; CI installs the extra, so there a missing one fails."""
    if os.environ.get("CI"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason="needs the onnx extra: pip install -e '.[onnx]'")


@pytest.fixture(scope="module")
def ort():
    _require("onnx")
    return _require("onnxruntime")


@pytest.fixture(scope="module")
def restored(tiny_run):
    return checkpoint.restore_run(tiny_run)  # (trainer, state of run 0, meta)


@pytest.fixture(scope="module")
def exported(ort, tiny_run, tmp_path_factory):
    """``{mode: path}``: the command's files for both modes."""
    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for mode in MODES:
        paths[mode] = str(out / f"policy_{mode}.onnx")
        assert command.main([tiny_run, paths[mode], "--eval-action", mode]) == 0
    return paths


@pytest.fixture(scope="module")
def sessions(exported):
    return {mode: onnx_export.session(path) for mode, path in exported.items()}


def onnx_host_policy(sess) -> evaluate.HostPolicy:
    """MuJoCo C policy from the ONNX graph: the float64 observation cast to float32."""

    def policy(obs, t):
        return np.asarray(onnx_export.run_session(sess, obs[None])[0], np.float64)

    return policy


def recording(policy, log: list) -> evaluate.HostPolicy:
    def wrapped(obs, t):
        action = policy(obs, t)
        log.append((np.array(obs), np.array(action)))
        return action

    return wrapped


@pytest.fixture(scope="module")
def visited(restored):
    """``{mode: obs [N >= 1000, 11] float64}``: observations of MuJoCo C episodes (random
    v4 resets, up to 1000 steps each) driven by ppo_jax's MuJoCo C policy in that mode."""
    trainer, state, _ = restored
    env = mujoco_c.MujocoCEnv(max_episode_steps=trainer.env.max_episode_steps)
    rng = np.random.default_rng(0)
    out = {}
    for mode in MODES:
        policy = evaluate.make_host_policy(trainer.actor_apply, state.params.actor,
                                           state.obs_stats, mode)
        log: list = []
        while len(log) < MIN_OBSERVATIONS:
            evaluate.mujoco_episode(env, recording(policy, log), *_random_start(env, rng),
                                    env.max_episode_steps)
        out[mode] = np.array([o for o, _ in log])
    return out


def _random_start(env, rng):
    env.reset(rng)
    return env.state


def ppo_jax_actions(trainer, state, mode, obs) -> np.ndarray:
    """The MJX evaluation policy (``evaluate.make_policy``) on float32 observations."""
    policy = evaluate.make_policy(trainer.actor_apply, state.params.actor, state.obs_stats, mode)
    return np.asarray(jax.jit(policy)(jnp.asarray(obs, jnp.float32), jax.random.PRNGKey(0)))


@pytest.mark.parametrize("mode", MODES)
def test_actions_match_ppo_jax_on_visited_observations(mode, restored, sessions, visited):
    trainer, state, _ = restored
    obs = visited[mode]
    assert len(obs) >= MIN_OBSERVATIONS
    ours = onnx_export.run_session(sessions[mode], obs)
    ref = ppo_jax_actions(trainer, state, mode, obs)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (len(obs), 1)
    diff = np.abs(ours.astype(np.float64) - ref).max()
    in_contact = int((obs[:, 8:] != 0).any(1).sum())  # a nonzero qfrc_constraint entry
    print(f"{mode}: max |onnx - ppo_jax| = {diff:.3g} on {len(obs)} visited observations "
          f"({in_contact} with a constraint force)")
    assert diff <= ACTION_ATOL
    assert np.ptp(ref) > 0.01  # the observations span actions, not one point


@pytest.mark.parametrize("mode", MODES)
def test_mujoco_episode_matches_evaluate(mode, restored, sessions):
    """Episodes from the start states (and policy keys) ``evaluate.py --sim mujoco`` uses by
    default: ppo_jax's MuJoCo C evaluation (float64 normalization, TorchRL's order) against
    the ONNX graph driving the same env (float32 normalization)."""
    trainer, state, meta = restored
    keys = evaluate.episode_keys(state.eval_key, meta["batches_done"], 3)
    max_steps = trainer.env.max_episode_steps
    ref = evaluate.mujoco_episodes(trainer, state, keys, max_steps, mode)
    env = mujoco_c.MujocoCEnv(max_episode_steps=max_steps)
    qpos, qvel = evaluate.mjx_start_states(trainer.env, keys)
    for i, episode in enumerate(ref):
        ours = evaluate.mujoco_episode(env, onnx_host_policy(sessions[mode]), qpos[i], qvel[i],
                                       max_steps)
        # the reference episode again, recording its observations and actions
        log: list = []
        host = evaluate.make_host_policy(trainer.actor_apply, state.params.actor,
                                         state.obs_stats, mode, keys[i])
        again = evaluate.mujoco_episode(env, recording(host, log), qpos[i], qvel[i], max_steps)
        assert again.episode_return == episode.episode_return
        obs, actions = np.array([o for o, _ in log]), np.array([a for _, a in log])
        action_diff = np.abs(onnx_export.run_session(sessions[mode], obs) - actions).max()
        return_diff = abs(ours.episode_return - episode.episode_return)
        state_diff = np.abs(ours.qpos[-1] - episode.qpos[-1]).max() \
            if ours.length == episode.length else np.inf
        print(f"{mode} episode {i}: {episode.length} steps, return {episode.episode_return:.6f}; "
              f"|onnx - ppo_jax|: return {return_diff:.3g}, final qpos {state_diff:.3g}, "
              f"actions on its observations {action_diff:.3g}")
        assert ours.length == episode.length
        assert action_diff <= ACTION_ATOL
        assert return_diff <= RETURN_RTOL * max(1.0, abs(episode.episode_return))


@pytest.mark.parametrize("mode", MODES)
def test_batch_axis_is_dynamic(mode, sessions, visited):
    sess = sessions[mode]
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.shape == [onnx_export.BATCH, 11] and out.shape == [onnx_export.BATCH, 1]
    assert inp.type == out.type == "tensor(float)"
    obs = visited[mode][:1000]
    batch = onnx_export.run_session(sess, obs)
    assert batch.shape == (1000, 1)
    for i in (0, 1, 999):
        one = onnx_export.run_session(sess, obs[i:i + 1])
        assert one.shape == (1, 1)
        np.testing.assert_allclose(one[0], batch[i], rtol=0, atol=1e-6)


def test_file_metadata(exported, restored):
    onnx = _require("onnx")
    _, _, meta = restored
    model = onnx.load(exported["tanh_loc"])
    props = {p.key: p.value for p in model.metadata_props}
    assert props["format"] == onnx_export.FORMAT and props["mode"] == "tanh_loc"
    assert props["step"] == str(meta["batches_done"]) and props["hidden_sizes"] == "16,16"
    assert model.opset_import[0].version == 18
    ops = {n.op_type for n in model.graph.node}
    assert "MatMul" in ops and "ReduceSum" not in ops  # tanh_loc: no quadrature
    assert "ReduceSum" in {n.op_type for n in onnx.load(exported["mean"]).graph.node}


def test_a_jobs_state_of_one_run_exports_as_that_run(ort, tiny_run, restored, tmp_path):
    """``restore``'s (and ``fit``'s) states are ``[R, ...]``: one run's export as that run's
    (the same graph as ``restore_run``'s state gives); several runs' are refused in one
    line that says how to pick one."""
    trainer, states, _ = checkpoint.restore(tiny_run, parts=checkpoint.POLICY_PARTS)
    one, two = str(tmp_path / "one.onnx"), str(tmp_path / "run0.onnx")
    onnx_export.export_onnx(trainer, states, one)
    onnx_export.export_onnx(restored[0], restored[1], two)
    with open(one, "rb") as a, open(two, "rb") as b:
        assert a.read() == b.read()
    both = jax.tree_util.tree_map(lambda x: jax.numpy.concatenate([x, x]), states)
    with pytest.raises(ValueError, match=r"^this state holds 2 runs .*restore_run\(path, "
                                         r"run_index=r\)$") as e:
        onnx_export.export_onnx(trainer, both, str(tmp_path / "no.onnx"))
    assert "\n" not in str(e.value) and not os.path.exists(tmp_path / "no.onnx")


def test_default_mode_is_the_runs_eval_action(ort, tiny_run, restored, tmp_path, capsys):
    trainer, _, _ = restored
    out = str(tmp_path / "p.onnx")
    assert command.main([tiny_run, out]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}") and f"({trainer.config.eval_action})" in line
    assert "\n" not in line and os.listdir(tmp_path) == ["p.onnx"]


def test_translator_primitives(ort):
    """Primitives beyond the policy's: each translation against JAX, batch 1 and 8."""

    w = np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 4)

    @jax.custom_vjp
    def sin(x):
        return jnp.sin(x)

    sin.defvjp(lambda x: (sin(x), x), lambda x, g: (g * jnp.cos(x),))
    rounded = jax.checkpoint(lambda x: jnp.floor(3 * x) / jnp.ceil(jnp.abs(x) + 2.0))

    def f(x):  # x: [B, 3]
        inside = ((x < 0.5) & ~(x <= -0.7)) | (jnp.floor(2 * x) == 1)  # x in (-0.7, 1)
        x = jnp.where(inside, sin(x), rounded(x)) + jnp.copy(x)
        which = jnp.clip(jnp.floor(x + 1.0), 0, 2).astype(jnp.int32)  # 0, 1 or 2
        x = jax.lax.select_n(which, x, 2.0 * x, -3.0 * x)
        a = jnp.exp(x) + jnp.log(jnp.abs(x) + 1.0) + jnp.sqrt(x * x + 1.0) + jax.lax.rsqrt(
            x * x + 2.0)
        b = jax.nn.sigmoid(x) * jax.lax.erf(x) + jnp.sign(x) - jnp.expm1(x / 4) + jnp.log1p(
            x * x) + jnp.square(x) + x ** 3 + jnp.power(jnp.abs(x) + 1.0, 1.5)
        x0 = jax.lax.slice_in_dim(x, 0, 1, axis=1)  # [B, 1]
        c = jnp.where(x > 0.1, jnp.maximum(x, 0.3), jnp.minimum(x, -0.2)) + jax.lax.clamp(
            -0.5, x, 0.5) + (x >= 0).astype(jnp.float32) - (x != x0).astype(jnp.float32)
        m = jnp.concatenate([a, b, c], axis=1).reshape(-1, 3, 3).transpose(0, 2, 1)  # [B, 3, 3]
        mm = jnp.einsum("bij,bjk->bik", m, m)
        e = jax.lax.slice_in_dim(mm, 1, 3, axis=1).sum(1) + m.max(1) - m.min(2)  # [B, 3]
        first = jax.lax.slice_in_dim(e, 0, 1, axis=1)  # [B, 1]
        g = jnp.broadcast_to(first, e.shape) + jnp.squeeze(e[:, None, :], 1) + e @ w[:, :3]
        strided = jax.lax.slice_in_dim(g @ w, 0, None, stride=2, axis=1)  # [B, 2]
        return jnp.concatenate([g, strided, jnp.prod(jnp.cos(m), axis=(1, 2))[:, None]], axis=1)

    model = onnx_export.jax_to_onnx(f, (3,))
    ops = {n.op_type for n in model.graph.node}
    assert {"Einsum", "MatMul", "Expand", "Slice", "Where", "ReduceMax", "ReduceProd", "Sin",
            "Floor", "Or", "Cast"} <= ops
    sess = onnx_export.session(model)
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    ref = np.asarray(jax.jit(f)(x))
    out = onnx_export.run_session(sess, x)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(onnx_export.run_session(sess, x[2:3]), ref[2:3], rtol=1e-5,
                               atol=1e-5)


def test_translator_refuses_in_one_line(ort, tmp_path):
    with pytest.raises(onnx_export.OnnxExportError, match="primitive 'argmax'") as e:
        onnx_export.jax_to_onnx(lambda x: jnp.argmax(x, axis=1), (3,))
    assert "\n" not in str(e.value)
    with pytest.raises(onnx_export.OnnxExportError, match=r"opset must be in \[18, "):
        onnx_export.jax_to_onnx(jnp.tanh, (3,), opset=17)
    with pytest.raises(onnx_export.OnnxExportError, match="onnxruntime .* cannot load") as e:
        onnx_export.session(str(tmp_path / "missing.onnx"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_missing_extra_is_one_line(missing, tiny_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it fails
    with pytest.raises(CLIError, match=r"install the onnx extra: pip install -e '\.\[onnx\]'") \
            as e:
        command.main([tiny_run, str(tmp_path / "p.onnx")])
    assert "\n" not in str(e.value) and missing in str(e.value)
    assert not os.listdir(tmp_path)


def test_bad_input_is_one_line(ort, tiny_run, tmp_path):
    with pytest.raises(CLIError, match="cannot write to output directory '/proc/forbidden'") \
            as e:
        command.main([tiny_run, "/proc/forbidden/x.onnx"])
    assert "\n" not in str(e.value)
    with pytest.raises(CLIError) as e:
        command.main([str(tmp_path / "no_such_run"), str(tmp_path / "p.onnx")])
    assert "\n" not in str(e.value) and not os.listdir(tmp_path)
    (tmp_path / "a_dir.onnx").mkdir()
    with pytest.raises(CLIError, match="a_dir.onnx is a directory: give the path of a file"):
        command.main([tiny_run, str(tmp_path / "a_dir.onnx")])
    assert os.listdir(tmp_path) == ["a_dir.onnx"]  # no temporary file left
    with pytest.raises(CLIError, match=r"opset must be in \[18, \d+\]"):
        command.main([tiny_run, str(tmp_path / "p.onnx"), "--opset", "17"])
    assert os.listdir(tmp_path) == ["a_dir.onnx"]


def test_failed_write_keeps_the_old_file(ort, restored, tmp_path, monkeypatch):
    trainer, state, _ = restored
    path = tmp_path / "p.onnx"
    path.write_bytes(b"old")

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_export.os, "replace", fail)
    with pytest.raises(onnx_export.OnnxExportError, match="cannot write .*No space left"):
        onnx_export.export_onnx(trainer, state, str(path), "tanh_loc", check=False)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["p.onnx"]


def _script(root_dir, *args, pre: str = "") -> subprocess.CompletedProcess:
    code = (f"import sys; {pre}sys.argv = ['export_onnx.py', *sys.argv[1:]]; "
            f"from ppo_jax.cli.export_onnx import run; run()")
    return subprocess.run([sys.executable, "-c", code, *args], cwd=root_dir,
                          capture_output=True, text=True, timeout=120)


def test_script_errors_are_one_line_on_stderr(ort, root_dir, tiny_run, tmp_path):
    r = subprocess.run([sys.executable, os.path.join(root_dir, "scripts", "export_onnx.py"),
                        tiny_run, "/proc/forbidden/x.onnx"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(
        "export_onnx.py: error: cannot write to output directory '/proc/forbidden'")
    r = _script(root_dir, tiny_run, str(tmp_path / "p.onnx"), pre="sys.modules['onnx'] = None; ")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "install the onnx extra: pip install -e '.[onnx]'" in r.stderr
    assert not os.listdir(tmp_path)


def test_import_loads_neither_onnx_nor_onnxruntime(root_dir):
    code = ("import json, sys, ppo_jax.interop.onnx_export, ppo_jax.cli.export_onnx; "
            "print(json.dumps(sorted(sys.modules)))")
    r = subprocess.run([sys.executable, "-c", code], cwd=root_dir, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    mods = {m.split(".")[0] for m in json.loads(r.stdout.splitlines()[-1])}
    assert not mods & {"onnx", "onnxruntime", "torch"}


def test_a_refusal_names_observation_entries_that_are_rounding_residue(ort, restored, tmp_path,
                                                                        monkeypatch):
    """Where the graph's actions differ and the run's statistics hold entries whose normalized
    value is float32 rounding residue (a constant nonzero entry under TorchRL's statistics,
    as Brax's humanoid's body masses), the refusal names them and the cure."""
    trainer, state, _ = restored
    monkeypatch.setattr(onnx_export, "max_abs_diff", lambda *a: 3.3e-3)
    path = str(tmp_path / "p.onnx")
    with pytest.raises(onnx_export.OnnxExportError) as plain:
        onnx_export.export_onnx(trainer, state, path, "tanh_loc")
    assert "hardly varied" not in str(plain.value)
    stats = state.obs_stats
    loc, scale = np.array(stats.loc), np.array(stats.scale)
    loc[2], scale[2] = -9.8e6, 1e6
    residue = state.replace(obs_stats=stats.replace(loc=loc, scale=scale))
    with pytest.raises(onnx_export.OnnxExportError,
                       match=r"differ from ppo_jax's by 0.0033 .*not written \(1 observation "
                             r"entry \(2\) hardly varied.*--obs-norm safe"):
        onnx_export.export_onnx(trainer, residue, path, "tanh_loc")
    assert not os.path.exists(path)
