"""Tests of launch/tpu_vm.sh and launch/gpu_host.sh through their --dry-run output.

Each printed line "+ CMD" is one command the script would run, shell-quoted; the tests parse
it with shlex, so they check the argv gcloud / ssh / srun would get, and, for remote
commands, the words the remote shell would see. A fake gcloud/ssh/srun on PATH records any
call, which proves dry runs call nothing and real runs call exactly what they print.
"""

import configparser
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TPU = ROOT / "launch" / "tpu_vm.sh"
GPU = ROOT / "launch" / "gpu_host.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

# Environment fallbacks of the scripts; cleared so the host's environment cannot leak in.
SCRIPT_ENV = (
    "TPU_NAME",
    "TPU_ZONE",
    "TPU_PROJECT",
    "TPU_ACCELERATOR_TYPE",
    "TPU_RUNTIME_VERSION",
    "CONFIG",
    "WORKDIR",
    "GPU_HOSTS",
)

# One line per call: the tool's name and its arguments, each ended by ARG_END, so that the test
# gets the argv back exactly (remote command lines hold spaces and quotes).
ARG_END = "\x1f"
FAKE_TOOL = """#!/usr/bin/env bash
{ printf '%s\\x1f' "$(basename "$0")" "$@"; echo; } >> "$FAKE_CALLS"
"""


@pytest.fixture
def fake_path(tmp_path):
    """A PATH whose gcloud, ssh and srun only append their argv to a calls file (see ARG_END)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "ssh", "srun"):
        path = bin_dir / tool
        path.write_text(FAKE_TOOL)
        path.chmod(0o755)
    calls = tmp_path / "calls.txt"
    return bin_dir, calls


def launch(script, *args, fake=None, extra_env=None, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV}
    if fake is not None:
        bin_dir, calls = fake
        env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
        env["FAKE_CALLS"] = str(calls)
    env.update(extra_env or {})
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)


def dry_run(script, *args, **kwargs):
    """Runs with --dry-run; returns the printed commands, each as an argv list."""
    result = launch(script, *args[:1], "--dry-run", *args[1:], **kwargs)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, "a dry run printed no command"
    assert all(line.startswith("+ ") for line in lines), lines
    return [shlex.split(line[2:]) for line in lines]


def real_run(script, *args, fake):
    """Runs for real with the fake tools; asserts it called exactly the commands --dry-run prints."""
    printed = dry_run(script, *args)
    result = launch(script, *args, fake=fake)
    assert result.returncode == 0, result.stderr
    calls = [line.split(ARG_END)[:-1] for line in fake[1].read_text().splitlines()]
    assert calls == printed
    return calls, result


def assert_usage_error(script, args, message, fake):
    """Exit status 2 with `message` on stderr, nothing printed and nothing called."""
    result = launch(script, *args, "--dry-run", fake=fake)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert not fake[1].exists()


def option(argv, name):
    """Value of `--name=value` or `--name value` in argv (None if absent)."""
    for i, word in enumerate(argv):
        if word.startswith(name + "="):
            return word[len(name) + 1 :]
        if word == name:
            return argv[i + 1]
    return None


def remote_words(argv):
    """Words of the remote command of a `gcloud ... ssh --command CMD` or `ssh HOST CMD`."""
    command = option(argv, "--command") if argv[0] == "gcloud" else argv[-1]
    assert command is not None, argv
    return shell_words(command)


def shell_words(command):
    """Words of a shell command line, with `&&`, `;`, `>`, `&` as words of their own."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def pinned_jax_version():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    pins = [line.strip() for line in cfg["options"]["install_requires"].splitlines()]
    (pin,) = [p for p in pins if p.startswith("jax==")]
    return pin.removeprefix("jax==")


SLICE = ("--name=lazy-v5p", "--zone=us-east5-a", "--project=my-proj")


# ---------------------------------------------------------------------------- TPU VMs


def test_tpu_create_pod_slice(fake_path):
    (cmd,) = dry_run(TPU, "create", *SLICE, "--accelerator-type=v5p-64", "--spot", fake=fake_path)
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "lazy-v5p"]
    assert option(cmd, "--accelerator-type") == "v5p-64"
    assert option(cmd, "--version") == "v2-alpha-tpuv5"
    assert option(cmd, "--zone") == "us-east5-a"
    assert option(cmd, "--project") == "my-proj"
    assert "--spot" in cmd and "--preemptible" not in cmd
    assert not fake_path[1].exists(), "a dry run must not call gcloud"


