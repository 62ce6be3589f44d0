"""Training batches from the synthesis shards, split across processes × dataloader workers here.

Shards (``glass.synth.shards``): ``shard-NNNNNN.tar`` with ``<key>.jpg``, ``<key>.json`` and
``<key>.mask.png`` (uint8: 0 background, k = class k, 255 unsure; absent when the sample was
generated without a mask), a sidecar ``shard-NNNNNN.json`` listing the keys, and ``manifest.json``
(written last) with every shard's size and sha256. ``load_shard_index`` checks the shards against
the manifest once; the keys come from the sidecars, so an epoch is planned without opening a tar.

The split, done in this one place (``epoch_order`` and ``slot_samples``):

1. Epoch order. The shards are shuffled with a RNG seeded by (seed, epoch); consecutive runs of
   ``shuffle_group`` shards form groups, and each group's samples are shuffled together (RNG
   seeded by (seed, epoch, group)). The concatenation is the epoch's ordered sample stream. Groups
   mix samples of several shards into one batch while a worker only ever holds one group's share
   of samples in memory.
2. Slots. Process p's dataloader worker w is slot ``s = p * W + w`` of ``N = P * W`` slots
   (W = max(1, num_workers)). Slot s takes stream positions s, s + N, s + 2N, ...: a SAMPLE-level
   split, so every sample goes to exactly one slot whatever the shard count, shard sizes or skipped
   prompts, and slot sizes differ by at most one sample. (Whole-shard assignment would be cheaper to
   read but drops or repeats samples, or unbalances slots, when the shard count is not a multiple of
   N or shards differ in size.) The cost: every slot scans the headers of every tar of the epoch,
   reading only its own members' bytes.
3. Batches. Each slot cuts its samples into batches of ``batch_size`` (the last one may be smaller:
   nothing is dropped), and the DataLoader (``batch_size=None``) hands the workers' batches out
   round robin. A slot's sample count depends only on the dataset size and the slot index, never
   on the epoch, so a process's number of batches per epoch is the same every epoch.

Because the split is complete here, the trainer must NOT pass these loaders to
``accelerate.Accelerator.prepare`` (it would shard the batches a second time, so each process
would see only 1/P of its share); move batches to the device itself.

Samples without ``mask.png`` get an all-255 mask: nothing of them is supervised by the pseudo-mask
losses (they still count for the reconstruction loss). Random horizontal flips (the LSD reference's
only augmentation, docs/paper-facts.md "Model") are drawn per (seed, epoch, key), never by position, and
applied identically to image and mask.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from glass.errors import InvalidInput, StageFailed
from glass.io import file_sha256, fingerprint
from glass.seeding import sample_rng, sample_seed
from glass.shard_format import (MANIFEST_FORMAT, MANIFEST_NAME, SHARD_PATTERN,
                                UNSURE_LABEL, read_samples, sidecar_path)

log = logging.getLogger(__name__)

ON_CORRUPT = ("raise", "skip")
VERIFY = ("sha256", "size", "none")
_END = object()  # end of an epoch's batches


class ShardError(StageFailed):
    """A shard is missing, damaged or does not match the manifest."""


class CorruptSampleError(StageFailed):
    """One sample of a shard cannot be read or decoded (the message names shard and key)."""


class TrainSample(TypedDict):
    """One training batch (B samples)."""

    key: list[str]                 # sample keys, in batch order
    image: torch.Tensor            # (B, 3, S, S) float32 in [0, 1], RGB, not normalised
    pseudo_mask: torch.Tensor      # (B, S', S') uint8: 0 bg, k class, 255 unsupervised
    flipped: torch.Tensor          # (B,) bool: image and mask were mirrored
    has_mask: torch.Tensor         # (B,) bool: False → the mask is all 255
    corrupt: list[str]             # "shard/key: reason" of samples skipped (on_corrupt="skip")


# ---------------------------------------------------------------------------------------------
# Shard index: the manifest, checked
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    name: str
    path: Path
    sha256: str
    keys: tuple[str, ...]  # sorted, as in the tar


@dataclass(frozen=True)
class ShardIndex:
    shard_dir: Path
    shards: tuple[ShardInfo, ...]        # manifest order (= name order)
    skipped: tuple[tuple[str, str], ...]  # (shard name, reason) left out by on_corrupt="skip"

    @property
    def num_samples(self) -> int:
        return sum(len(shard.keys) for shard in self.shards)

    def fingerprint(self) -> str:
        """Digest of the shards used (names and contents): a resumed stream must see the same."""
        return fingerprint([[shard.name, shard.sha256] for shard in self.shards], 16)


def _check_shard(shard_dir: Path, entry: dict, verify: str) -> ShardInfo:
    name = str(entry.get("name"))
    match = SHARD_PATTERN.match(name)
    if match is None or match.group(2) != "tar":
        raise ShardError(f"{shard_dir / MANIFEST_NAME}: {name!r} is not a shard name")
    path = shard_dir / name
    if not path.is_file():
        raise ShardError(f"{path}: shard listed in {MANIFEST_NAME} is missing")
    if verify != "none" and path.stat().st_size != entry.get("num_bytes"):
        raise ShardError(f"{path}: {path.stat().st_size} bytes, manifest says "
                         f"{entry.get('num_bytes')} (truncated or replaced)")
    if verify == "sha256" and file_sha256(path) != entry.get("sha256"):
        raise ShardError(f"{path}: sha256 does not match {MANIFEST_NAME} (corrupt or replaced)")
    try:
        sidecar = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
        keys = tuple(sidecar["keys"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ShardError(f"{sidecar_path(path)}: sidecar of {name} is missing or unreadable "
                         f"({error})") from None
    if sidecar.get("sha256") != entry.get("sha256") or len(keys) != entry.get("num_samples"):
        raise ShardError(f"{sidecar_path(path)}: sidecar does not match {MANIFEST_NAME} for {name}")
    return ShardInfo(name=name, path=path, sha256=str(entry.get("sha256")), keys=keys)


def load_shard_index(shard_dir: str | Path, *, on_corrupt: str = "raise",
                     verify: str = "sha256") -> ShardIndex:
    """Every shard of ``manifest.json``, checked (``verify``: full sha256, size only, or none).

    A missing or mismatched shard raises ShardError naming it; with ``on_corrupt="skip"`` it is
    left out, with a warning giving the count and names (``ShardIndex.skipped``).
    """
    if on_corrupt not in ON_CORRUPT:
        raise InvalidInput(f"on_corrupt must be one of {ON_CORRUPT}, got {on_corrupt!r}")
    if verify not in VERIFY:
        raise InvalidInput(f"verify must be one of {VERIFY}, got {verify!r}")
    shard_dir = Path(shard_dir)
    manifest_path = shard_dir / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShardError(f"{manifest_path} not found: the synthesize stage did not finish "
                         "(the manifest is written last)") from None
    except ValueError as error:
        raise ShardError(f"{manifest_path}: not valid JSON ({error})") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ShardError(f"{manifest_path}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_FORMAT!r}")
    shards, skipped = [], []
    for entry in sorted(manifest.get("shards", []), key=lambda e: str(e.get("name"))):
        try:
            shards.append(_check_shard(shard_dir, entry, verify))
        except ShardError as error:
            if on_corrupt == "raise":
                raise
            skipped.append((str(entry.get("name")), str(error)))
    if skipped:
        log.warning("skipping %d corrupt or missing shard(s) of %s: %s", len(skipped), shard_dir,
                    "; ".join(reason for _, reason in skipped))
    index = ShardIndex(shard_dir=shard_dir, shards=tuple(shards), skipped=tuple(skipped))
    if index.num_samples == 0:
        raise ShardError(f"{shard_dir}: no usable samples ({len(skipped)} shard(s) skipped)")
    return index


def shard_paths(shard_dir: str | Path, *, on_corrupt: str = "raise",
                verify: str = "sha256") -> list[Path]:
    """The verified shard tars of ``shard_dir``, sorted (see ``load_shard_index``)."""
    return [shard.path for shard in load_shard_index(shard_dir, on_corrupt=on_corrupt,
                                                     verify=verify).shards]


# ---------------------------------------------------------------------------------------------
# The split (the only place where samples are assigned to processes and workers)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedSample:
    group: int   # shuffle group of the epoch
    shard: int   # position in ShardIndex.shards
    key: str


def epoch_order(index: ShardIndex, *, seed: int, epoch: int,
                shuffle_group: int) -> list[PlannedSample]:
    """The epoch's ordered sample stream: shards shuffled by (seed, epoch), then the samples of
    each group of ``shuffle_group`` consecutive shards shuffled by (seed, epoch, group)."""
    if shuffle_group < 1:
        raise InvalidInput(f"shuffle_group must be >= 1, got {shuffle_group}")
    shard_rng = np.random.default_rng(sample_seed(seed, f"epoch={epoch}", "train-shard-order"))
    shard_order = shard_rng.permutation(len(index.shards)).tolist()
    stream: list[PlannedSample] = []
    for group, start in enumerate(range(0, len(shard_order), shuffle_group)):
        members = [PlannedSample(group, s, key) for s in shard_order[start:start + shuffle_group]
                   for key in index.shards[s].keys]
        rng = np.random.default_rng(sample_seed(seed, f"epoch={epoch}/group={group}",
                                                "train-sample-order"))
        stream.extend(members[i] for i in rng.permutation(len(members)))
    return stream


def slot_samples(stream: Sequence[PlannedSample], slot: int, num_slots: int) -> list[PlannedSample]:
    """Slot ``slot``'s share: stream positions slot, slot + num_slots, ... (disjoint, complete)."""
    return list(stream[slot::num_slots])


