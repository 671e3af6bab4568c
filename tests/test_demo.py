"""The demo books a GPU only where the machine shows one (``nvidia-smi -L``)."""
import os

from deepconsensus_plugin import demo


def _fake_smi(folder, output: str, code: int) -> str:
    path = os.path.join(folder, "nvidia-smi")
    with open(path, "w") as handle:
        handle.write("#!/bin/sh\necho '%s'\nexit %d\n" % (output, code))
    os.chmod(path, 0o755)
    return path


def test_no_nvidia_smi_means_no_gpu(monkeypatch):
    monkeypatch.setattr(demo.shutil, "which", lambda name: None)
    assert demo.machine_has_gpu() is False


def test_a_listed_gpu_is_booked(monkeypatch, tmp_path):
    smi = _fake_smi(str(tmp_path), "GPU 0: NVIDIA H200 (UUID: GPU-1234)", 0)
    monkeypatch.setattr(demo.shutil, "which", lambda name: smi)
    assert demo.machine_has_gpu() is True


def test_a_driver_that_fails_or_lists_nothing_means_no_gpu(monkeypatch, tmp_path):
    smi = _fake_smi(str(tmp_path), "NVIDIA-SMI has failed because it couldn't communicate "
                                   "with the NVIDIA driver", 9)
    monkeypatch.setattr(demo.shutil, "which", lambda name: smi)
    assert demo.machine_has_gpu() is False
    smi = _fake_smi(str(tmp_path), "No devices were found", 0)
    assert demo.machine_has_gpu() is False
