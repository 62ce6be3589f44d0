import io
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from glass.errors import GlassError, StageFailed
from glass.params import ParamsError
from glass.synth.generator import synthesis_seed
from glass.synth.sharded_run import GENERATOR_BACKENDS, GeneratorSpec, run_sharded_synthesis
from typed_params import toy_generator, toy_spec

TESTS_DIR = Path(__file__).resolve().parent
TOY_PARAMS = {"image_size": 32, "max_objects": 3}
CLASSES = [["kite"], ["tv", "pizza"], ["giraffe"], ["donut", "kite"], ["umbrella", "frisbee"]]
# Reversed: the shard plan must sort them. Every fifth prompt names a class the toy world lacks.
RECORDS = [{"key": f"toy-synth-{i:04d}", "caption": f"scene {i}", "prompt": f"scene {i}",
            "classes": CLASSES[i % len(CLASSES)]} for i in reversed(range(10))]
SEED = 7


class CrashingGenerator:
    """The toy generator, except that its process exits (as on a segfault or an OOM kill) when
    it meets ``crash_key``: only the first time (a marker file remembers) or ``always``."""

    name = "toy"

    def __init__(self, params):
        params = dict(params)
        self.crash_key = params.pop("crash_key")
        self.marker = Path(params.pop("marker"))
        self.always = params.pop("always", False)
        self.raise_instead = params.pop("raise_instead", False)
        self.toy = toy_generator(params)

    def generate_batch(self, records, seeds):
        if any(r["key"] == self.crash_key for r in records):
            if self.raise_instead:
                raise ValueError(f"cannot handle {self.crash_key}")
            if self.always or not self.marker.exists():
                self.marker.touch()
                os._exit(1)
        return self.toy.generate_batch(records, seeds)


class SlowGenerator:
    """The toy generator at ``delay_s`` per prompt, so that a run can be killed half-way."""

    name = "toy"

    def __init__(self, params):
        params = dict(params)
        self.delay_s = params.pop("delay_s")
        self.toy = toy_generator(params)

    def generate_batch(self, records, seeds):
        time.sleep(self.delay_s * len(records))
        return self.toy.generate_batch(records, seeds)


class UnbuildableGenerator:
    """A generator whose construction fails: with a project error (a setting the message
    explains) or, with ``bug``, with an ordinary exception (a bug in the generator's code)."""

    name = "toy"

    def __init__(self, params):
        if params.get("bug"):
            raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")
        raise ParamsError("synth.toy.image_size", "must be >= 32, got 8")


# Ray workers import this module by name: the ray_cluster fixture puts tests/ on their path.
GENERATOR_BACKENDS["test_crashing"] = (__name__, "CrashingGenerator")
GENERATOR_BACKENDS["test_slow"] = (__name__, "SlowGenerator")
GENERATOR_BACKENDS["test_unbuildable"] = (__name__, "UnbuildableGenerator")


def synthesize(out_dir, spec=None, **overrides):
    options = dict(shard_size=3, seed=SEED, batch_size=1, num_workers=0, jpeg_quality=90,
                   store_attention=False, progress=False)
    options.update(overrides)
    return run_sharded_synthesis(RECORDS, spec or toy_spec(TOY_PARAMS), out_dir,
                                 **options)


def snapshot(directory):
    """{file name: bytes} of everything in a run's output directory."""
    return {path.name: path.read_bytes() for path in sorted(Path(directory).iterdir())}


EXPECTED_FILES = ["manifest.json"] + [f"shard-{i:06d}.{ext}" for i in range(4)
                                      for ext in ("json", "tar")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted, in-process, batch-size-1 run everything else must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    manifest = synthesize(out)
    return manifest, snapshot(out)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    old_path = os.environ.get("PYTHONPATH")
    # Worker processes inherit the raylet's environment: let them import this module.
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR)] + ([old_path] if old_path else []))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        if old_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_path


def test_in_process_shards_hold_every_sample_and_record_skips(reference, tmp_path):
    manifest, files = reference
    assert sorted(files) == EXPECTED_FILES
    assert [s["num_samples"] for s in manifest["shards"]] == [2, 3, 2, 1]
    assert manifest["total_samples"] == 8 and manifest["total_skipped"] == 2
    skipped = [s for shard in manifest["shards"] for s in shard["skipped"]]
    assert [s["key"] for s in skipped] == ["toy-synth-0002", "toy-synth-0007"]
    assert all("giraffe" in s["reason"] for s in skipped)
    assert manifest["settings"]["seed"] == SEED

    # batch size does not change a byte
    synthesize(tmp_path, batch_size=3)
    assert snapshot(tmp_path) == files

    # every sample is readable, seeded by its key, and its mask is the generator's
    read_mask = wds.handle_extension("mask.png",
                                     lambda data: np.asarray(Image.open(io.BytesIO(data))))
    urls = [str(tmp_path / name) for name in EXPECTED_FILES if name.endswith(".tar")]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode(read_mask, "pil"))
    by_key = {record["key"]: record for record in RECORDS}
    assert sorted(s["__key__"] for s in samples) == sorted(
        k for k in by_key if "giraffe" not in by_key[k]["classes"])
    toy = toy_generator(TOY_PARAMS)
    for sample in samples:
        record = by_key[sample["__key__"]]
        expected = toy.generate(record, synthesis_seed(SEED, record["key"]))
        np.testing.assert_array_equal(sample["mask.png"], expected.mask)
        assert sample["json"]["classes"] == record["classes"]
        assert sample["json"]["seed"] == synthesis_seed(SEED, record["key"])