def test_tpu_create_v4_defaults_and_overrides():
    (cmd,) = dry_run(TPU, "create", "--name=t", "--zone=us-central2-b", "--accelerator-type=v4-8", "--preemptible")
    assert option(cmd, "--version") == "tpu-ubuntu2204-base"
    assert "--preemptible" in cmd and "--spot" not in cmd
    assert option(cmd, "--project") is None  # gcloud's configured project
    (cmd,) = dry_run(
        TPU, "create", "--name", "t", "--zone", "z", "--accelerator-type", "v6e-8", "--version", "v2-custom"
    )
    assert option(cmd, "--version") == "v2-custom"


def test_tpu_flags_from_environment():
    env = {"TPU_NAME": "env-tpu", "TPU_ZONE": "europe-west4-b", "TPU_ACCELERATOR_TYPE": "v5litepod-16"}
    (cmd,) = dry_run(TPU, "create", extra_env=env)
    assert cmd[5] == "env-tpu"
    assert option(cmd, "--zone") == "europe-west4-b"
    assert option(cmd, "--version") == "v2-alpha-tpuv5-lite"


def test_tpu_setup_copies_checkout_and_installs_pinned_jax_on_all_workers(fake_path):
    cmds = dry_run(TPU, "setup", *SLICE, "--pip=gcsfs", fake=fake_path)
    scp = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]]
    ssh = [c for c in cmds if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    assert len(scp) == 1 and len(ssh) == 1, cmds
    assert cmds.index(scp[0]) < cmds.index(ssh[0]), "copy before install"
    (scp,), (ssh,) = scp, ssh
    assert "--recurse" in scp and option(scp, "--worker") == "all"
    assert scp[6].endswith("/lazy_jax") and scp[7] == "lazy-v5p:"
    assert option(ssh, "--worker") == "all"
    words = remote_words(ssh)
    assert ["-m", "venv", ".venv"] == words[words.index("venv") - 1 : words.index("venv") + 2]
    pip = words.index("install", words.index("--upgrade") + 1)
    installed = words[pip : words.index("&&", pip)]
    assert ["-e", "."] == installed[2:4], installed
    assert f"jax[tpu]=={pinned_jax_version()}" in installed
    assert "gcsfs" in installed
    assert not fake_path[1].exists()


def test_tpu_setup_jax_version_override():
    cmds = dry_run(TPU, "setup", *SLICE, "--jax-version=9.9.9")
    assert "jax[tpu]==9.9.9" in remote_words(cmds[-1])


def test_tpu_setup_stage_ships_checkout_files_only(tmp_path):
    """The printed staging line, run for real, copies the checkout's files but not .venv."""
    result = launch(TPU, "setup", *SLICE, "--dry-run")
    assert result.returncode == 0, result.stderr
    stage_line, scp_line = result.stdout.splitlines()[:2]
    stage = shlex.split(scp_line[2:])[6]
    assert stage in stage_line
    staged = stage_line[2:].replace(stage, str(tmp_path / "lazy_jax"))
    subprocess.run(["bash", "-c", staged], check=True, timeout=60)
    assert (tmp_path / "lazy_jax" / "setup.cfg").is_file()
    assert (tmp_path / "lazy_jax" / "launch" / "tpu_vm.sh").is_file()
    assert not (tmp_path / "lazy_jax" / ".venv").exists()


def test_tpu_run_on_all_workers_passes_config_workdir_and_overrides(fake_path):
    (cmd,) = dry_run(
        TPU,
        "run",
        *SLICE,
        "--config=configs/t5.py:base",
        "--workdir=gs://bkt/t5",
        "--config.total_steps=100",
        "--config.model.topk=8",
        "--env=TFDS_DATA_DIR=gs://bkt/tfds",
        "--",
        "--extra_flag=it's a b",
        fake=fake_path,
    )
    assert cmd[4] == "ssh" and cmd[5] == "lazy-v5p"
    assert option(cmd, "--worker") == "all"
    words = remote_words(cmd)
    main = words.index("lazy_jax.main")
    assert words[main - 1] == "-m" and words[main - 2] == ".venv/bin/python"
    assert words[main - 4 : main - 2] == ["{", "nohup"]
    args = words[main + 1 : words.index(">")]
    assert args == [
        "--config=configs/t5.py:base",
        "--workdir=gs://bkt/t5",
        "--multihost",
        "--config.total_steps=100",
        "--config.model.topk=8",
        "--extra_flag=it's a b",
    ]
    assert words[:2] == ["cd", "lazy_jax"]
    assert "TFDS_DATA_DIR=gs://bkt/tfds" in words[:main]
    assert words[words.index(">") + 1] == "logs/main.log"
    assert "&" in words, "the run must be detached from the ssh session"
    assert not fake_path[1].exists()


def test_tpu_run_warns_about_local_workdir():
    result = launch(TPU, "run", *SLICE, "--config=c.py", "--workdir=runs/x", "--dry-run")
    assert result.returncode == 0
    assert "gs://" in result.stderr


def test_tpu_logs_copy_back_stop_delete():
    (logs,) = dry_run(TPU, "logs", *SLICE, "--log=logs/a.log")
    assert option(logs, "--worker") == "0"
    assert remote_words(logs)[0] == "tail" and "lazy_jax/logs/a.log" in remote_words(logs)

    mkdir, cp, log = dry_run(TPU, "copy-back", *SLICE, "--workdir=gs://bkt/t5", "--dest=out")
    assert mkdir == ["mkdir", "-p", "out"]
    assert cp == ["gcloud", "storage", "cp", "-r", "gs://bkt/t5", "out/"]
    assert log[4] == "scp" and log[5] == "lazy-v5p:lazy_jax/logs/main.log"

    _, scp, _ = dry_run(TPU, "copy-back", *SLICE, "--workdir=runs/t5")
    assert "--recurse" in scp and option(scp, "--worker") == "0"
    assert scp[6] == "lazy-v5p:lazy_jax/runs/t5"

    (stop,) = dry_run(TPU, "stop", *SLICE)
    assert option(stop, "--worker") == "all" and "kill" in remote_words(stop)

    (delete,) = dry_run(TPU, "delete", *SLICE)
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "lazy-v5p"]
    assert "--quiet" in delete


