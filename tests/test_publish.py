"""Publishing finished folders: the old output stays until the new one is complete and in place,
on one filesystem and across two (a tmpfs mounted by the test when it runs as root)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from glass import io as glass_io
from glass.io import publish_directory, remove_leftovers, staging_directory


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


@pytest.fixture
def other_filesystem(tmp_path):
    """A folder on another filesystem than tmp_path: a tmpfs mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a second filesystem needs root")
    mount_point = Path("/tmp") / f"glass-tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        assert os.stat(mount_point).st_dev != os.stat(tmp_path).st_dev
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)
        mount_point.rmdir()


def test_publishing_replaces_the_old_folder_and_consumes_the_source(tmp_path):
    dest = _folder(tmp_path / "out", {"old.txt": "old"})
    source = _folder(tmp_path / "scratch" / "run", {"a.txt": "a", "sub/b.txt": "b"})
    publish_directory(source, dest)
    assert _tree(dest) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert not source.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "scratch"]   # nothing left over


def test_a_failed_copy_leaves_both_the_old_output_and_the_source(tmp_path, monkeypatch):
    dest = _folder(tmp_path / "out", {"old.txt": "old"})
    source = _folder(tmp_path / "scratch", {"a.txt": "a"})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(glass_io, "_same_filesystem", lambda *a: False)   # force the copy
    monkeypatch.setattr(shutil, "copytree", full_disk)
    with pytest.raises(OSError, match="No space left"):
        publish_directory(source, dest)
    assert _tree(dest) == {"old.txt": b"old"} and _tree(source) == {"a.txt": b"a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "scratch"]


def test_without_an_atomic_exchange_the_two_renames_still_never_lose_the_new_folder(tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setattr(glass_io, "_exchange", lambda a, b: False)
    dest = _folder(tmp_path / "out", {"old.txt": "old"})
    publish_directory(_folder(tmp_path / "new", {"n.txt": "n"}), dest)
    assert _tree(dest) == {"n.txt": b"n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_keep_source_copies_and_leftovers_of_killed_runs_are_removed(tmp_path):
    dest = tmp_path / "live"
    source = _folder(tmp_path / "scratch-live", {"metrics.json": "{}"})
    leftover = _folder(tmp_path / f".live{glass_io.STAGING_MARK}dead", {"x": "x"})
    publish_directory(source, dest, keep_source=True)
    assert _tree(dest) == _tree(source) == {"metrics.json": b"{}"}
    assert not leftover.exists() and remove_leftovers(dest) == []


def test_a_folder_built_in_staging_is_removed_when_the_build_fails(tmp_path):
    dest = _folder(tmp_path / "model", {"weights": "old"})
    with pytest.raises(KeyboardInterrupt):
        with staging_directory(dest) as staged:
            (staged / "weights").write_text("half")
            raise KeyboardInterrupt
    assert _tree(dest) == {"weights": b"old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_shards_published_across_filesystems(tmp_path, other_filesystem):
    """The defect: scratch on one filesystem, --out on another (a mounted volume). Synthesis
    used to delete the old shards, then fail renaming with EXDEV, leaving 0 files."""
    from glass.data.toy_world import ToyWorldConfig
    from glass.io import write_jsonl
    from glass.synth.params import SynthParams, SynthToyParams
    from glass.synth.run import run_synthesize

    prompts = [{"image_id": f"p{i}", "caption": "c", "classes": ["kite"], "prompt": "c; kite"}
               for i in range(5)]
    write_jsonl(tmp_path / "prompts.jsonl", prompts)
    synth = SynthParams(backend="toy", max_samples=None, shard_size=2, num_workers=0,
                        toy=SynthToyParams(world=ToyWorldConfig(image_size=32)))
    out = _folder(other_filesystem / "shards", {"shard-old.tar": "previous run"})
    metrics = run_synthesize(tmp_path / "prompts.jsonl", synth, {}, 0, out, tmp_path / "scratch",
                             tmp_path / "metrics.json", tmp_path / "grid.png")
    assert metrics["samples"] == 5 and metrics["shards"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["total_samples"] == 5 and not (out / "shard-old.tar").exists()
    assert list((tmp_path / "scratch").iterdir()) == []   # deleted only once the copy was in
    # and the other way round: scratch on the mounted volume, output on the disk
    again = run_synthesize(tmp_path / "prompts.jsonl", synth, {}, 0, tmp_path / "shards",
                           other_filesystem / "scratch", tmp_path / "m2.json", tmp_path / "g2.png")
    assert again["samples"] == 5 and _tree(tmp_path / "shards") == _tree(out)
    assert list((other_filesystem / "scratch").iterdir()) == []


def test_publishing_across_filesystems_copies_then_swaps(tmp_path, other_filesystem):
    dest = _folder(tmp_path / "out", {"old.txt": "old"})
    source = _folder(other_filesystem / "run", {"a.txt": "a", "sub/b.txt": "b"})
    publish_directory(source, dest)
    assert _tree(dest) == {"a.txt": b"a", "sub/b.txt": b"b"} and not source.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_interrupted_model_build_keeps_the_finished_model(tmp_path, monkeypatch):
    from glass import models

    out = tmp_path / "models" / "dinov2"
    models.materialize_model("dinov2", models.ModelSpec(tiny=True), out)
    before = _tree(out)

    def killed(folder, seed=0):
        Path(folder).mkdir(parents=True)
        (Path(folder) / "config.json").write_text("{half")
        raise KeyboardInterrupt

    monkeypatch.setitem(models.TINY_BUILDERS, "dinov2", killed)
    with pytest.raises(KeyboardInterrupt):
        models.materialize_model("dinov2", models.ModelSpec(tiny=True, seed=1), out)
    assert _tree(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["dinov2"]
