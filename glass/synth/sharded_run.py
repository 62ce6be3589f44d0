"""The shard-parallel synthesis job: prompt records → WebDataset shards, one Ray actor per worker.

The driver plans shards from the sample keys, keeps the shards a previous run finished, and
hands the others out one at a time to actors that each build their generator once (one GPU
each, or one CPU thread each without GPUs). A worker process that dies is replaced and its
shard retried, up to ``max_retries`` times. ``num_workers=0`` runs everything in this process
(debugging, tests). Shards do not depend on which worker wrote them, the batch size or how often
the run was interrupted: each sample's seed comes from (seed, key) and a shard's bytes only from
its samples. The manifest is written last, so its presence means the run is complete.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from glass.errors import GlassError, InvalidInput, StageFailed
from glass.io import fingerprint as digest
from glass.synth.generator import Generator, SkipSample, SynthSample, synthesis_seed
from glass.synth.params import GeneratorSettings
from glass.synth.shards import (
    completed_sidecar,
    encode_sample,
    plan_shards,
    remove_stale_files,
    shard_name,
    write_manifest,
    write_shard,
)

logger = logging.getLogger(__name__)

# Synthesis backends by name: (module, attribute path of a factory taking the spec's params).
# Imported only where the generator is built (inside the worker), so the driver never loads a
# model's dependencies.
GENERATOR_BACKENDS: dict[str, tuple[str, str]] = {
    # both take a glass.synth.params.GeneratorSettings (glass.synth.backends)
    "toy": ("glass.synth.backends", "build_generator"),
    "stable_diffusion": ("glass.synth.backends", "build_generator"),
}


@dataclass(frozen=True)
class GeneratorSpec:
    """What a worker needs to build its generator: picklable, cheap to ship. ``params`` is the
    factory's argument: a ``GeneratorSettings`` for the project's backends (a dict for
    backends that tests register)."""

    backend: str
    params: Any = field(default_factory=dict)
    # (module, attribute), looked up in GENERATOR_BACKENDS when the spec is made in the driver,
    # so backends registered at run time (tests) reach workers that never saw the registration.
    factory: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if self.factory is None:
            if self.backend not in GENERATOR_BACKENDS:
                raise InvalidInput(f"unknown synthesis backend {self.backend!r}; known: "
                                 f"{sorted(GENERATOR_BACKENDS)}")
            object.__setattr__(self, "factory", tuple(GENERATOR_BACKENDS[self.backend]))

    def build(self) -> Generator:
        module_name, attribute = self.factory
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target(dict(self.params) if isinstance(self.params, dict) else self.params)

    def record(self) -> Any:
        """What of ``params`` decides the shards' bytes, as JSON-able data."""
        if isinstance(self.params, GeneratorSettings):
            return self.params.relevant()
        return self.params


@dataclass
class ShardJob:
    """One shard's work: its prompt records (sorted by key) and the digest of its inputs."""

    name: str
    records: list[dict]
    inputs_sha256: str


@dataclass(frozen=True)
class SynthesisSettings:
    """How a worker synthesises a shard (batch_size only changes speed, never bytes)."""

    seed: int
    batch_size: int
    jpeg_quality: int
    store_attention: bool


