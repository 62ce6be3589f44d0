import io
import json
import logging
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from glass.synth.generator import SynthSample
from glass.synth.sharded_run import GeneratorSpec, run_sharded_synthesis
from glass.train.data import (
    CorruptSampleError,
    InfiniteBatches,
    LoaderSettings,
    ShardEpoch,
    ShardError,
    dataloader_batch_order,
    flip_decision,
    load_shard_index,
    make_train_loader,
    shard_paths,
)
from typed_params import toy_generator

TOY = {"image_size": 32, "max_objects": 2}
CLASSES = [["kite"], ["tv", "pizza"], ["donut"]]
MASKLESS = {"t-0003", "t-0011"}
SEED = 5
LOADER = dict(image_size=24, mask_size=16, seed=SEED, flip=True)


class SometimesMaskless:
    """The toy generator, except that the MASKLESS keys come without a mask."""

    name = "toy"

    def __init__(self, params):
        self.toy = toy_generator(params["toy"])

    def generate_batch(self, records, seeds):
        results = self.toy.generate_batch(records, seeds)
        for result in results:
            if isinstance(result, SynthSample) and result.key in MASKLESS:
                result.mask = None
        return results


def synthesize(out_dir, count, shard_size):
    records = [{"key": f"t-{i:04d}", "caption": "c", "prompt": "p", "classes": CLASSES[i % 3]}
               for i in range(count)]
    spec = GeneratorSpec("toy", {"toy": TOY}, factory=(__name__, "SometimesMaskless"))
    run_sharded_synthesis(records, spec, out_dir, shard_size=shard_size, seed=SEED, batch_size=8,
                          num_workers=0, jpeg_quality=90, store_attention=False, progress=False)
    return sorted(r["key"] for r in records)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """23 samples in 6 shards (4, 4, 4, 4, 4, 3): neither divides 4 slots evenly."""
    out = tmp_path_factory.mktemp("shards")
    return out, synthesize(out, 23, 4)


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """10 samples in 4 shards (3, 3, 3, 1)."""
    out = tmp_path_factory.mktemp("small")
    return out, synthesize(out, 10, 3)


def all_batches(loader):
    return [batch for batch in loader]


def keys_of(batches):
    return [key for batch in batches for key in batch["key"]]


def test_shard_paths_are_sorted_and_verified(shards):
    shard_dir, _ = shards
    paths = shard_paths(shard_dir)
    assert [p.name for p in paths] == [f"shard-{i:06d}.tar" for i in range(6)]
    assert load_shard_index(shard_dir).num_samples == 23


