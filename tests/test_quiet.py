"""Quiet start-up (esmm_tf/cli.py): no absl/oneDNN/Beam worker chatter by
default, all of it back with --verbosity."""

from __future__ import annotations

import os
import subprocess

import pytest

from esmm_tf import cli
from tests.helpers import USER_ENV, run_module

NOISE_SAMPLES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795976765.600974    5452 port.cc:153] oneDNN custom operations are on. "
    "You may see slightly different numerical results.",
    "INFO:apache_beam.runners.worker.sdk_worker:Creating insecure control channel for x:1.",
    "INFO:__main__:Logging handler created.",
    "WARNING:root:apitools not found, and bigquery client libraries are not available.",
]


def test_noise_pattern_matches_the_known_lines_only():
    for line in NOISE_SAMPLES:
        assert cli.NOISE.search(line), line
    for line in (
        "error: /tmp/x/config.json not found",
        "WARNING:root:something that matters",
        "E0000 00:00:1.0 123 cuda.cc:1] failed call to cuInit",
    ):
        assert not cli.NOISE.search(line), line


def test_verbosity_from_argv():
    assert cli.verbosity_from_argv(["prog", "--model_dir=x"]) is None
    assert cli.verbosity_from_argv(["prog", "--verbosity=0"]) == 0
    assert cli.verbosity_from_argv(["prog", "--verbosity", "-1"]) == -1
    assert cli.verbosity_from_argv(["prog", "-v", "1"]) == 1
    assert cli.tf_cpp_min_log_level(0) == "0"
    assert cli.tf_cpp_min_log_level(-2) == "2"


def test_filtered_stderr_drops_noise_from_child_processes(capfd):
    script = "; ".join(f"echo '{line}' >&2" for line in [*NOISE_SAMPLES, "keep me"])
    with cli.filtered_stderr():
        subprocess.run(["sh", "-c", script], check=True)
        os.write(2, b"and me\n")
    assert capfd.readouterr().err == "keep me\nand me\n"


def run_entry(module: str, *flags: str) -> subprocess.CompletedProcess:
    # The user's environment, not the test suite's (conftest sets TF_CPP_MIN_LOG_LEVEL).
    return run_module([module, "--model_dir=/nonexistent/run", *flags], 120, env=USER_ENV)


@pytest.mark.parametrize(
    "module, flags",
    [("esmm_tf.evaluate", []), ("esmm_tf.export", ["--export_dir=/nonexistent/export"])],
)
def test_entry_point_stderr_is_one_error_line_by_default(module, flags):
    result = run_entry(module, *flags)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: /nonexistent/run/config.json not found: is '/nonexistent/run' "
        "the --model_dir of an esmm_tf.train run?"
    ]


def test_verbosity_brings_tensorflow_logs_back():
    result = run_entry("esmm_tf.evaluate", "--verbosity=0")
    assert result.returncode == 1
    assert "oneDNN custom operations are on" in result.stderr
    assert "cpu_feature_guard" in result.stderr  # a TF_CPP_MIN_LOG_LEVEL-governed INFO log


@pytest.mark.slow
def test_beam_workers_are_quiet(tiny_raw_dir, tmp_path, capfd):
    from data_prep import beam_convert

    config = beam_convert.BeamConvertConfig(
        raw_dir=tiny_raw_dir, out_dir=str(tmp_path / "out"), min_count=1, num_shards=2
    )
    options = [
        "--runner=DirectRunner",
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ]
    beam_convert.convert(config, options)
    captured = capfd.readouterr()
    assert "INFO:" not in captured.err and "WARN" not in captured.err, captured.err[:2000]
    assert "wrote " in captured.out + captured.err


def test_gpu_build_noise_on_a_host_without_gpu():
    stub = (
        "I0000 00:00:1795978569.878597   30553 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used."
    )
    cuinit = (
        "E0000 00:00:1795978574.024968   30553 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)"
    )
    assert cli.NOISE.search(stub)
    assert not cli.NOISE.search(cuinit)  # on a host with an NVIDIA driver it shows
    assert cli.NO_GPU_NOISE.search(cuinit)