def test_tpu_real_run_calls_what_dry_run_prints(fake_path):
    (call,), result = real_run(TPU, "delete", *SLICE, fake=fake_path)
    assert call[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "delete"]
    assert result.stderr.startswith("+ gcloud ")  # traced to stderr when run for real


@pytest.mark.parametrize(
    "args, message",
    [
        (("bogus",), "unknown subcommand 'bogus'"),
        ((), "missing subcommand"),
        (("create", "--zone=z", "--accelerator-type=v4-8"), "needs --name"),
        (("create", "--name=t", "--accelerator-type=v4-8"), "needs --zone"),
        (("create", "--name=t", "--zone=z"), "needs --accelerator-type"),
        (("create", "--name=t", "--zone=z", "--accelerator-type=tpu8"), "must look like v4-8"),
        (("create", "--name=t", "--zone=z", "--accelerator-type=v9x-8"), "pass --version"),
        (("run", "--name=t", "--zone=z", "--workdir=gs://b"), "needs --config"),
        (("run", "--name=t", "--zone=z", "--config=c.py"), "needs --workdir"),
        (("copy-back", "--name=t", "--zone=z"), "needs --workdir"),
        (("run", "--name=t", "--zone=z", "--bogus"), "unknown flag '--bogus'"),
        (("run", "--name", "--zone=z"), "--name needs a value"),
        (("create", "--name=", "--zone=z"), "--name needs a non-empty value"),
        (("create", "--name=t", "--zone=z", "--accelerator-type=v4-8", "--spot=1"), "unknown flag '--spot=1'"),
        (("create", "--name=t", "--zone=z", "--accelerator-type=v4-8", "--config.x"), "unknown flag '--config.x'"),
        (("setup", "--name=t", "--zone=z", "--remote-dir=a/b"), "--remote-dir"),
        (("run", "--name=t", "--zone=z", "--config=c.py", "--workdir=w", "--env=BAD"), "--env wants KEY=VALUE"),
    ],
)
def test_tpu_usage_errors(args, message, fake_path):
    assert_usage_error(TPU, args, message, fake_path)


def test_tpu_help():
    result = launch(TPU, "--help")
    assert result.returncode == 0
    for subcommand in ("create", "setup", "run", "logs", "copy-back", "delete"):
        assert re.search(rf"^  {subcommand} ", result.stdout, re.M), subcommand


# ---------------------------------------------------------------------------- GPU hosts


def test_gpu_single_host_runs_one_process_without_coordinator(fake_path):
    cd, cmd = dry_run(
        GPU,
        "run",
        "--config=configs/vit.py",
        "--workdir=runs/vit",
        "--config.total_steps=5",
        "--mem-fraction=0.9",
        fake=fake_path,
    )
    assert cd == ["cd", str(ROOT)]
    assert cmd[0] == "env"
    assert "NCCL_NVLS_ENABLE=0" in cmd and "XLA_PYTHON_CLIENT_MEM_FRACTION=0.9" in cmd
    main = cmd.index("lazy_jax.main")
    assert cmd[main - 1] == "-m"
    assert cmd[main + 1 :] == ["--config=configs/vit.py", "--workdir=runs/vit", "--config.total_steps=5"]
    assert not any(w.startswith(("--coordinator_address", "--num_processes", "--process_id")) for w in cmd)
    assert not fake_path[1].exists()


