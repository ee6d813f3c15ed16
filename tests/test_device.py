"""``--device auto|cpu|gpu`` (ppo_jax.run.device): what ``auto`` chooses for a job's envs per
device, with and without a GPU and a CUDA-enabled JAX, the one line it prints, and what a
choice that cannot be honoured gets (one line)."""

import pytest

from ppo_jax.cli import train as train_cmd
from ppo_jax.run import device
from tests.helpers import one_line_error


@pytest.fixture
def machine(monkeypatch):
    """Pretend the machine has (or lacks) an NVIDIA GPU and a CUDA-enabled JAX."""
    def set_(gpu: bool, cuda: bool):
        monkeypatch.setattr(device, "nvidia_gpu_present", lambda: gpu)
        monkeypatch.setattr(device, "cuda_jax_installed", lambda: cuda)
        # the suite runs with JAX_PLATFORMS=cpu (conftest.py), which auto would keep
        monkeypatch.setattr(device, "given_platforms", lambda: None)
    return set_


def test_a_cpu_only_machine_keeps_jax_default_and_says_nothing(machine):
    machine(gpu=False, cuda=False)
    for envs in (1, 4096):
        assert device.choose("auto", envs) == device.Choice(None)
    assert device.choose("cpu", 1) == device.Choice("cpu", forced=True)


@pytest.mark.parametrize("envs", [1, device.CROSSOVER_ENVS - 1])
def test_auto_trains_a_latency_bound_job_on_the_cpu_beside_a_gpu(machine, envs):
    machine(gpu=True, cuda=True)
    choice = device.choose("auto", envs)
    assert choice.platform == "cpu" and not choice.forced
    assert "latency-bound" in choice.message and "--device gpu" in choice.message
    assert "\n" not in choice.message


@pytest.mark.parametrize("envs", [device.CROSSOVER_ENVS, 4096])
def test_auto_trains_a_wide_job_on_the_gpu(machine, envs):
    machine(gpu=True, cuda=True)
    choice = device.choose("auto", envs)
    assert choice.platform == "cuda,cpu" and "on the GPU" in choice.message


def test_a_gpu_without_cuda_jax_names_the_extra_for_a_wide_job(machine):
    machine(gpu=True, cuda=False)
    wide = device.choose("auto", 1024)
    assert wide.platform == "cpu" and device.CUDA_EXTRA in wide.message
    assert device.choose("auto", 1) == device.Choice("cpu")  # the CPU is right anyway


@pytest.mark.parametrize("gpu,cuda,words", [(True, False, "no CUDA support"),
                                            (False, True, "no NVIDIA GPU"),
                                            (False, False, "no NVIDIA GPU")])
def test_forcing_a_gpu_that_is_not_there_is_one_line(machine, gpu, cuda, words):
    machine(gpu=gpu, cuda=cuda)
    with pytest.raises(device.DeviceError, match=words):
        device.choose("gpu", 4096)


def test_after_jax_started_auto_keeps_its_backend_and_forcing_another_is_refused():
    import jax

    jax.devices()  # the backends are up (as in a notebook that used JAX already)
    assert device.apply(device.Choice("cpu", "on the cpu", forced=True)) == "on the cpu"
    kept = device.apply(device.Choice("cuda,cpu", "on the GPU"))
    assert kept.startswith("--device auto: JAX already runs on cpu")
    kept = device.apply(device.Choice("cuda,cpu", "on the GPU", what="device"))  # fit's
    assert kept.startswith("device auto: JAX already runs on cpu")
    with pytest.raises(device.DeviceError, match="JAX_PLATFORMS=cuda,cpu"):
        device.apply(device.Choice("cuda,cpu", "on the GPU", forced=True))


def test_the_train_command_prints_what_auto_chose(machine, capsys):
    """The command counts envs per device as runs x envs / devices, before JAX starts."""
    machine(gpu=True, cuda=False)
    args = train_cmd.build_parser().parse_args(["--preset", "fast", "--num-seeds", "2"])
    train_cmd._choose_device(args, {}, None)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and device.CUDA_EXTRA in out[0]
    args = train_cmd.build_parser().parse_args([])  # the tutorial: 1 env
    train_cmd._choose_device(args, {}, None)
    assert capsys.readouterr().out == ""


def test_train_with_device_gpu_on_this_machine_is_one_line(capsys, tmp_path):
    if device.cuda_jax_installed() and device.nvidia_gpu_present():
        pytest.skip("a GPU is here: --device gpu is valid")
    one_line_error(capsys, train_cmd.main, "--device", "gpu", "--out", str(tmp_path / "r"),
                   words="--device gpu:")
    one_line_error(capsys, train_cmd.main, "--device", "tpu", "--out", str(tmp_path / "r"),
                   words="--device")
    assert not (tmp_path / "r").exists()  # nothing was written


