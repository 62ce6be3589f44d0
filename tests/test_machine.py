"""The CPU kind a lock was made on (glass.machine)."""

import torch


def test_the_cpu_signature_names_the_vendor_model_and_torch_instruction_set():
    from glass.machine import cpu_signature

    signature = cpu_signature()
    assert set(signature) == {"vendor", "model", "torch_cpu_capability"}
    assert signature["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
