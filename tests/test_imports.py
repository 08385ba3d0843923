"""Import hygiene: importing the pipeline (what run.py, sweeps and notebooks do first) must not
import TensorFlow Datasets or TensorFlow; those load only when a dataset is loaded."""

import pathlib
import subprocess
import sys

_PROBE = """
import sys
import ltr_jax.pipeline
heavy = sorted(m for m in ("tensorflow_datasets", "tensorflow") if m in sys.modules)
print(",".join(heavy))
"""


def test_pipeline_import_does_not_import_tfds():
    # A fresh interpreter: the test process itself has imported TFDS through other tests.
    root = pathlib.Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=root,
    )
    assert done.stdout.strip() == "", f"imported at `import ltr_jax.pipeline`: {done.stdout}"
