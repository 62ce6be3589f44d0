"""The DVC graph declares exactly what each stage runs and reads."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]

_LIST_IMPORTED_GLASS_FILES = """
import importlib.util, json, sys
from pathlib import Path
repo = Path(sys.argv[1]).resolve()
sys.path.insert(0, str(repo))
spec = importlib.util.spec_from_file_location("stage_under_test", sys.argv[2])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
files = set()
for name, mod in list(sys.modules.items()):
    path = getattr(mod, "__file__", None)
    if (name == "glass" or name.startswith("glass.")) and path:
        files.add(Path(path).resolve().relative_to(repo).as_posix())
print(json.dumps(sorted(files)))
"""


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_exactly_the_modules_the_stage_imports(stage):
    deps = STAGES[stage]["deps"]
    scripts = [d for d in deps if d.startswith("stages/")]
    command_script = STAGES[stage]["cmd"].split()[1]
    assert scripts == [command_script], f"{stage}: the script its command runs must be its dep"
    declared = {d for d in deps if d.startswith("glass/")}
    assert all(d.endswith(".py") for d in declared), "declare files, not folders (__pycache__)"
    result = subprocess.run([sys.executable, "-c", _LIST_IMPORTED_GLASS_FILES, str(REPO),
                             str(REPO / scripts[0])], capture_output=True, text=True, check=True)
    imported = set(json.loads(result.stdout.strip().splitlines()[-1]))
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
                _get(params, key)  # KeyError names the missing key


def test_cpu_configuration_reuses_the_root_graph():
    link = REPO / "configs" / "cpu" / "dvc.yaml"
    assert link.is_symlink() and link.resolve() == (REPO / "dvc.yaml").resolve()
    cpu = yaml.safe_load((REPO / "configs/cpu/params.yaml").read_text())["config"]
    paper = yaml.safe_load((REPO / "params.yaml").read_text())["config"]
    assert (REPO / "configs/cpu" / cpu["wdir"]).resolve() == REPO
    assert (REPO / paper["wdir"]).resolve() == REPO
    assert cpu["out"] != paper["out"] and cpu["name"] != paper["name"]
