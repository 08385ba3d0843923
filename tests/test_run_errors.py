"""The run's front door: every user error is one ``run.py:`` line, exit code 2, before any
training, with the workdir untouched; the validation table; the divergence guard; offline runs.

run.py's ``main`` runs in this process (a subprocess per case would cost seconds each).
"""

import asyncio
import errno
import gc
import json
import os
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import FrozenConfigDict

from ltr_jax import checkpointing, config_lib, pipeline, validation
from ltr_jax import workdir as workdir_lib
from ltr_jax.stages import rebalance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import run  # noqa: E402

CE_SMOKE = os.path.join(ROOT, "configs", "baselines", "ce_cifar10_lt.py") + ":smoke"
LT_SMOKE = os.path.join(ROOT, "configs", "cifar10_lt.py") + ":smoke"


def _reset_flags():
    """Forgets the last parse, and the ``--config.*`` override flags it defined."""
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)


def _cli(capsys, *argv, config=CE_SMOKE):
    """Runs run.py in-process; returns (exit code, the ``run.py:`` lines of stderr, stderr)."""
    _reset_flags()
    capsys.readouterr()
    args = ["run.py", *([f"--config={config}"] if config else []), *argv]
    saved, sys.argv = sys.argv, args  # config_flags reads the overrides from sys.argv
    try:
        with pytest.raises(SystemExit) as exit_info:
            run.main(run._parse_flags(args))
    finally:
        sys.argv = saved
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("run.py:")]
    return exit_info.value.code, lines, err


def _snapshot(folder) -> dict:
    """Every file under ``folder`` with its bytes (None: the folder does not exist)."""
    if not os.path.exists(folder):
        return None
    snap = {}
    for d, dirs, files in os.walk(folder):
        snap.update({os.path.relpath(os.path.join(d, x), folder): None for x in dirs})
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                snap[os.path.relpath(os.path.join(d, f), folder)] = fh.read()
    return snap


def _assert_one_line(capsys, workdir, *argv, match, config=CE_SMOKE, locked=False):
    """``locked``: the error comes once the run holds the workdir (its lock file appears)."""
    before = _snapshot(workdir)
    code, lines, err = _cli(capsys, f"--workdir={workdir}", *argv, config=config)
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for part in match:
        assert part in lines[0], lines[0]
    after = _snapshot(workdir)
    if locked:
        assert after.pop(workdir_lib.LOCK_FILE) is not None
        before.pop(workdir_lib.LOCK_FILE, None)
    assert after == before  # untouched (not created when it did not exist)
    return lines[0]


@pytest.mark.parametrize(
    "argv, config, match",
    [
        ((), "configs/no_such_config.py", ("no_such_config.py does not exist",)),
        ((), CE_SMOKE.replace(":smoke", ":smok"), ("'smok'", "valid: smoke")),
        (("--stages=ce,foo",), CE_SMOKE, ("foo", "--stages", "valid: ce, crt, stage1")),
        (("--config.data.imbalance_factor=0",), CE_SMOKE, ("imbalance_factor=0", ">= 1")),
        (("--config.data.imbalance_factor=-5",), CE_SMOKE, ("imbalance_factor=-5", ">= 1")),
        (("--config.ce.batch_size=30",), CE_SMOKE, ("ce.batch_size=30", "8 devices", "=24")),
        (
            ("--config.stage2.sampler=structure",),
            LT_SMOKE,
            ("stage2.sampler", "'structure'", "valid: structured"),
        ),
        (("--config.stage2.k_per_class=-5",), LT_SMOKE, ("k_per_class=-5", ">= 0")),
        (("--config.stage2.redraw_every_epochs=0",), LT_SMOKE, ("redraw_every_epochs=0",)),
        (("--config.data.few_threshold=60",), CE_SMOKE, ("few_threshold=60", "many_threshold")),
        (("--config.data.image_size=0",), CE_SMOKE, ("data.image_size=0", "integer >= 1")),
        (("--config.data.test_fraction=1.5",), CE_SMOKE, ("test_fraction=1.5", "in (0, 1)")),
        (("--config.model.proj_dim=0",), LT_SMOKE, ("model.proj_dim=0", "integer >= 1")),
        (
            ("--config.train.checkpoint_every_minutes=-1",),
            CE_SMOKE,
            ("checkpoint_every_minutes=-1",),
        ),
    ],
)
def test_bad_config_is_one_line_before_anything(capsys, tmp_path, argv, config, match):
    _assert_one_line(capsys, str(tmp_path / "wd"), *argv, config=config, match=match)


