import pytest

from glass.train.checkpoints import complete_checkpoints, latest_checkpoint, save_checkpoint


def _writer(content):
    def save(folder):
        folder.mkdir(parents=True)
        (folder / "state.txt").write_text(content)
    return save


def test_checkpoints_are_published_atomically_and_bounded(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, _writer(str(step)), limit=2)
    assert [s for s, _ in complete_checkpoints(tmp_path)] == [20, 30]
    step, folder = latest_checkpoint(tmp_path)
    assert step == 30 and (folder / "state.txt").read_text() == "30"


def test_a_save_killed_midway_leaves_the_last_good_checkpoint(tmp_path):
    save_checkpoint(tmp_path, 10, _writer("10"), limit=3)

    def crash(folder):
        folder.mkdir(parents=True)
        (folder / "partial").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 20, crash, limit=3)
    assert latest_checkpoint(tmp_path)[0] == 10  # the half-written one is not a checkpoint
    save_checkpoint(tmp_path, 30, _writer("30"), limit=3)
    assert not list(tmp_path.glob(".tmp-*"))  # leftovers cleaned on the next save
    assert latest_checkpoint(tmp_path) is not None and latest_checkpoint(tmp_path)[0] == 30
    with pytest.raises(ValueError):
        save_checkpoint(tmp_path, 40, _writer("x"), limit=0)


def test_no_checkpoints():
    assert latest_checkpoint("/nonexistent/folder") is None


def test_resuming_needs_every_trained_weight_and_ignores_frozen_ones(tmp_path):
    import torch
    from safetensors.torch import save_file

    from glass.errors import StageFailed
    from glass.train.trainer import check_checkpoint_weights, checkpoint_weights_hook

    model = torch.nn.Module()
    model.slot_attention = torch.nn.Linear(2, 2)
    model.mlp_decoder = torch.nn.Linear(2, 2)
    model.encoder = torch.nn.Linear(2, 2)          # frozen: not in a checkpoint
    weights = [model.state_dict()]
    checkpoint_weights_hook(phase=1)([model], weights, str(tmp_path))
    assert sorted(weights[0]) == ["mlp_decoder.bias", "mlp_decoder.weight",
                                  "slot_attention.bias", "slot_attention.weight"]
    save_file(weights[0], str(tmp_path / "model.safetensors"))
    check_checkpoint_weights(tmp_path, model, phase=1)
    # an older checkpoint with the frozen weights too still resumes
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    check_checkpoint_weights(tmp_path, model, phase=1)
    partial = {k: v for k, v in weights[0].items() if not k.startswith("mlp_decoder")}
    save_file(partial, str(tmp_path / "model.safetensors"))
    with pytest.raises(StageFailed, match="lacks 2 of the weights phase 1 trains"):
        check_checkpoint_weights(tmp_path, model, phase=1)