def synthesize_shard(generator: Generator, job: ShardJob, out_dir: Path,
                     settings: SynthesisSettings,
                     on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Generate, encode and write one shard (tar + sidecar); return its sidecar."""
    encoded: dict[str, dict[str, bytes]] = {}
    skipped: list[dict[str, str]] = []
    for start in range(0, len(job.records), settings.batch_size):
        batch = job.records[start:start + settings.batch_size]
        # The seed comes from the key, never the batch position: batch size cannot matter.
        seeds = [synthesis_seed(settings.seed, record["key"]) for record in batch]
        results = generator.generate_batch(batch, seeds)
        if len(results) != len(batch):
            raise RuntimeError(f"{job.name}: generator {generator.name!r} returned "
                               f"{len(results)} results for a batch of {len(batch)}")
        for record, result in zip(batch, results):
            if isinstance(result, SkipSample):
                skipped.append({"key": record["key"], "reason": str(result)})
            elif isinstance(result, SynthSample):
                if result.key != record["key"]:
                    raise RuntimeError(f"{job.name}: generator {generator.name!r} returned sample "
                                       f"{result.key!r} in place of {record['key']!r}")
                encoded[result.key] = encode_sample(result, jpeg_quality=settings.jpeg_quality,
                                                    store_attention=settings.store_attention)
            else:
                raise TypeError(f"{job.name}: generator {generator.name!r} returned "
                                f"{type(result).__name__} for {record['key']!r}")
        if on_batch is not None:
            on_batch(len(batch))
    return write_shard(out_dir / job.name, encoded, skipped=skipped,
                       inputs_sha256=job.inputs_sha256)


# ---------------------------------------------------------------------------------------------
# Ray workers
# ---------------------------------------------------------------------------------------------


def _limit_cpu_threads() -> None:
    # Two CPU workers on two cores must not each start a thread per core. The variables cover
    # libraries loaded later; torch may already be loaded by the generator's module.
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


class ShardWorker:
    """A Ray actor: builds the generator once, then synthesises whole shards on request."""

    def __init__(self, spec: GeneratorSpec, out_dir: str, settings: SynthesisSettings,
                 use_gpu: bool):
        started = time.perf_counter()
        if not use_gpu:
            _limit_cpu_threads()
        self.generator = spec.build()
        if not use_gpu:
            _limit_cpu_threads()
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.startup_s = time.perf_counter() - started

    def ready(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "startup_s": self.startup_s}

    def process(self, job: ShardJob) -> dict[str, Any]:
        started, cpu_started = time.perf_counter(), time.process_time()
        sidecar = synthesize_shard(self.generator, job, self.out_dir, self.settings)
        # CPU time next to wall time tells a slow shard from a worker starved of a core.
        return {"sidecar": sidecar, "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started, "pid": os.getpid()}


class RayShardPool:
    """``num_workers`` ShardWorker actors; shards go to whichever worker is free.

    A worker process that dies (segfault, OOM kill, os._exit) surfaces as RayActorError; the
    pool then starts a fresh actor in its slot and resubmits the shard, at most ``max_retries``
    times per shard. An exception raised by the generator is not retried: it would only repeat.
    """

    def __init__(self, spec: GeneratorSpec, out_dir: Path, settings: SynthesisSettings, *,
                 num_workers: int, use_gpu: bool, max_retries: int):
        import ray

        self.max_retries = max_retries
        self._actor_class = ray.remote(ShardWorker).options(
            num_cpus=1, num_gpus=1 if use_gpu else 0, max_restarts=0, max_task_retries=0)
        self._actor_args = (spec, str(out_dir), settings, use_gpu)
        self.workers = [self._start_worker() for _ in range(num_workers)]

    def _start_worker(self) -> Any:
        return self._actor_class.remote(*self._actor_args)

    def wait_ready(self) -> list[dict[str, Any]]:
        """Block until every worker has built its generator (for timing steady-state work)."""
        import ray

        return ray.get([worker.ready.remote() for worker in self.workers])

    def run(self, jobs: list[ShardJob],
            on_done: Callable[[int, ShardJob, dict[str, Any]], None]) -> None:
        import ray
        from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

        queue = deque(jobs)
        deaths: dict[str, int] = {}
        in_flight: dict[Any, tuple[int, ShardJob]] = {}

        def submit(slot: int) -> None:
            job = queue.popleft()
            in_flight[self.workers[slot].process.remote(job)] = (slot, job)

        for slot in range(min(len(self.workers), len(queue))):
            submit(slot)
        while in_flight:
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            slot, job = in_flight.pop(ref)
            try:
                result = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as error:
                if getattr(error, "actor_init_failed", False):
                    # __init__ raised: the generator cannot be built, and no retry would help
                    failure = StageFailed if _names_project_error(_last_line(error)) else RuntimeError
                    raise failure(f"a synthesis worker could not build its "
                                  f"{self._actor_args[0].backend!r} generator: "
                                  f"{_last_line(error)}") from error
                self._replace_after_death(slot, job, error, deaths)
                queue.appendleft(job)
                submit(slot)
                continue
            except RayTaskError as error:
                cause = getattr(error, "cause", None) or error
                # a project error explains itself in one line; anything else is a bug whose
                # traceback (chained here) must stay visible
                failure = StageFailed if isinstance(cause, GlassError) else RuntimeError
                raise failure(f"synthesis of {job.name} failed on worker {slot}: "
                              f"{type(cause).__name__}: {_last_line(cause)}") from error
            on_done(slot, job, result)
            if queue:
                submit(slot)

    def _replace_after_death(self, slot: int, job: ShardJob, error: Exception,
                             deaths: dict[str, int]) -> None:
        """Count a worker death against ``job``; fail the run past ``max_retries``, else put a
        fresh actor in the slot."""
        import ray

        deaths[job.name] = deaths.get(job.name, 0) + 1
        if deaths[job.name] > self.max_retries:
            raise StageFailed(
                f"synthesis of {job.name} failed: its worker process died {deaths[job.name]} "
                f"times (max_retries = {self.max_retries}); last error: {_first_line(error)}"
            ) from error
        logger.warning("worker %d died while synthesising %s (%s); restarting it and retrying "
                       "the shard (%d/%d)", slot, job.name, _first_line(error), deaths[job.name],
                       self.max_retries)
        ray.kill(self.workers[slot], no_restart=True)
        self.workers[slot] = self._start_worker()

    def shutdown(self) -> None:
        import ray

        for worker in self.workers:
            ray.kill(worker, no_restart=True)
        self.workers = []


def _names_project_error(line: str) -> bool:
    """Whether a remote traceback's last line ("module.Class: message") names one of the
    project's own error types (glass.errors.GlassError and its subclasses)."""
    match = re.match(r"^([A-Za-z_][\w.]*)\.(\w+):", line)
    if not match or not match.group(1).startswith("glass"):
        return False
    try:
        found = getattr(importlib.import_module(match.group(1)), match.group(2))
    except (ImportError, AttributeError):
        return False
    return isinstance(found, type) and issubclass(found, GlassError)


def _first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


def _last_line(error: BaseException) -> str:
    # A remote error's text ends with the original "ValueError: ..." after its traceback.
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def check_ray_address(address: str, timeout_s: float) -> None:
    """Fail within ``timeout_s`` with StageFailed naming ``address`` (``RAY_ADDRESS``) when no
    Ray cluster answers there. Ray's own ``ray.init`` retries an unreachable address forever,
    printing warnings only; so first a TCP connection to its port is tried until the deadline,
    then ``ray.init`` itself in a child process that is killed (with anything it started) at
    the deadline."""
    if address in ("auto", "local"):
        return
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInput(f"RAY_ADDRESS={address!r} is not host:port (or ray://host:port, auto)")
    deadline = time.monotonic() + timeout_s
    error: OSError | None = None
    while True:
        try:
            with socket.create_connection((host, int(port)),
                                          timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                break
        except OSError as caught:
            error = caught
        if time.monotonic() >= deadline:
            raise StageFailed(f"no Ray cluster answers at RAY_ADDRESS={address} within "
                              f"{timeout_s:g} s ({error}). Start it (`ray start --head "
                              f"--port={port}` on {host}), fix the address, or unset RAY_ADDRESS "
                              "to use a local Ray on this machine; synth.ray_connect_timeout_s "
                              "sets the wait")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    probe = subprocess.Popen(
        [sys.executable, "-c", "import ray, sys; ray.init(address=sys.argv[1], "
         "logging_level='ERROR'); ray.shutdown()", address],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = probe.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        os.killpg(probe.pid, signal.SIGKILL)   # the probe and whatever it started
        probe.wait()
        raise StageFailed(f"RAY_ADDRESS={address} accepts connections but no Ray cluster "
                          f"answered there within {timeout_s:g} s; check that it is the head "
                          "node's GCS port (ray status on that machine)") from None
    if probe.returncode != 0:
        last = [line for line in stderr.splitlines() if line.strip()][-1:] or ["no output"]
        raise StageFailed(f"cannot connect to the Ray cluster at RAY_ADDRESS={address}: "
                          f"{last[0].strip()}")


def connect_ray(num_workers: int | None) -> bool:
    """Use the running Ray, the cluster at $RAY_ADDRESS, or a new local instance with one CPU
    per worker. Return whether this call connected (and so should shut Ray down after)."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # address="local": never attach to some other session's cluster on this machine.
        ray.init(address="local", num_cpus=num_workers, include_dashboard=False)
    return True


def resolve_workers(num_workers: int | None) -> tuple[int, bool]:
    """(number of workers, whether they use GPUs), checked against the cluster's resources."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    use_gpu = gpus > 0
    available = gpus if use_gpu else cpus
    if num_workers is None:
        num_workers = available
    if num_workers < 1 or num_workers > available:
        raise InvalidInput(f"num_workers = {num_workers}, but the Ray cluster has {available} "
                         f"{'GPUs' if use_gpu else 'CPUs'} for synthesis workers (one each)")
    return num_workers, use_gpu


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def run_settings(generator_spec: GeneratorSpec, *, shard_size: int, seed: int, jpeg_quality: int,
                 store_attention: bool) -> dict[str, Any]:
    """The settings that decide the shards' contents (not batch size or worker count, which
    must not)."""
    return {"generator": {"backend": generator_spec.backend, "params": generator_spec.record()},
            "shard_size": shard_size, "seed": seed, "jpeg_quality": jpeg_quality,
            "store_attention": store_attention}


def plan_jobs(records: list[dict], shard_size: int, fingerprint: str) -> list[ShardJob]:
    missing = [i for i, record in enumerate(records) if "key" not in record]
    if missing:
        raise InvalidInput(f"prompt records {missing[:5]} have no 'key'")
    by_key = {record["key"]: record for record in records}
    jobs = []
    for index, keys in enumerate(plan_shards([record["key"] for record in records], shard_size)):
        shard_records = [by_key[key] for key in keys]
        inputs_sha256 = digest({"settings": fingerprint, "records": shard_records})
        jobs.append(ShardJob(shard_name(index), shard_records, inputs_sha256))
    return jobs


def run_sharded_synthesis(records: list[dict], generator_spec: GeneratorSpec,
                          out_dir: str | os.PathLike, *, shard_size: int, seed: int,
                          batch_size: int, num_workers: int | None, jpeg_quality: int,
                          store_attention: bool, max_retries: int = 2, progress: bool = True,
                          fingerprint: str | None = None) -> dict[str, Any]:
    """Synthesise every record into ``out_dir``'s shards; return the manifest (written last).

    ``fingerprint``: the caller's digest of its settings, recorded in the manifest (default:
    the digest of this function's own settings). Either way a shard is redone on resume when
    its records or anything that decides its bytes changed.
    """
    if batch_size < 1:
        raise InvalidInput(f"batch_size must be >= 1, got {batch_size}")
    if not 1 <= jpeg_quality <= 100:
        raise InvalidInput(f"jpeg_quality must be in [1, 100], got {jpeg_quality}")
    if num_workers is not None and num_workers < 0:
        raise InvalidInput(f"num_workers must be >= 0 or None, got {num_workers}")
    # Absolute: Ray workers need not share the driver's working directory.
    out_dir = Path(out_dir).absolute()
    settings_record = run_settings(generator_spec, shard_size=shard_size, seed=seed,
                                   jpeg_quality=jpeg_quality, store_attention=store_attention)
    own_fingerprint = digest(settings_record)
    jobs = plan_jobs(records, shard_size, f"{own_fingerprint}:{fingerprint}")
    settings = SynthesisSettings(seed=seed, batch_size=batch_size, jpeg_quality=jpeg_quality,
                                 store_attention=store_attention)

    out_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_files(out_dir, [job.name for job in jobs])
    if removed:
        logger.info("removed %d stale file(s) from %s: %s", len(removed), out_dir,
                    ", ".join(removed[:5]) + (" ..." if len(removed) > 5 else ""))
    pending = [job for job in jobs
               if completed_sidecar(out_dir / job.name, [r["key"] for r in job.records],
                                    job.inputs_sha256) is None]
    logger.info("%d prompts in %d shards; %d shards already complete, %d to synthesise",
                len(records), len(jobs), len(jobs) - len(pending), len(pending))

    done_prompts = len(records) - sum(len(job.records) for job in pending)
    with logging_redirect_tqdm(), tqdm(total=len(records), initial=done_prompts, unit="prompt",
                                       desc="synthesis", disable=not progress) as bar:
        if pending and num_workers == 0:
            _run_in_process(generator_spec, pending, out_dir, settings, bar)
        elif pending:
            _run_on_ray(generator_spec, pending, out_dir, settings, num_workers=num_workers,
                        max_retries=max_retries, bar=bar)

    sidecars = []
    for job in jobs:
        sidecar = completed_sidecar(out_dir / job.name, [r["key"] for r in job.records],
                                    job.inputs_sha256)
        if sidecar is None:
            raise RuntimeError(f"{out_dir / job.name} is missing or does not match its sidecar "
                               "after synthesis (was the directory changed during the run?)")
        sidecars.append(sidecar)
    manifest = write_manifest(out_dir, sidecars, settings_record,
                              fingerprint if fingerprint is not None else own_fingerprint)
    logger.info("wrote %d samples (%d prompts skipped) in %d shards to %s",
                manifest["total_samples"], manifest["total_skipped"], manifest["total_shards"],
                out_dir)
    return manifest


def _run_in_process(spec: GeneratorSpec, jobs: list[ShardJob], out_dir: Path,
                    settings: SynthesisSettings, bar: tqdm) -> None:
    generator = spec.build()
    for job in jobs:
        started = time.perf_counter()
        sidecar = synthesize_shard(generator, job, out_dir, settings, on_batch=bar.update)
        logger.info("in-process: %s, %d samples, %d skipped, %.2f s", job.name,
                    sidecar["num_samples"], len(sidecar["skipped"]),
                    time.perf_counter() - started)


def _run_on_ray(spec: GeneratorSpec, jobs: list[ShardJob], out_dir: Path,
                settings: SynthesisSettings, *, num_workers: int | None, max_retries: int,
                bar: tqdm) -> None:
    import ray

    owns_ray = connect_ray(num_workers)
    pool = None
    try:
        num_workers, use_gpu = resolve_workers(num_workers)
        num_workers = min(num_workers, len(jobs))  # idle actors would only cost start-up time
        logger.info("starting %d %s worker(s)", num_workers, "GPU" if use_gpu else "CPU")
        pool = RayShardPool(spec, out_dir, settings, num_workers=num_workers, use_gpu=use_gpu,
                            max_retries=max_retries)
        finished = 0

        def on_done(slot: int, job: ShardJob, result: dict[str, Any]) -> None:
            nonlocal finished
            finished += 1
            sidecar = result["sidecar"]
            logger.info("worker %d (pid %d): %s, %d samples, %d skipped, %.2f s (%.2f s CPU)",
                        slot, result["pid"], job.name, sidecar["num_samples"],
                        len(sidecar["skipped"]), result["seconds"], result["cpu_seconds"])
            bar.update(len(job.records))
            bar.set_postfix(shards=f"{finished}/{len(jobs)}")

        pool.run(jobs, on_done)
    finally:
        if pool is not None:
            pool.shutdown()
        if owns_ray:
            ray.shutdown()