def test_envs_per_device_counts_the_gpus_the_job_would_split_over(monkeypatch):
    """As ``parallel.choose_devices`` lays a job out on the GPU: without ``--devices`` over
    the most visible GPUs its runs and envs split over (97 envs of one run: one GPU, so 97
    per device, not 97 / 4); ``all``: every GPU of every process; a count: that count."""
    monkeypatch.setattr(device, "visible_gpus", lambda: 4)
    assert device.envs_per_device(1, 64, None) == 16 == device.envs_per_device(1, 64, "all")
    assert device.envs_per_device(1, 97, None) == 97
    assert device.envs_per_device(2, 5, None) == 5  # 2 runs x 5 envs split over 2 GPUs
    assert device.envs_per_device(4, 16, None) == 16 and device.envs_per_device(1, 64, 2) == 32
    assert device.envs_per_device(1, 64, None, processes=2) == 8
    assert device.envs_per_device(1, 64, "all", processes=2) == 8
    assert device.gpus_asked(None) == 1 and device.gpus_asked(2) == 2
    assert device.gpus_asked("all") == 4 and device.gpus_asked("all", processes=2) == 8
    assert device.gpus_asked(None, processes=2) == 8  # several processes use every GPU
    import numpy as np  # a count however fit is given it

    for four in (np.int64(4), "4"):
        assert device.gpus_asked(four) == 4 and device.envs_per_device(1, 64, four) == 16
    monkeypatch.setattr(device, "visible_gpus", lambda: 0)
    assert device.envs_per_device(1, 64, None) == 64 and device.envs_per_device(1, 1, 8) == 1


@pytest.mark.parametrize("value,gpus", [(None, 8), ("0", 1), ("2,3", 2), ("0,1,-1,2", 2),
                                        ("", 0), ("-1", 0),
                                        ("GPU-5d1b0c9e-aaaa-bbbb-cccc-000000000000", 1)])
def test_visible_gpus_are_those_cuda_visible_devices_leaves(monkeypatch, value, gpus):
    """``CUDA_VISIBLE_DEVICES`` (indices or UUIDs; CUDA stops at a negative entry) limits
    the GPUs ``auto`` counts; hiding them all leaves none present."""
    monkeypatch.setattr(device.glob, "glob", lambda pattern: [f"/dev/nvidia{i}" for i in range(8)])
    if value is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert device.visible_gpus() == gpus
    assert device.nvidia_gpu_present() == (gpus > 0)


def test_auto_keeps_a_job_spread_over_several_gpus_on_them(machine, monkeypatch):
    """``--devices 4`` over 64 envs is 16 per device, below the crossover, but the CPU has
    one device: ``auto`` keeps the GPUs the job asks for, and says why."""
    machine(gpu=True, cuda=True)
    choice = device.choose("auto", 16, gpus_asked=4)
    assert choice.platform == "cuda,cpu" and not choice.forced
    assert "--devices asks for" in choice.message and "\n" not in choice.message
    assert device.choose("auto", 16, gpus_asked=1).platform == "cpu"
    # who asks: the flag (fit's argument), or a multi-process job's processes, where the
    # cluster has said how many (else: every GPU they hold, and at most so many envs each)
    monkeypatch.setattr(device, "visible_gpus", lambda: 1)  # one GPU per process
    assert device.gpus_asked_by(4) == "the 4 devices --devices asks for"
    assert device.gpus_asked_by(2, 2, flag="devices=") == "the 2 devices devices= asks for"
    assert device.gpus_asked_by(None, 2) == "the 2 devices of the job's 2 processes"
    assert device.gpus_asked_by(None, 2, processes_known=False) == (
        "every GPU of the job's processes")
    choice = device.choose("auto", 4, gpus_asked=2, asked_by=device.gpus_asked_by(None, 2))
    assert "over the 2 devices of the job's 2 processes (4 env(s)" in choice.message
    assert "--devices" not in choice.message
    choice = device.choose("auto", 4, gpus_asked=2, envs_at_most=True,
                           asked_by=device.gpus_asked_by(None, 2, processes_known=False))
    assert "over every GPU of the job's processes (at most 4 env(s)" in choice.message
    machine(gpu=True, cuda=False)  # the CPU it must be: the line names the extra
    assert device.CUDA_EXTRA in device.choose("auto", 16, gpus_asked=4).message


