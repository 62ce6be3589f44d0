"""The DVC graph declares exactly what each stage runs and reads."""

import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]

sys.path.insert(0, str(REPO / "tools"))
from sync_stage_deps import imported_glass_files  # noqa: E402  (the same listing the tool writes)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(stage):
    deps = STAGES[stage]["deps"]
    scripts = [d for d in deps if d.startswith("stages/")]
    command_script = STAGES[stage]["cmd"].split()[1]
    assert scripts == [command_script], f"{stage}: the script its command runs must be its dep"
    declared = {d for d in deps if d.startswith("glass/")}
    assert all(d.endswith(".py") for d in declared), "declare files, not folders (__pycache__)"
    imported = set(imported_glass_files(scripts[0], cwd=REPO))
    assert imported - declared == set(), f"{stage}: imported but not declared as deps"
    assert declared - imported == set(), f"{stage}: declared but never imported"


def _get(params, dotted):
    node = params
    for part in dotted.split("."):
        node = node[part]
    return node


@pytest.mark.parametrize("params_file", ["params.yaml", "configs/cpu/params.yaml"])
def test_declared_params_exist_in_both_configurations(params_file):
    params = yaml.safe_load((REPO / params_file).read_text())
    assert params["config"]["params_file"] == params_file
    for name, stage in STAGES.items():
        for entry in stage.get("params", []):
            ((file_template, keys),) = entry.items()
            assert file_template == "${config.params_file}"
            for key in keys:
                # templated keys (data.${data.dataset}) resolve from the params file itself
                key = re.sub(r"\$\{([^}]+)\}", lambda m: str(_get(params, m.group(1))), key)
                _get(params, key)  # KeyError names the missing key


def test_cpu_configuration_reuses_the_root_graph():
    copy = REPO / "configs" / "cpu" / "dvc.yaml"
    # a byte copy, not a symlink (DVC cannot read a symlinked dvc.yaml from git revisions, so
    # `dvc metrics diff` / `dvc exp show` would fail); tools/sync_stage_deps.py writes it
    assert not copy.is_symlink()
    assert copy.read_bytes() == (REPO / "dvc.yaml").read_bytes(), \
        "configs/cpu/dvc.yaml differs from dvc.yaml: run python tools/sync_stage_deps.py"
    cpu = yaml.safe_load((REPO / "configs/cpu/params.yaml").read_text())["config"]
    paper = yaml.safe_load((REPO / "params.yaml").read_text())["config"]
    assert (REPO / "configs/cpu" / cpu["wdir"]).resolve() == REPO
    assert (REPO / paper["wdir"]).resolve() == REPO
    assert cpu["out"] != paper["out"] and cpu["name"] != paper["name"]


@pytest.mark.parametrize("stage", ["train_phase1", "train_phase2", "predict", "evaluate"])
def test_synthesis_code_is_not_a_dependency_of_training_or_evaluation(stage):
    """The shard format lives in glass/shard_format.py, which synthesis writes and training
    reads: a change to mask refinement (glass/synth/pseudo_mask.py) reruns synthesis and what
    its shards feed, never the training stages' code check."""
    deps = STAGES[stage]["deps"]
    assert not [d for d in deps if d.startswith("glass/synth/")], stage
    if stage.startswith("train"):
        assert "glass/shard_format.py" in deps


PRETRAIN_STAGES = yaml.safe_load((REPO / "configs/toy-pretrain/dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(PRETRAIN_STAGES))
def test_pretraining_graph_declares_the_modules_its_stages_import(stage):
    deps = PRETRAIN_STAGES[stage]["deps"]
    declared = {d for d in deps if d.startswith("glass/")}
    script = PRETRAIN_STAGES[stage]["cmd"].split()[1]
    assert deps[0] == script
    assert set(imported_glass_files(script, cwd=REPO)) == declared


def test_the_committed_pretraining_locks_match_the_code_and_the_weights():
    """`dvc repro configs/toy-pretrain/dvc.yaml` on a fresh clone must be a no-op: every code
    dependency and every committed model folder hashes as the lock says. A change to a module the
    pretraining stages import fails here; retrain, or, where the change cannot alter the weights
    (a new field for another model's settings, a refactor), record it with
    `dvc commit configs/toy-pretrain/dvc.yaml:<stage>`."""
    import json
    import os
    import subprocess

    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(Path(sys.executable).parent / "dvc"), "status", "--json",
                             "configs/toy-pretrain/dvc.yaml"], cwd=REPO, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout or "{}") == {}, result.stdout
