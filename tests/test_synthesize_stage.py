"""The synthesize stage checks the paper configuration's attention resolutions before anything
is loaded."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_a_resolution_without_the_chosen_attention_maps_fails_before_loading(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["synth"]["stable_diffusion"]["image_size"] = 768  # latent 96: no 16x16 / 32x32 maps
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "stages/synthesize.py", "--params", str(params_file),
         "--prompts", str(tmp_path / "absent.jsonl"), "--models", str(tmp_path / "no-models"),
         "--out", str(tmp_path / "shards"), "--scratch", str(tmp_path / "scratch"),
         "--metrics", str(tmp_path / "m.json"), "--grid", str(tmp_path / "g.png")],
        cwd=REPO, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert result.returncode == 2, result.stderr
    assert "768" in result.stderr and "16" in result.stderr
    assert "glass-model.json" not in result.stderr  # failed before even reading the models
    assert not (tmp_path / "shards").exists()


def test_paper_models_missing_from_the_cache_fail_before_ray_starts(tmp_path):
    """The paper configuration offline without SD 2.1 in the Hugging Face cache: the stage names
    the model and the fix before any Ray worker is started (it used to fail minutes later)."""
    from glass.io import write_json, write_jsonl

    write_jsonl(tmp_path / "prompts.jsonl", [{"image_id": "p0", "caption": "a dog",
                                              "classes": ["dog"], "prompt": "a dog; dog"}])
    models = tmp_path / "models"
    for role, model_id in (("stable_diffusion", "stabilityai/stable-diffusion-2-1-base"),
                           ("sam2", "facebook/sam2.1-hiera-large")):
        write_json(models / role / "glass-model.json", {"role": role, "source": "hub",
                                                        "id": model_id})
    result = subprocess.run(
        [sys.executable, "stages/synthesize.py", "--params", "params.yaml",
         "--prompts", str(tmp_path / "prompts.jsonl"), "--models", str(models),
         "--out", str(tmp_path / "shards"), "--scratch", str(tmp_path / "scratch"),
         "--metrics", str(tmp_path / "m.json"), "--grid", str(tmp_path / "g.png")],
        cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache")))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "synthesize cannot start" in result.stderr
    assert "hf download stabilityai/stable-diffusion-2-1-base" in result.stderr
    assert "sam2" not in result.stderr.split("cannot start")[1]   # mask_source attention: unused
    assert "Ray" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "shards").exists() and not (tmp_path / "scratch").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_ray_address_fails_within_the_timeout_naming_it(tmp_path):
    import time

    params = yaml.safe_load((REPO / "configs/cpu/params.yaml").read_text())
    params["synth"]["ray_connect_timeout_s"] = 3
    params["synth"]["backend"] = "toy"      # needs no models folder: the Ray check is what is tested
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    address = f"127.0.0.1:{_free_port()}"   # nothing listens there
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "stages/synthesize.py", "--params", str(params_file),
         "--prompts", str(tmp_path / "prompts.jsonl"), "--models", str(tmp_path / "models"),
         "--out", str(tmp_path / "shards"), "--scratch", str(tmp_path / "scratch"),
         "--metrics", str(tmp_path / "m.json"), "--grid", str(tmp_path / "g.png")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, RAY_ADDRESS=address))
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"no Ray cluster answers at RAY_ADDRESS={address} within 3 s" in result.stderr
    assert "Traceback" not in result.stderr
    # within the timeout (plus the interpreter's start-up), and nothing left running
    assert elapsed < 60, elapsed
    leftover = subprocess.run(["pgrep", "-f", address], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


def test_a_ray_address_that_accepts_but_is_not_ray_fails_within_the_timeout(tmp_path):
    import socket
    import threading

    from glass.errors import StageFailed
    from glass.synth.sharded_run import check_ray_address

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    threading.Thread(target=lambda: [server.accept() for _ in range(50)], daemon=True).start()
    address = f"127.0.0.1:{server.getsockname()[1]}"
    try:
        try:
            check_ray_address(address, 8)
        except StageFailed as error:
            assert address in str(error)
        else:
            raise AssertionError("a port that is not Ray's was accepted")
        leftover = subprocess.run(["pgrep", "-f", f"ray.init.*{address}"], capture_output=True,
                                  text=True)
        assert leftover.stdout.strip() == ""   # the probe was killed with what it started
    finally:
        server.close()