def test_auto_keeps_the_platforms_jax_platforms_gives(machine, monkeypatch):
    """``JAX_PLATFORMS`` set by the user: ``auto`` leaves JAX's platform alone, narrow job
    or wide, and says so; ``--device cpu|gpu`` still choose (the flag is the later word)."""
    machine(gpu=True, cuda=True)
    monkeypatch.setattr(device, "given_platforms", lambda: "cpu")
    for envs in (1, 4096):
        choice = device.choose("auto", envs)
        assert choice.platform is None and "JAX_PLATFORMS=cpu" in choice.message
    assert device.choose("gpu", 4096).platform == "cuda,cpu"
    machine(gpu=False, cuda=False)
    monkeypatch.setattr(device, "given_platforms", lambda: "cpu")
    assert device.choose("auto", 1) == device.Choice(None)  # nothing to say without a GPU


def test_given_platforms_reads_jax_platforms_but_not_a_choice_of_ours(monkeypatch):
    """The suite's ``JAX_PLATFORMS=cpu`` (conftest.py) is the user's; the same value set by
    :func:`device.apply` is not."""
    monkeypatch.setattr(device, "_SET_HERE", [])
    assert device.given_platforms() == "cpu"
    monkeypatch.setattr(device, "_SET_HERE", ["cpu"])
    assert device.given_platforms() is None


def test_fit_names_its_argument_not_the_flag():
    from ppo_jax import fit
    from ppo_jax.config import PPOConfig

    with pytest.raises(device.DeviceError, match=r"^device must be one of auto, cpu, gpu, "
                                                 r"got 'GPU'$"):
        fit(PPOConfig.from_preset("tiny"), device="GPU")


def test_the_train_command_counts_a_multi_process_job_over_every_gpu(machine, monkeypatch,
                                                                    capsys):
    """``--distributed auto`` (the cluster gives the count) or ``--num-processes``: a job of
    several processes uses every GPU of every process, so a narrow one stays on them."""
    machine(gpu=True, cuda=True)
    monkeypatch.setattr(device, "visible_gpus", lambda: 1)
    chosen = []
    monkeypatch.setattr(device, "apply", lambda choice: chosen.append(choice))
    for flags in (["--distributed", "auto"], ["--num-processes", "2", "--process-id", "0",
                                              "--coordinator", "127.0.0.1:1234"], []):
        args = train_cmd.build_parser().parse_args(["--num-envs", "4", "--frames-per-batch",
                                                    "200", *flags])
        train_cmd._choose_device(args, {"num_envs": 4, "frames_per_batch": 200}, None)
    assert [c.platform for c in chosen] == ["cuda,cpu", "cuda,cpu", "cpu"]
    # the line says what it knows: the cluster's count is not known yet, the flag's is
    assert "over every GPU of the job's processes (at most 2 env(s)" in chosen[0].message
    assert "over the 2 devices of the job's 2 processes (2 env(s)" in chosen[1].message


@pytest.mark.parametrize("meta", ['{"num_runs": null, "config": {"num_envs": 4}}',
                                  '{"num_runs": 1, "config": {"num_envs": "a"}}',
                                  '{"num_runs": 1}', '[1, 2]', '{not json'])
def test_resuming_a_corrupt_checkpoint_is_one_line(capsys, tmp_path, meta):
    """The device choice reads the checkpoint's metadata before JAX starts; what it cannot
    read is left to the resume, which names it in one line."""
    step = tmp_path / "run" / "checkpoints" / "1" / "meta"
    step.mkdir(parents=True)
    (step / "metadata").write_text(meta)
    one_line_error(capsys, train_cmd.main, "--resume", str(tmp_path / "run"), words="--resume")


def test_fit_counts_a_job_the_caller_joined_over_every_gpu(machine, monkeypatch):
    """A script that called ``jax.distributed.initialize`` itself before ``fit``: the job's
    processes are read from JAX's distributed state, so a narrow job over two processes
    stays on their GPUs, as ``--num-processes 2`` does."""
    from jax._src import distributed

    from ppo_jax import fit
    from ppo_jax.config import PPOConfig

    machine(gpu=True, cuda=True)
    monkeypatch.setattr(device, "visible_gpus", lambda: 1)
    assert device.joined_processes() == 1  # this process joined no job
    monkeypatch.setattr(distributed.global_state, "client", object())
    monkeypatch.setattr(distributed.global_state, "num_processes", 2)
    assert device.joined_processes() == 2

    class Chosen(Exception):
        pass

    def stop(choice):  # record the choice, start nothing
        raise Chosen(choice)

    monkeypatch.setattr(device, "apply", stop)
    with pytest.raises(Chosen) as chosen:
        fit(PPOConfig.from_preset("tiny"))
    assert chosen.value.args[0].platform == "cuda,cpu"
    monkeypatch.setattr(distributed.global_state, "client", None)
    with pytest.raises(Chosen) as chosen:
        fit(PPOConfig.from_preset("tiny"))
    assert chosen.value.args[0].platform == "cpu"