def test_bad_inputs_found_by_loading_the_data(capsys, tmp_path):
    wd = str(tmp_path / "wd")
    big = ("imbalance_factor=1000000000", "without a training image", "9")
    _assert_one_line(capsys, wd, "--config.data.imbalance_factor=1000000000", match=big)
    _assert_one_line(
        capsys,
        wd,
        "--config.ce.batch_size=4096",
        match=("ce.batch_size=4096", "exceeds the 403 training examples"),
    )


def test_workdir_errors(capsys, tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    _assert_one_line(capsys, str(tmp_path / "afile"), match=("is a file",))
    # A missing earlier stage: refused before any folder is made.
    _assert_one_line(
        capsys,
        str(tmp_path / "fresh"),
        "--stages=stage2",
        config=LT_SMOKE,
        match=("needs stage(s) stage1, probe, not finished", "--stages=stage1,probe,stage2"),
    )
    # Read-only (as root, permissions do not stop writes: ask os.access what it would say).
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if "ro" in p else real_access(p, m))
    os.makedirs(tmp_path / "ro")
    _assert_one_line(capsys, str(tmp_path / "ro" / "wd"), match=("is not writable",))


def test_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    _reset_flags()
    argv = ["run.py", f"--config={CE_SMOKE}", f"--workdir={tmp_path}", "--stages=foo"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(validation.ConfigError, match="foo"):
        run.main(run._parse_flags([*argv, "--debug"]))
    _reset_flags()
    monkeypatch.setenv("LTR_DEBUG", "1")
    with pytest.raises(validation.ConfigError, match="foo"):
        run.main(run._parse_flags(argv))


def _started_workdir(tmp_path, **ce) -> str:
    """A workdir whose ``ce`` stage has a checkpoint (a state unlike the real one)."""
    wd = str(tmp_path / "wd")
    config = config_lib.load_config_file(CE_SMOKE)
    config.ce.update(ce)
    os.makedirs(wd)
    pipeline.record_config(FrozenConfigDict(config), wd)
    ckpt = checkpointing.Checkpointer(os.path.join(wd, "ce", "checkpoints"))
    ckpt.save(10, {"w": np.zeros(3, np.float32)})
    ckpt.close()
    return wd


def _unretrieved_futures(restore):
    """Orbax's restore, first leaving failed asyncio futures behind as a corrupt checkpoint's
    TensorStore reads do (collected unretrieved, each logs its traceback)."""

    def noisy(self, *args, **kwargs):
        loop = asyncio.new_event_loop()
        for _ in range(3):
            loop.create_future().set_exception(OSError("TensorStore read failed\n" * 50))
        loop.close()
        gc.collect()  # the futures' reports, during the restore
        return restore(self, *args, **kwargs)

    return noisy


def test_rerun_errors(capsys, caplog, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    wd = _started_workdir(tmp_path)
    _assert_one_line(
        capsys, wd, "--config.ce.epochs=3", match=("ce.epochs: 2 -> 3", "new --workdir")
    )
    _assert_one_line(
        capsys, wd, "--config.data.imbalance_factor=20", match=("data.imbalance_factor: 10 -> 20",)
    )
    restore = ocp.CheckpointManager.restore
    monkeypatch.setattr(ocp.CheckpointManager, "restore", _unretrieved_futures(restore))
    match = ("CorruptCheckpointError", "cannot be restored")
    line = _assert_one_line(capsys, wd, match=match, locked=True)
    assert len(line) < 700  # no TensorStore dump
    gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_failed_first_attempt_does_not_poison_the_workdir(tmp_path):
    wd = str(tmp_path)
    config = config_lib.load_config_file(CE_SMOKE)
    pipeline.record_config(FrozenConfigDict(config), wd)
    os.makedirs(tmp_path / "ce" / "checkpoints")  # an empty folder: the stage has not started
    config.data.imbalance_factor = 20  # a data change while no stage has started is taken
    config.data.download = False
    pipeline.record_config(FrozenConfigDict(config), wd)
    assert json.loads((tmp_path / "config.json").read_text())["data"]["imbalance_factor"] == 20
    assert not pipeline.stage_started(wd, "ce")
    (tmp_path / "ce" / "results.json").write_text("{}")
    assert pipeline.stage_started(wd, "ce")


def test_validation_table():
    config = config_lib.load_config_file(LT_SMOKE)
    stages = ("stage1", "probe", "stage2")
    pipeline.validate(FrozenConfigDict(config), stages, num_devices=8)
    bad = {
        "model.encoder": "resnet9000",
        "stage1.loss": "bnss",
        "stage1.bns.form": "papr",
        "probe.encoder_from": "stage0",
        "stage2.train": "half",
        "stage1.optim.name": "adam",
        "stage2.kernel_scale": "papr",
        "data.format": "png",
        "data.name": "cifar11",
    }
    for key, value in bad.items():
        c = config_lib.load_config_file(LT_SMOKE)
        section, _, leaf = key.rpartition(".")
        node = c
        for part in section.split("."):
            node = node[part]
        node[leaf] = value
        with pytest.raises(validation.ConfigError, match=f"{key}.*{value}") as e:
            pipeline.validate(FrozenConfigDict(c), stages, num_devices=8)
        assert "\n" not in str(e.value)
    # A section of a stage that is not requested is not checked.
    c = config_lib.load_config_file(LT_SMOKE)
    c.ce.loss = "nope"
    pipeline.validate(FrozenConfigDict(c), stages, num_devices=8)
    # A key that the config lacks (added by another feature) is skipped.
    validation.check_value("stage2.sampler", "uniform", rebalance.CHECKS["sampler"])
    with pytest.raises(validation.ConfigError, match=r"config.x=0 is invalid: it must be"):
        validation.check_value("x", 0, rebalance.CHECKS["redraw_every_epochs"])


def test_k_per_class_above_every_class_warns():
    config = config_lib.load_config_file(LT_SMOKE)
    config.stage2.k_per_class = 100
    counts, names = np.array([100, 40, 10]), ("a", "b", "c")
    warnings = validation.validate_data(FrozenConfigDict(config), ("stage2",), counts, names)
    assert list(warnings) == ["stage2"] and "does not re-balance" in warnings["stage2"][0]
    config.stage2.k_per_class = 99
    assert validation.validate_data(FrozenConfigDict(config), ("stage2",), counts, names) == {}
    empty = r"1 class\(es\) have no training images \(b\)"
    with pytest.raises(validation.ConfigError, match=empty):
        validation.validate_data(FrozenConfigDict(config), ("ce",), np.array([5, 0, 3]), names)


def test_offline_first_run_fails_fast_with_fitting_advice(tmp_path, monkeypatch):
    from ltr_jax.data.datasets import cifar, records

    def refuse(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(cifar.socket, "create_connection", refuse)
    for v in cifar._PROXY_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    assert not cifar.network_reachable("https://example.org/a.tar.gz")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert cifar.network_reachable("https://example.org/a.tar.gz")
    monkeypatch.delenv("HTTPS_PROXY")
    config = config_lib.base_config()
    config.data.data_dir = str(tmp_path)
    with pytest.raises(records.DatasetNotFoundError, match="unreachable") as e:
        cifar.load_dataset(FrozenConfigDict(config).data)
    assert "download=True" not in str(e.value) and "manual_dir" in str(e.value)
    config.data.download = False
    with pytest.raises(records.DatasetNotFoundError, match="download=True"):
        cifar.load_dataset(FrozenConfigDict(config).data)


def test_divergence_guard_unit(tmp_path):
    from types import SimpleNamespace

    from ltr_jax import train_lib

    ckpt = checkpointing.Checkpointer(str(tmp_path / "ck"))
    guard = train_lib.DivergenceGuard("stage1", SimpleNamespace(stop_on_nonfinite=True))
    assert guard.check(5, 1.5, ckpt) is None
    error = guard.check(10, float("inf"), ckpt)
    assert isinstance(error, train_lib.DivergedError)
    assert "loss inf at step 10 (last finite loss: 1.5 at step 5)" in str(error)
    assert "no checkpoint was saved yet" in str(error) and "stage1.optim.lr" in str(error)
    quiet = train_lib.DivergenceGuard("ce", SimpleNamespace(stop_on_nonfinite=False))
    assert quiet.check(5, float("nan"), ckpt) is None


@pytest.mark.slow
def test_divergence_stops_the_run_in_one_line(capsys, tmp_path):
    wd = str(tmp_path / "wd")
    code, lines, err = _cli(
        capsys,
        f"--workdir={wd}",
        "--config.ce.optim.lr=1e9",
        "--config.ce.epochs=1",
        "--config.train.log_every_steps=2",
        "--config.train.checkpoint_every_steps=2",
    )
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "Stage ce diverged: loss nan at step" in lines[0], lines[0]
    assert "last finite loss" in lines[0] and "a rerun resumes from" in lines[0]
    step = int(lines[0].split("loss nan at step ")[1].split(" ")[0])
    saved = lines[0].split("(step ")[1].split(")")[0]
    assert int(saved) == step - 2  # the last checkpoint before the non-finite log step
    assert not os.path.exists(os.path.join(wd, "ce", "results.json"))


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--config.data.imbalance_factor=0"], "data.imbalance_factor"),
        (["--config.data.nme=cifar10"], "nme"),  # a misspelt override: absl's one-line error
        ([], "--workdir_root"),
    ],
)
def test_sweep_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, match):
    from ltr_jax import sweep

    root = tmp_path / "sweep_root"
    workdir_root = [f"--workdir_root={root}"] if argv else []
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(["sweep", f"--config={CE_SMOKE}", "--seeds=2", *workdir_root, *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sweep:")]
    assert exit_info.value.code == 2, err
    assert len(lines) == 1 and "Traceback" not in err and match in lines[0], err
    assert not root.exists()  # nothing trained, no workdir made


# --------------------------------------------------------------------------------------------
# Inputs beyond the config values: files the config names, the environment, the config file.

VIT_FILE = os.path.join(ROOT, "tests", "fixtures", "transformers", "vit_cls.safetensors")


def _resnet_safetensors(path) -> str:
    """A file with a torchvision ResNet's key names (another family than a ViT)."""
    from safetensors.numpy import save_file

    save_file({"conv1.weight": np.zeros((8, 3, 3, 3), np.float32)}, str(path))
    return str(path)


@pytest.mark.parametrize(
    "case, encoder, match",
    [
        ("missing", "cifar_resnet8", ("InitFromNotFoundError", "does not exist")),
        ("vit_for_resnet", "cifar_resnet8", ("sets no parameter", "cifar_resnet8", "blocks.0.")),
        ("resnet_for_vit", "vit_smoke", ("sets no parameter", "vit_smoke", "conv1.weight")),
        ("garbage", "vit_smoke", ("cannot be read as a timm checkpoint",)),
        ("garbage_npz", "vit_smoke", ("cannot be read as a big_vision checkpoint",)),
        ("suffix", "vit_smoke", ("Cannot tell the format", "init_format")),
    ],
)
def test_bad_init_from_is_one_line_before_config_json(capsys, tmp_path, case, encoder, match):
    files = {
        "missing": str(tmp_path / "absent.safetensors"),
        "vit_for_resnet": VIT_FILE,
        "resnet_for_vit": _resnet_safetensors(tmp_path / "resnet.safetensors"),
        "garbage": str(tmp_path / "garbage.safetensors"),
        "garbage_npz": str(tmp_path / "garbage.npz"),
        "suffix": str(tmp_path / "weights.bin"),
    }
    for name in ("garbage.safetensors", "garbage.npz", "weights.bin"):
        (tmp_path / name).write_bytes(b"\x00not a checkpoint" * 10)
    argv = (f"--config.model.init_from={files[case]}", f"--config.model.encoder={encoder}")
    _assert_one_line(capsys, str(tmp_path / "wd"), *argv, match=match)


@pytest.mark.parametrize("value", ["soon", "nan", "1e999"])
def test_malformed_deadline_env_is_one_line(capsys, tmp_path, monkeypatch, value):
    monkeypatch.setenv("LTR_DEADLINE_UNIX", value)
    match = ("EnvironmentVariableError", f"LTR_DEADLINE_UNIX={value!r} is not a number")
    _assert_one_line(capsys, str(tmp_path / "wd"), match=match)


def _config_file(tmp_path, body: str) -> str:
    path = tmp_path / "my_config.py"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize(
    "body, match",
    [
        (  # a misspelt key set inside the file (not by an override)
            f"from ltr_jax import config_lib\n\ndef get_config(arg=None):\n"
            f"    c = config_lib.load_config_file({CE_SMOKE!r})\n"
            "    c.data.imbalance_factr = 50\n    return c\n",
            (
                "Unknown config key config.data.imbalance_factr",
                "did you mean config.data.imbalance_factor?",
                "Valid keys of config.data: allow_unverified_archive,",
            ),
        ),
        (
            f"from ltr_jax import config_lib\n\ndef get_config(arg=None):\n"
            f"    c = config_lib.load_config_file({CE_SMOKE!r})\n"
            "    c.ce.optim.weight_decy = 0.1\n    return c\n",
            ("config.ce.optim.weight_decy", "did you mean config.ce.optim.weight_decay?"),
        ),
        (
            "def get_config(arg=None)\n    return None\n",
            ("my_config.py does not import: SyntaxError at line 1", "Fix that line"),
        ),
        ("import no_such_module_xyz\n", ("ModuleNotFoundError at line 1", "no_such_module_xyz")),
        ("CONFIG = {}\n", ("has no get_config(arg=None) function",)),
        (
            f"from ltr_jax import config_lib\n\ndef get_config(arg=None):\n"
            f"    c = config_lib.load_config_file({CE_SMOKE!r})\n"
            "    c.data.image_size = '32'\n    return c\n",
            ("get_config(None) of config file", "failed at line 5: TypeError", "image_size"),
        ),
    ],
    ids=["misspelt_key", "misspelt_nested_key", "syntax", "import", "no_get_config", "type"],
)
def test_bad_config_file_is_one_line(capsys, tmp_path, body, match):
    config = _config_file(tmp_path, body)
    _assert_one_line(capsys, str(tmp_path / "wd"), config=config, match=match)


def test_warmup_longer_than_the_stage_is_refused(capsys, tmp_path):
    # The full recipe's 20 warm-up epochs on a 2-epoch stage 1.
    argv = ("--config.stage1.epochs=2", "--config.stage1.optim.warmup_epochs=20", "--stages=stage1")
    match = (
        "stage1.optim.warmup_epochs=20.0 exceeds config.stage1.epochs=2",
        "at most 2 (e.g. 0.2)",
    )
    _assert_one_line(capsys, str(tmp_path / "wd"), *argv, config=LT_SMOKE, match=match)
    config = config_lib.load_config_file(LT_SMOKE)
    config.stage1.optim.warmup_epochs = config.stage1.epochs  # as long as the stage: accepted
    validation.check_warmup(FrozenConfigDict(config), ("stage1", "probe", "stage2"))


def test_usage_and_help_point_to_the_reference(capsys):
    _reset_flags()
    with pytest.raises(SystemExit) as exit_info:
        run._parse_flags(["run.py"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert "usage: python run.py --config=" in err and "configs/cifar10_lt.py:smoke" in err
    assert "Configuration reference" in run.__doc__ and "\\\n" in run.__doc__
    assert "Configuration reference" in flags.FLAGS["config"].help
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "\n## Configuration reference\n" in readme  # the section --help names


def test_full_disk_is_one_line(capsys, tmp_path, monkeypatch):
    from ltr_jax import writers

    def full(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(writers, "write_json", full)
    wd = str(tmp_path / "wd")
    code, lines, err = _cli(capsys, f"--workdir={wd}")
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("run.py: DiskFullError: No space left on device while writing")
    assert os.path.join(wd, "config.json") in lines[0] and "free space" in lines[0]
    # Orbax and TensorStore wrap the OSError, or keep only its text.
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", "/ck/10")
    assert pipeline.disk_full(wrapped).filename == "/ck/10"
    assert pipeline.disk_full(ValueError("write: No space left on device")) is not None
    assert pipeline.disk_full(OSError(errno.EACCES, "Permission denied")) is None


def test_prepare_data_checks_the_config_first(capsys, tmp_path):
    body = (
        f"from ltr_jax import config_lib\n\ndef get_config(arg=None):\n"
        f"    c = config_lib.load_config_file({CE_SMOKE!r})\n"
        "    c.data.imbalance_factr = 50\n    return c\n"
    )
    config = _config_file(tmp_path, body)
    match = ("config.data.imbalance_factr",)
    _assert_one_line(capsys, str(tmp_path / "wd"), "--prepare_data", config=config, match=match)