def test_resume_keeps_finished_shards_and_redoes_broken_ones(reference, tmp_path):
    _, files = reference
    synthesize(tmp_path)
    kept = (tmp_path / "shard-000000.tar").stat()
    # shard 1: its sidecar no longer matches the tar; shard 2: only a crash's .tar.tmp is left
    sidecar = tmp_path / "shard-000001.json"
    sidecar.write_text(sidecar.read_text().replace('"sha256": "', '"sha256": "0'))
    (tmp_path / "shard-000002.tar").unlink()
    (tmp_path / "shard-000002.tar.tmp").write_bytes(b"half a shard")
    redone = (tmp_path / "shard-000001.tar").stat()
    time.sleep(0.01)

    synthesize(tmp_path, batch_size=2)
    assert snapshot(tmp_path) == files
    after = (tmp_path / "shard-000000.tar").stat()
    assert (after.st_ino, after.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert (tmp_path / "shard-000001.tar").stat().st_ino != redone.st_ino


def test_a_run_killed_midway_resumes_to_identical_output(tmp_path):
    spec_code = 'GeneratorSpec("test_slow", dict(TOY_PARAMS, delay_s=0.1))'
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS_DIR)!r})
        from test_sharded_run import TOY_PARAMS, GeneratorSpec, synthesize
        synthesize({str(killed)!r}, {spec_code})
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not (killed / "shard-000000.tar").exists():
            assert process.poll() is None, "the run ended before its first shard appeared"
            assert time.monotonic() < deadline, "no shard appeared within 60 s"
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "manifest.json").exists()
    assert (killed / "shard-000000.json").exists()  # a finished tar always has its sidecar

    spec = GeneratorSpec("test_slow", dict(TOY_PARAMS, delay_s=0.1))
    resumed_manifest = synthesize(killed, spec, batch_size=2)
    clean_manifest = synthesize(clean, spec)
    assert resumed_manifest == clean_manifest
    assert snapshot(killed) == snapshot(clean)


def test_ray_workers_write_the_same_shards_as_the_in_process_run(reference, ray_cluster,
                                                                 tmp_path):
    _, files = reference
    synthesize(tmp_path / "one", num_workers=1, batch_size=2)
    assert snapshot(tmp_path / "one") == files
    synthesize(tmp_path / "two", num_workers=2, batch_size=3)
    assert snapshot(tmp_path / "two") == files
    with pytest.raises(ValueError, match="num_workers = 3.*2 CPUs"):
        synthesize(tmp_path / "three", num_workers=3)


def test_a_worker_that_crashes_once_is_replaced_and_its_shard_retried(ray_cluster, tmp_path,
                                                                      caplog):
    caplog.set_level(logging.INFO, logger="glass.synth.sharded_run")
    marker = tmp_path / "crashed"
    spec = GeneratorSpec("test_crashing", dict(TOY_PARAMS, crash_key="toy-synth-0004",
                                                marker=str(marker)))
    crashed_manifest = synthesize(tmp_path / "crashed_run", spec, num_workers=2)
    assert marker.exists()  # the worker did die once
    assert "died while synthesising shard-000001.tar" in caplog.text
    clean_manifest = synthesize(tmp_path / "clean_run", spec)  # marker set: no crash now
    assert crashed_manifest == clean_manifest
    assert snapshot(tmp_path / "crashed_run") == snapshot(tmp_path / "clean_run")


def test_a_shard_whose_worker_keeps_dying_fails_the_run_by_name(ray_cluster, tmp_path):
    spec = GeneratorSpec("test_crashing", dict(TOY_PARAMS, crash_key="toy-synth-0004",
                                                marker=str(tmp_path / "m"), always=True))
    with pytest.raises(RuntimeError, match=r"shard-000001\.tar.*died 2 times.*max_retries = 1"):
        synthesize(tmp_path / "out", spec, num_workers=1, max_retries=1)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_generator_errors_fail_at_once_with_the_cause(ray_cluster, tmp_path):
    spec = GeneratorSpec("test_crashing", dict(TOY_PARAMS, crash_key="toy-synth-0004",
                                                marker=str(tmp_path / "m"), raise_instead=True))
    # an ordinary exception inside the generator is a bug: not a one-line project error
    with pytest.raises(RuntimeError, match=r"shard-000001\.tar.*ValueError: cannot handle") as bug:
        synthesize(tmp_path / "raises", spec, num_workers=1)
    assert not isinstance(bug.value, GlassError)
    # a generator that cannot be built is not retried either; a project error stays one
    with pytest.raises(StageFailed, match="could not build its 'test_unbuildable' generator.*"
                                          "synth.toy.image_size: must be >= 32"):
        synthesize(tmp_path / "unbuildable", GeneratorSpec("test_unbuildable", {}),
                   num_workers=1)
    with pytest.raises(RuntimeError, match="could not build its 'test_unbuildable'.*TypeError") as bug:
        synthesize(tmp_path / "unbuildable-bug", GeneratorSpec("test_unbuildable", {"bug": True}),
                   num_workers=1)
    assert not isinstance(bug.value, GlassError)