def slot_size(num_samples: int, slot: int, num_slots: int) -> int:
    """len(slot_samples(...)) without planning: independent of the epoch."""
    return max(0, math.ceil((num_samples - slot) / num_slots))


def dataloader_batch_order(batches_per_worker: Sequence[int]) -> list[int]:
    """The worker of each batch in the order a DataLoader (in_order=True) yields them: round
    robin over workers, a worker leaving the cycle once it is exhausted."""
    remaining, order = list(batches_per_worker), []
    while any(remaining):
        for worker, left in enumerate(remaining):
            if left:
                order.append(worker)
                remaining[worker] -= 1
    return order


# ---------------------------------------------------------------------------------------------
# Reading and decoding
# ---------------------------------------------------------------------------------------------


def _square(image: Image.Image) -> Image.Image:
    # Generated images are square; a non-square one is centre-cropped (as the evaluation crops)
    # rather than distorted, and its mask gets the same crop.
    width, height = image.size
    if width == height:
        return image
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def decode_sample(members: dict[str, bytes], *, image_size: int, mask_size: int,
                  flip: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """(image (S, S, 3) uint8, mask (S', S') uint8, has_mask); raises ValueError on bad data.

    Images are resized bilinearly (PIL antialiases when shrinking, like torchvision's
    ``antialias=True``), masks by nearest neighbour so that labels and 255 survive.
    """
    if "json" not in members or "jpg" not in members:
        raise InvalidInput(f"members {sorted(members)}: jpg and json are required")
    metadata = json.loads(members["json"])
    has_mask = "mask.png" in members
    if metadata.get("has_mask") and not has_mask:
        raise InvalidInput("metadata says has_mask but mask.png is missing (truncated shard?)")
    with Image.open(io.BytesIO(members["jpg"])) as raw:
        image = _square(raw.convert("RGB")).resize((image_size, image_size), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    if has_mask:
        with Image.open(io.BytesIO(members["mask.png"])) as raw:
            if raw.mode != "L":
                raise InvalidInput(f"mask.png has mode {raw.mode}, expected 8-bit grey (L)")
            mask_image = _square(raw).resize((mask_size, mask_size), Image.NEAREST)
        mask = np.asarray(mask_image, dtype=np.uint8)
    else:
        mask = np.full((mask_size, mask_size), UNSURE_LABEL, dtype=np.uint8)
    if flip:
        pixels, mask = pixels[:, ::-1], mask[:, ::-1]
    return np.ascontiguousarray(pixels), np.ascontiguousarray(mask), has_mask


def flip_decision(seed: int, epoch: int, key: str) -> bool:
    """Whether ``key`` is mirrored in ``epoch``: a function of (seed, epoch, key) only."""
    return bool(sample_rng(seed, key, f"train-flip/epoch={epoch}").random() < 0.5)


# ---------------------------------------------------------------------------------------------
# The dataset of one epoch
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoaderSettings:
    image_size: int
    mask_size: int
    batch_size: int
    num_workers: int
    seed: int
    process_index: int
    num_processes: int
    flip: bool
    on_corrupt: str = "raise"
    shuffle_group: int = 4

    def __post_init__(self) -> None:
        for name in ("image_size", "mask_size", "batch_size", "num_processes", "shuffle_group"):
            if int(getattr(self, name)) < 1:
                raise InvalidInput(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise InvalidInput(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0 <= self.process_index < self.num_processes:
            raise InvalidInput(f"process_index {self.process_index} not in [0, {self.num_processes})")
        if self.on_corrupt not in ON_CORRUPT:
            raise InvalidInput(f"on_corrupt must be one of {ON_CORRUPT}, got {self.on_corrupt!r}")

    @property
    def workers(self) -> int:
        """Slots per process: num_workers=0 reads in the main process, as one slot."""
        return max(1, self.num_workers)

    @property
    def num_slots(self) -> int:
        return self.num_processes * self.workers

    def slot(self, worker: int) -> int:
        return self.process_index * self.workers + worker


class ShardEpoch(IterableDataset):
    """One epoch of this process's batches; each dataloader worker reads its own slot.

    ``skip_batches``: the first batches of this process's epoch stream (in the DataLoader's
    order) are already consumed; their workers yield ``None`` in their place without reading.
    """

    def __init__(self, index: ShardIndex, settings: LoaderSettings, epoch: int,
                 skip_batches: int = 0):
        super().__init__()
        self.index, self.settings, self.epoch = index, settings, int(epoch)
        self.batches_per_worker = [
            math.ceil(slot_size(index.num_samples, settings.slot(w), settings.num_slots)
                      / settings.batch_size) for w in range(settings.workers)]
        total = sum(self.batches_per_worker)
        if not 0 <= skip_batches <= total:
            raise InvalidInput(f"skip_batches {skip_batches} not in [0, {total}]")
        order = dataloader_batch_order(self.batches_per_worker)
        self.skip_per_worker = [order[:skip_batches].count(w) for w in range(settings.workers)]

    def __len__(self) -> int:
        return sum(self.batches_per_worker)

    def __iter__(self) -> Iterator[TrainSample | None]:
        info = get_worker_info()
        if info is None:
            if self.settings.num_workers > 0:
                raise RuntimeError("ShardEpoch built for dataloader workers is iterated in the "
                                   "main process: use make_train_loader")
            return self.iter_worker(0)
        if info.num_workers != self.settings.workers:
            raise RuntimeError(f"DataLoader has {info.num_workers} workers, the split was "
                               f"planned for {self.settings.workers}")
        return self.iter_worker(info.id)

    def iter_worker(self, worker: int) -> Iterator[TrainSample | None]:
        """The batches of slot (process_index, worker): usable directly to simulate a worker."""
        s = self.settings
        stream = epoch_order(self.index, seed=s.seed, epoch=self.epoch,
                             shuffle_group=s.shuffle_group)
        mine = slot_samples(stream, s.slot(worker), s.num_slots)
        skip = self.skip_per_worker[worker]
        for _ in range(skip):
            yield None
        pending = mine[skip * s.batch_size:]
        loaded_group, members, broken = -1, {}, {}
        for start in range(0, len(pending), s.batch_size):
            batch = pending[start:start + s.batch_size]
            items, corrupt = [], []
            for sample in batch:
                if sample.group != loaded_group:
                    # one group's share of this slot in memory at a time
                    loaded_group = sample.group
                    members, broken = self._load_group(
                        [p for p in pending[start:] if p.group == loaded_group])
                items.append(self._decode(sample, members, broken, corrupt))
            yield self._collate([item for item in items if item is not None], corrupt)

    def _load_group(self, samples: list[PlannedSample]):
        members: dict[str, dict[str, bytes]] = {}
        broken: dict[str, str] = {}  # key → why its shard could not give it
        for shard_position in sorted({p.shard for p in samples}):
            shard = self.index.shards[shard_position]
            wanted = {p.key for p in samples if p.shard == shard_position}
            found, error = read_samples(shard.path, wanted)
            members.update(found)
            for key in wanted - set(found):
                broken[key] = error or "not in the tar"
        return members, broken

    def _decode(self, sample: PlannedSample, members, broken, corrupt: list[str]):
        s = self.settings
        shard = self.index.shards[sample.shard].name
        flip = s.flip and flip_decision(s.seed, self.epoch, sample.key)
        try:
            if sample.key in broken:
                raise InvalidInput(broken[sample.key])
            image, mask, has_mask = decode_sample(members.pop(sample.key), image_size=s.image_size,
                                                  mask_size=s.mask_size, flip=flip)
        except Exception as error:  # noqa: BLE001 - any decoding failure is this sample's
            message = f"{shard}/{sample.key}: {error}"
            if s.on_corrupt == "raise":
                raise CorruptSampleError(f"corrupt sample {sample.key!r} in shard {shard} "
                                         f"({self.index.shard_dir}): {error}") from None
            log.warning("skipping corrupt sample %s", message)
            corrupt.append(message)
            return None
        return sample.key, image, mask, flip, has_mask

    @staticmethod
    def _collate(items: list, corrupt: list[str]) -> TrainSample:
        if not items:
            return TrainSample(key=[], image=torch.empty(0), pseudo_mask=torch.empty(0),
                               flipped=torch.empty(0, dtype=torch.bool),
                               has_mask=torch.empty(0, dtype=torch.bool), corrupt=corrupt)
        keys, images, masks, flips, has_masks = zip(*items)
        image = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        return TrainSample(key=list(keys), image=image.float().div_(255.0),
                           pseudo_mask=torch.from_numpy(np.stack(masks)),
                           flipped=torch.tensor(flips, dtype=torch.bool),
                           has_mask=torch.tensor(has_masks, dtype=torch.bool), corrupt=corrupt)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def _pass_through(item: Any) -> Any:
    # module level (picklable): batches are assembled in the workers already
    return item


def _single_thread_worker(_: int) -> None:
    # decoding is PIL/numpy; a torch thread pool per worker would only oversubscribe the cores
    torch.set_num_threads(1)


class TrainLoader:
    """One epoch of one process's batches (TrainSample dicts); not for ``accelerate.prepare``.

    ``iter_raw`` yields the DataLoader's items: ``None`` for batches skipped on resume and
    empty batches (every sample corrupt and skipped) included; iterating the loader itself gives
    only real batches. ``corrupt`` collects the "shard/key: reason" of skipped samples.
    """

    def __init__(self, dataset: ShardEpoch, *, pin_memory: bool = False):
        self.dataset = dataset
        num_workers = dataset.settings.num_workers
        self.dataloader = DataLoader(
            dataset, batch_size=None, num_workers=num_workers, collate_fn=_pass_through,
            pin_memory=pin_memory,
            worker_init_fn=_single_thread_worker if num_workers else None)
        self.corrupt: list[str] = []

    def __len__(self) -> int:
        """Batches of this process's epoch (those skipped on resume included)."""
        return len(self.dataset)

    def iter_raw(self) -> Iterator[TrainSample | None]:
        for item in self.dataloader:
            if item is not None:
                self.corrupt.extend(item["corrupt"])
            yield item

    def __iter__(self) -> Iterator[TrainSample]:
        return (item for item in self.iter_raw() if item is not None and item["key"])


def make_train_loader(shard_dir: str | Path | ShardIndex, *, image_size: int, mask_size: int,
                      batch_size: int, num_workers: int, seed: int, epoch: int,
                      process_index: int, num_processes: int, flip: bool,
                      on_corrupt: str = "raise", verify: str = "sha256", shuffle_group: int = 4,
                      skip_batches: int = 0, pin_memory: bool = False) -> TrainLoader:
    """This process's batches of one epoch (see the module docstring for the split).

    Across ``num_processes`` processes, each calling this with its ``process_index`` and the same
    other arguments, every sample of the shards comes exactly once. Do NOT wrap the result with
    ``accelerate.prepare``: the split is done here already. ``shard_dir`` may be a ShardIndex to
    verify the shards only once per run (``load_shard_index``).
    """
    index = (shard_dir if isinstance(shard_dir, ShardIndex)
             else load_shard_index(shard_dir, on_corrupt=on_corrupt, verify=verify))
    settings = LoaderSettings(
        image_size=int(image_size), mask_size=int(mask_size), batch_size=int(batch_size),
        num_workers=int(num_workers), seed=int(seed), process_index=int(process_index),
        num_processes=int(num_processes), flip=bool(flip), on_corrupt=on_corrupt,
        shuffle_group=int(shuffle_group))
    return TrainLoader(ShardEpoch(index, settings, epoch, skip_batches), pin_memory=pin_memory)


class InfiniteBatches:
    """Endless batches for step-budget training: epoch 0, 1, ... each reshuffled.

    ``state_dict()`` = {"epoch", "batches_in_epoch", "batches_total", "stream"}. A process's
    number of batches per epoch never changes (module docstring, step 3), so the position is
    ``batches_total``; ``load_state_dict`` restores from it, skipping the consumed batches of the
    current epoch without reading them. Processes that step in lockstep have equal
    ``batches_total`` even where their epoch lengths differ by a batch, so the main process's
    saved state restores every process. ``stream`` (digest of the shards and the settings that
    decide the order) must match, else the resumed stream would differ and loading refuses.
    """

    def __init__(self, shard_dir: str | Path | ShardIndex, *, image_size: int, mask_size: int,
                 batch_size: int, num_workers: int, seed: int, process_index: int,
                 num_processes: int, flip: bool, on_corrupt: str = "raise",
                 verify: str = "sha256", shuffle_group: int = 4, pin_memory: bool = False):
        self.index = (shard_dir if isinstance(shard_dir, ShardIndex)
                      else load_shard_index(shard_dir, on_corrupt=on_corrupt, verify=verify))
        self.options = dict(image_size=image_size, mask_size=mask_size, batch_size=batch_size,
                            num_workers=num_workers, seed=seed, process_index=process_index,
                            num_processes=num_processes, flip=flip, on_corrupt=on_corrupt,
                            shuffle_group=shuffle_group, pin_memory=pin_memory)
        self.epoch, self.batches_in_epoch = 0, 0
        self.corrupt: list[str] = []
        self._loader: TrainLoader | None = None
        self._raw: Iterator | None = None
        self.batches_per_epoch = len(self._make_loader(0, 0))
        if self.batches_per_epoch == 0:
            raise InvalidInput(f"process {process_index} has no samples: {self.index.num_samples} "
                             f"samples for {num_processes} process(es) × "
                             f"{max(1, num_workers)} worker(s)")

    def _make_loader(self, epoch: int, skip: int) -> TrainLoader:
        return make_train_loader(self.index, epoch=epoch, skip_batches=skip, **self.options)

    def stream_fingerprint(self) -> str:
        decisive = {k: self.options[k] for k in ("batch_size", "num_workers", "seed",
                                                 "num_processes", "flip", "shuffle_group")}
        decisive["num_workers"] = max(1, int(decisive["num_workers"]))
        return fingerprint({"shards": self.index.fingerprint(), **decisive}, 16)

    def __iter__(self) -> "InfiniteBatches":
        return self

    def __next__(self) -> TrainSample:
        while True:
            if self._raw is None:
                self._loader = self._make_loader(self.epoch, self.batches_in_epoch)
                self._raw = self._loader.iter_raw()
            item = next(self._raw, _END)
            if item is None:  # consumed before the resume: already counted
                continue
            if item is not _END:
                self.batches_in_epoch += 1
            if item is _END or self.batches_in_epoch == self.batches_per_epoch:
                # roll over as soon as the epoch's last batch is out, so that the state after
                # it already reads (next epoch, 0)
                self.corrupt.extend(self._loader.corrupt)
                self.close()
                self.epoch, self.batches_in_epoch = self.epoch + 1, 0
            if item is not _END and item["key"]:
                return item
            # end of epoch, or every sample of the batch was corrupt and skipped (counted)

    def skipped_samples(self) -> list[str]:
        """"shard/key: reason" of every corrupt sample skipped so far (each once)."""
        current = self._loader.corrupt if self._loader is not None else []
        return sorted(set(self.corrupt) | set(current))

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                "batches_total": self.epoch * self.batches_per_epoch + self.batches_in_epoch,
                "stream": self.stream_fingerprint()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("stream") != self.stream_fingerprint():
            raise InvalidInput(f"cannot resume: the saved batch stream {state.get('stream')!r} was "
                             "made from other shards or settings "
                             f"(now {self.stream_fingerprint()!r})")
        self.close()
        self.epoch, self.batches_in_epoch = divmod(int(state["batches_total"]),
                                                   self.batches_per_epoch)

    def close(self) -> None:
        """Stop the current epoch's workers (a new DataLoader starts on the next batch)."""
        self._raw, self._loader = None, None


def infinite_batches(shard_dir: str | Path | ShardIndex, **options: Any) -> InfiniteBatches:
    """An ``InfiniteBatches`` (the arguments of ``make_train_loader`` except ``epoch``)."""
    return InfiniteBatches(shard_dir, **options)
