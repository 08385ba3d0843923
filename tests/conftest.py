"""Test setup: 8 fake CPU devices, set before JAX initialises its backends."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# A persistent compilation cache shared by every test process and the subprocesses they start:
# the smoke pipelines compile the same steps again and again, and compiling is over half of a
# smoke run on CPU. Cached executables give bit-identical results (results.json unchanged).
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "ltr_jax_test_jit_cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import jax

jax.config.update("jax_enable_x64", False)

# The longest test files first: CI distributes whole files over 2 workers (--dist loadfile) in
# collection order, and a long file picked up last leaves the other worker idle at the end.
_LONGEST_FIRST = (  # by CPU seconds in one idle run of the whole suite (CPU-2, cold cache)
    "test_multihost.py",
    "test_multihost_streamed.py",
    "test_baselines.py",
    "test_use_a_model.py",
    "test_parity_runs.py",
    "test_inputs.py",
    "test_transformer_pipeline.py",
    "test_stopping.py",
    "test_pipeline.py",
    "test_user_data.py",
    "test_run_errors.py",
    "test_stages.py",
    "test_stage_contracts.py",
    "test_parity.py",
    "test_mixed_precision.py",
    "test_notebook.py",
    "test_resnet_imagenet.py",
    "test_train.py",
    "test_transformers.py",
)


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: others keep order


def pytest_configure(config):
    # pytest-xdist (>= 3.5) reorders files by their number of tests unless told not to, which
    # would send the one-test multi-process files (the longest) last and leave a worker idle.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
