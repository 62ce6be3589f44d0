"""The CPU kind a lock was made on: what decides whether float outputs can be the same bytes.

Seeds fix every random choice, and on one kind of CPU the CPU configuration's outputs are the same
bytes whatever the worker count or resume history. Across kinds they are not: torch's matrix and
convolution kernels are chosen per instruction set and vendor (oneDNN, MKL), and they round
differently, so Stable Diffusion's images differ in their last bits and training drifts from
there (measured between two machines: identical synthesis and pseudo-mask metrics, toy-val mIoU_i
0.469 vs 0.472; README, "One environment, one lock"). ``cpu_signature`` names the kind.
"""

from __future__ import annotations

from pathlib import Path

LOCK_MACHINE_NAME = "lock_machine.json"   # beside a configuration's dvc.lock


def cpu_signature() -> dict[str, str]:
    """Vendor, model name and the instruction set torch dispatches to (e.g. AVX512)."""
    import torch

    info = {"vendor_id": "unknown", "model name": "unknown"}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in info and info[key] == "unknown":
                info[key] = value.strip()
    return {"vendor": info["vendor_id"], "model": info["model name"],
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def main() -> None:
    """``python -m glass.machine OUT``: write this machine's signature to OUT (a lock's record)."""
    import sys

    from glass.io import write_json

    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m glass.machine OUT.json")
    write_json(sys.argv[1], cpu_signature())


if __name__ == "__main__":
    main()