def test_gpu_two_hosts_one_process_each_with_coordinator(fake_path):
    cmds = dry_run(
        GPU,
        "run",
        "--hosts=me@gpu-a,gpu-b",
        "--port=23456",
        "--config=configs/t5.py",
        "--workdir=/shared/t5",
        "--config.seed=3",
        fake=fake_path,
    )
    assert len(cmds) == 2
    for process_id, (cmd, host) in enumerate(zip(cmds, ["me@gpu-a", "gpu-b"])):
        assert cmd[0] == "ssh" and cmd[-2] == host
        words = remote_words(cmd)
        assert "NCCL_NVLS_ENABLE=0" in words[: words.index("nohup")]
        main = words.index("lazy_jax.main")
        args = words[main + 1 : words.index(">")]
        assert args == [
            "--config=configs/t5.py",
            "--workdir=/shared/t5",
            "--config.seed=3",
            "--coordinator_address=gpu-a:23456",
            "--num_processes=2",
            f"--process_id={process_id}",
        ]
        assert words[words.index(">") + 1] == f"logs/main.{process_id}.log"
    assert not fake_path[1].exists()


def test_gpu_one_remote_host_has_no_coordinator():
    (cmd,) = dry_run(GPU, "run", "--hosts=gpu-a", "--config=c.py", "--workdir=w")
    words = remote_words(cmd)
    assert not any(w.startswith("--coordinator_address") for w in words)
    assert "NCCL_NVLS_ENABLE=0" in words


def test_gpu_real_multi_host_run_calls_ssh_per_host(fake_path):
    calls, _ = real_run(GPU, "run", "--hosts=gpu-a,gpu-b", "--config=c.py", "--workdir=w", fake=fake_path)
    assert [c[:4] + c[-2:-1] for c in calls] == [["ssh", "-n", "-o", "BatchMode=yes", h] for h in ("gpu-a", "gpu-b")]
    assert "--process_id=1" in calls[1][-1]


def test_gpu_slurm_one_task_per_gpu(fake_path):
    (cmd,) = dry_run(
        GPU,
        "slurm",
        "--nodes=4",
        "--gpus-per-node=8",
        "--partition=gpu",
        "--time=2:00:00",
        "--srun-arg=--account=lab",
        "--config=configs/t5.py",
        "--workdir=/shared/t5",
        "--config.total_steps=10",
        fake=fake_path,
    )
    assert cmd[0] == "srun"
    assert option(cmd, "--nodes") == "4"
    assert option(cmd, "--ntasks-per-node") == "8" and option(cmd, "--gpus-per-node") == "8"
    assert option(cmd, "--partition") == "gpu" and option(cmd, "--time") == "2:00:00"
    assert "--account=lab" in cmd
    assert "NCCL_NVLS_ENABLE=0" in option(cmd, "--export").split(",")
    main = cmd.index("lazy_jax.main")
    assert cmd[main + 1 :] == [
        "--config=configs/t5.py",
        "--workdir=/shared/t5",
        "--multihost",
        "--config.total_steps=10",
    ]
    assert not any(w.startswith("--coordinator_address") for w in cmd)
    assert not fake_path[1].exists()


def test_gpu_setup_installs_cuda_jax_per_host():
    cmds = dry_run(GPU, "setup", "--hosts", "gpu-a,gpu-b", "--cuda=cuda13", "--pip", "x", "--pip=y")
    assert [c[-2] for c in cmds] == ["gpu-a", "gpu-b"]
    words = remote_words(cmds[0])
    assert "venv" in words and "-e" in words
    jax = words.index(f"jax[cuda13]=={pinned_jax_version()}")
    assert words[jax + 1 : jax + 4] == ["x", "y", "&&"]  # repeated --pip, in order


def test_gpu_logs_and_stop():
    (logs,) = dry_run(GPU, "logs", "--hosts=gpu-a,gpu-b", "--remote-dir=/srv/lazy_jax")
    assert logs[-2] == "gpu-a"
    assert remote_words(logs)[-1] == "/srv/lazy_jax/logs/main.0.log"
    stops = dry_run(GPU, "stop", "--hosts=gpu-a,gpu-b")
    assert [s[-2] for s in stops] == ["gpu-a", "gpu-b"]
    assert "logs/main.1.pid" in " ".join(remote_words(stops[1]))