def test_batches_have_the_documented_shapes_dtypes_and_ranges(shards):
    shard_dir, keys = shards
    loader = make_train_loader(shard_dir, batch_size=5, num_workers=0, epoch=0, process_index=0,
                               num_processes=1, **LOADER)
    batches = all_batches(loader)
    assert len(loader) == len(batches) == 5 and [len(b["key"]) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(keys_of(batches)) == keys
    for batch in batches:
        size = len(batch["key"])
        assert batch["image"].shape == (size, 3, 24, 24) and batch["image"].dtype == torch.float32
        assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
        assert batch["pseudo_mask"].shape == (size, 16, 16)
        assert batch["pseudo_mask"].dtype == torch.uint8
        assert batch["flipped"].dtype == torch.bool and batch["has_mask"].shape == (size,)
        for key, mask, has_mask in zip(batch["key"], batch["pseudo_mask"], batch["has_mask"]):
            values = set(mask.unique().tolist())
            if key in MASKLESS:
                # generated without a mask: nothing supervised
                assert not has_mask and values == {255}
            else:
                assert has_mask and 0 in values and values - {0, 255} and values <= {0, 1, 2, 255}


def test_flip_mirrors_image_and_mask_together_seeded_per_key(shards):
    shard_dir, _ = shards
    common = dict(num_workers=0, epoch=3, process_index=0, num_processes=1, image_size=24,
                  mask_size=16, seed=SEED)
    plain = {k: (i, m) for b in make_train_loader(shard_dir, batch_size=4, flip=False, **common)
             for k, i, m in zip(b["key"], b["image"], b["pseudo_mask"])}
    flipped = {}
    for batch in make_train_loader(shard_dir, batch_size=7, flip=True, **common):
        for key, image, mask, flag in zip(batch["key"], batch["image"], batch["pseudo_mask"],
                                          batch["flipped"]):
            flipped[key] = bool(flag)
            assert flag == flip_decision(SEED, 3, key)
            expected_image, expected_mask = plain[key]
            if flag:
                expected_image, expected_mask = expected_image.flip(-1), expected_mask.flip(-1)
            assert torch.equal(image, expected_image) and torch.equal(mask, expected_mask)
    assert 0 < sum(flipped.values()) < len(flipped)
    # another split of the same epoch draws the same flips; another epoch draws others
    other = make_train_loader(shard_dir, batch_size=2, num_workers=0, epoch=3, process_index=1,
                              num_processes=2, flip=True, image_size=24, mask_size=16, seed=SEED)
    for batch in other:
        assert [flipped[k] for k in batch["key"]] == batch["flipped"].tolist()
    assert [flip_decision(SEED, 4, k) for k in flipped] != list(flipped.values())


def simulated_keys(shard_dir, *, processes, workers, epoch, batch_size=3):
    """{(process, worker): keys} read exactly as each dataloader worker would."""
    index = load_shard_index(shard_dir)
    out = {}
    for process in range(processes):
        settings = LoaderSettings(image_size=8, mask_size=8, batch_size=batch_size,
                                  num_workers=workers, seed=SEED, process_index=process,
                                  num_processes=processes, flip=False)
        dataset = ShardEpoch(index, settings, epoch)
        for worker in range(settings.workers):
            out[process, worker] = keys_of(dataset.iter_worker(worker))
    return out


@pytest.mark.parametrize("processes,workers", [(2, 2), (3, 1), (1, 3), (2, 0), (4, 2)])
@pytest.mark.parametrize("fixture", ["shards", "small_shards"])
def test_each_epoch_splits_every_sample_exactly_once(request, fixture, processes, workers):
    shard_dir, keys = request.getfixturevalue(fixture)
    orders = []
    for epoch in (0, 1):
        per_slot = simulated_keys(shard_dir, processes=processes, workers=workers, epoch=epoch)
        seen = [key for slot_keys in per_slot.values() for key in slot_keys]
        assert sorted(seen) == keys  # union is everything, nothing twice
        sizes = [len(v) for v in per_slot.values()]
        assert max(sizes) - min(sizes) <= 1  # balanced to one sample
        orders.append(per_slot)
    assert orders[0] != orders[1]  # reshuffled per epoch


def test_real_dataloader_workers_over_two_processes_cover_the_epoch_once(shards):
    shard_dir, keys = shards
    per_process = []
    for process in range(2):
        loader = make_train_loader(shard_dir, batch_size=2, num_workers=2, epoch=1,
                                   process_index=process, num_processes=2, **LOADER)
        per_process.append(keys_of(all_batches(loader)))
    assert not set(per_process[0]) & set(per_process[1])
    assert sorted(per_process[0] + per_process[1]) == keys
    expected = simulated_keys(shard_dir, processes=2, workers=2, epoch=1, batch_size=2)
    assert set(per_process[0]) == set(expected[0, 0] + expected[0, 1])


def test_dataloader_batch_order_is_round_robin_over_unexhausted_workers():
    assert dataloader_batch_order([2, 1, 3]) == [0, 1, 2, 0, 2, 2]
    assert dataloader_batch_order([0, 2]) == [1, 1]


def stream_keys(stream, count):
    return [tuple(next(stream)["key"]) for _ in range(count)]


@pytest.mark.parametrize("workers,consumed", [(2, 2), (2, 5), (0, 1), (0, 4), (0, 9)])
def test_resumed_stream_continues_with_the_same_batches(shards, workers, consumed):
    shard_dir, _ = shards
    # process 1 of 2 with 2 workers: its slots hold 6 and 5 samples → batches of 5: [5, 1] and
    # [5], so the DataLoader's round robin meets an exhausted worker inside every epoch.
    options = dict(batch_size=5, num_workers=workers, process_index=1, num_processes=2,
                   shuffle_group=2, **LOADER)
    reference = InfiniteBatches(shard_dir, **options)
    expected = stream_keys(reference, 12)  # four epochs
    assert reference.batches_per_epoch == 3 and reference.state_dict()["epoch"] == 4

    first = InfiniteBatches(shard_dir, **options)
    assert stream_keys(first, consumed) == expected[:consumed]
    state = json.loads(json.dumps(first.state_dict()))
    epoch, offset = divmod(consumed, first.batches_per_epoch)
    assert (state["epoch"], state["batches_in_epoch"]) == (epoch, offset)

    resumed = InfiniteBatches(shard_dir, **options)
    resumed.load_state_dict(state)
    assert stream_keys(resumed, 12 - consumed) == expected[consumed:]


def test_main_process_state_restores_another_process(shards):
    shard_dir, _ = shards
    common = dict(batch_size=5, num_workers=0, num_processes=2, **LOADER)
    # process 0 has 6 + 6 samples → 4 batches per epoch (as workers=2 would); process 1 one less
    main = InfiniteBatches(shard_dir, process_index=0, **common)
    other = InfiniteBatches(shard_dir, process_index=1, **common)
    expected = stream_keys(other, 10)
    stream_keys(main, 7)
    resumed = InfiniteBatches(shard_dir, process_index=1, **common)
    resumed.load_state_dict(main.state_dict())
    assert stream_keys(resumed, 3) == expected[7:]
    with pytest.raises(ValueError, match="cannot resume"):
        InfiniteBatches(shard_dir, process_index=1, **dict(common, batch_size=4)).load_state_dict(
            main.state_dict())


def corrupted_copy(shard_dir, tmp_path):
    target = tmp_path / "shards"
    shutil.copytree(shard_dir, target)
    return target


def test_mismatched_or_missing_shard_is_named_or_skipped_with_a_count(shards, tmp_path, caplog):
    shard_dir, keys = shards
    target = corrupted_copy(shard_dir, tmp_path)
    tar = target / "shard-000002.tar"
    data = bytearray(tar.read_bytes())
    data[700] ^= 0xFF
    tar.write_bytes(bytes(data))
    with pytest.raises(ShardError, match="shard-000002.tar.*sha256"):
        shard_paths(target)
    with caplog.at_level(logging.WARNING, logger="glass.train.data"):
        index = load_shard_index(target, on_corrupt="skip")
    assert "skipping 1 corrupt or missing shard" in caplog.text
    assert [name for name, _ in index.skipped] == ["shard-000002.tar"]
    loader = make_train_loader(index, batch_size=4, num_workers=0, epoch=0, process_index=0,
                               num_processes=1, **LOADER)
    lost = {"t-0008", "t-0009", "t-0010", "t-0011"}  # shard 2 of 4-sample shards
    assert sorted(keys_of(all_batches(loader))) == [k for k in keys if k not in lost]

    (target / "shard-000004.tar").unlink()
    with pytest.raises(ShardError, match="shard-000004.tar.*missing"):
        shard_paths(target, verify="size")


def damage_member(tar_path, member_name):
    with tarfile.open(tar_path) as tar:
        member = tar.getmember(member_name)
        offset, size = member.offset_data, member.size
    data = bytearray(tar_path.read_bytes())
    data[offset:offset + size] = b"\0" * size  # same size: only a full hash would notice
    tar_path.write_bytes(bytes(data))


def test_corrupt_member_is_reported_by_shard_and_key_or_skipped(shards, tmp_path):
    shard_dir, keys = shards
    target = corrupted_copy(shard_dir, tmp_path)
    damage_member(target / "shard-000001.tar", "t-0005.jpg")
    common = dict(batch_size=4, num_workers=0, epoch=0, process_index=0, num_processes=1,
                  verify="size", **LOADER)
    with pytest.raises(CorruptSampleError, match=r"'t-0005' in shard shard-000001\.tar"):
        all_batches(make_train_loader(target, **common))
    loader = make_train_loader(target, on_corrupt="skip", **common)
    seen = keys_of(all_batches(loader))
    assert sorted(seen) == [k for k in keys if k != "t-0005"]
    assert len(loader.corrupt) == 1 and loader.corrupt[0].startswith("shard-000001.tar/t-0005:")


def test_truncated_shard_names_the_lost_samples(shards, tmp_path):
    shard_dir, _ = shards
    target = corrupted_copy(shard_dir, tmp_path)
    tar = target / "shard-000005.tar"
    tar.write_bytes(tar.read_bytes()[:tar.stat().st_size // 2])
    with pytest.raises(ShardError, match="shard-000005.tar.*truncated"):
        shard_paths(target, verify="size")
    common = dict(batch_size=4, num_workers=0, epoch=0, process_index=0, num_processes=1,
                  verify="none", **LOADER)
    with pytest.raises(CorruptSampleError, match=r"'t-002\d' in shard shard-000005\.tar"):
        all_batches(make_train_loader(target, **common))
    loader = make_train_loader(target, on_corrupt="skip", **common)
    all_batches(loader)
    assert loader.corrupt and all(c.startswith("shard-000005.tar/t-002") for c in loader.corrupt)


def test_incomplete_synthesis_is_refused(shards, tmp_path):
    shard_dir, _ = shards
    target = corrupted_copy(shard_dir, tmp_path)
    (target / "manifest.json").unlink()
    with pytest.raises(ShardError, match="manifest.json not found"):
        shard_paths(target)


def test_non_square_image_and_mask_get_the_same_centre_crop():
    from glass.train.data import decode_sample

    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # the centre square is white
    mask = np.zeros((20, 40), np.uint8)
    mask[:, 10:30] = 1
    members = {"json": b'{"has_mask": true}'}
    for name, array, fmt in (("jpg", image, "JPEG"), ("mask.png", mask, "PNG")):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt)
        members[name] = buffer.getvalue()
    pixels, labels, has_mask = decode_sample(members, image_size=10, mask_size=5, flip=False)
    assert has_mask and pixels.shape == (10, 10, 3) and pixels.min() > 240
    assert labels.shape == (5, 5) and (labels == 1).all()
