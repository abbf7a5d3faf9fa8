"""tal.checkpoints.provenance: what a result records about the machine that produced it."""

import json
import os
import subprocess
import sys

import torch

from tal.checkpoints.provenance import cpu_model, describe_environment


def test_describes_this_process():
    environment = describe_environment()
    assert environment["torch"] == torch.__version__
    assert environment["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    assert environment["torch_threads"] == torch.get_num_threads()
    assert environment["cpu_model"] == cpu_model() and cpu_model()
    assert (environment["cuda_device"] is None) == (not torch.cuda.is_available())
    json.dumps(environment)  # goes into results.json and manifests as it is


def test_records_a_forced_kernel_path():
    """ATEN_CPU_CAPABILITY changes the kernels torch runs, and the record says so."""
    script = (
        "import json; from tal.checkpoints.provenance import describe_environment; "
        "print(json.dumps(describe_environment()))"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    recorded = json.loads(out.stdout)
    assert recorded["cpu_kernels"] == "DEFAULT" and recorded["torch_threads"] == 1