@pytest.mark.parametrize(
    "args, message",
    [
        (("launch",), "unknown subcommand 'launch'"),
        ((), "missing subcommand"),
        (("run", "--workdir=w"), "needs --config"),
        (("run", "--config=c.py"), "needs --workdir"),
        (("slurm", "--config=c.py"), "needs --workdir"),
        (("slurm", "--config=c.py", "--workdir=w", "--hosts=a"), "takes no --hosts"),
        (("logs",), "needs --hosts"),
        (("run", "--config=c.py", "--workdir=w", "--hosts=a,b c"), "--hosts wants"),
        (("run", "--config=c.py", "--workdir=w", "--mem-fraction=1.5"), "--mem-fraction"),
        (("slurm", "--config=c.py", "--workdir=w", "--nodes=0"), "--nodes"),
        (("setup", "--cuda=cuda11"), "--cuda"),
        (("run", "--config=c.py", "--workdir=w", "--multihost"), "unknown flag '--multihost'"),
        (("run", "--config=c.py", "--workdir=w", "--spot"), "unknown flag '--spot' for 'run'"),
        (("run", "--config=c.py", "--workdir=w", "--hosts=a", "--env=BAD"), "--env wants KEY=VALUE"),
    ],
)
def test_gpu_usage_errors(args, message, fake_path):
    assert_usage_error(GPU, args, message, fake_path)


def test_gpu_nvls_stays_off_in_every_mode():
    modes = [
        ("run", "--config=c.py", "--workdir=w"),
        ("run", "--hosts=a,b", "--config=c.py", "--workdir=w"),
        ("slurm", "--config=c.py", "--workdir=w"),
    ]
    for args in modes:
        for cmd in dry_run(GPU, *args):
            if cmd[0] != "cd":
                assert "NCCL_NVLS_ENABLE=0" in " ".join(cmd), (args, cmd)


# ------------------------------------------------- remote command lines, executed for real

FAKE_PYTHON = """#!/usr/bin/env bash
{ printf '%s\\n' "$@"; echo "NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-unset}"; \
echo "TFDS_DATA_DIR=${TFDS_DATA_DIR:-unset}"; } > argv.tmp
mv argv.tmp argv.txt
"""


def run_remote_line(command, checkout, home):
    """Runs a printed remote command with a fake .venv/bin/python; returns what it saw."""
    python = checkout / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    subprocess.run(["bash", "-c", command], check=True, timeout=60, cwd=home, env={**os.environ, "HOME": str(home)})
    seen = checkout / "argv.txt"
    for _ in range(500):  # the training process is detached: wait for it
        if seen.exists():
            return seen.read_text().splitlines()
        time.sleep(0.01)
    raise AssertionError(f"the detached process never ran: {command}")


def test_tpu_run_line_executes_with_quoted_overrides(tmp_path):
    (cmd,) = dry_run(
        TPU,
        "run",
        *SLICE,
        "--config=configs/t5.py",
        "--workdir=gs://b/r",
        "--env=TFDS_DATA_DIR=gs://b/my data",
        "--",
        "--note=it's a b",
    )
    seen = run_remote_line(option(cmd, "--command"), tmp_path / "lazy_jax", tmp_path)
    assert seen == [
        "-m",
        "lazy_jax.main",
        "--config=configs/t5.py",
        "--workdir=gs://b/r",
        "--multihost",
        "--note=it's a b",
        "NCCL_NVLS_ENABLE=unset",
        "TFDS_DATA_DIR=gs://b/my data",
    ]
    assert (tmp_path / "lazy_jax" / "logs" / "main.pid").is_file()


def test_gpu_host_line_executes_with_coordinator_flags(tmp_path):
    cmds = dry_run(
        GPU,
        "run",
        "--hosts=a,b",
        f"--remote-dir={tmp_path}/lazy jax",
        "--config=c.py",
        "--workdir=w",
        "--config.name=x y",
    )
    seen = run_remote_line(cmds[1][-1], tmp_path / "lazy jax", tmp_path)
    assert seen == [
        "-m",
        "lazy_jax.main",
        "--config=c.py",
        "--workdir=w",
        "--config.name=x y",
        "--coordinator_address=a:12345",
        "--num_processes=2",
        "--process_id=1",
        "NCCL_NVLS_ENABLE=0",
        "TFDS_DATA_DIR=unset",
    ]
    assert (tmp_path / "lazy jax" / "logs" / "main.1.pid").is_file()
