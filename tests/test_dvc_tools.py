"""The per-configuration DVC commands and the offline plots page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import dvc_targets  # noqa: E402
import plots_template  # noqa: E402


def test_targets_are_one_configurations_files_never_a_dvc_yaml():
    metrics = dvc_targets.targets("cpu", "metrics")
    assert "data/cpu/metrics/evaluate.json" in metrics
    assert "data/cpu/metrics/generation.json" in metrics
    assert all(path.startswith("data/cpu/") for path in metrics)
    plots = dvc_targets.targets("paper", "plots")
    assert "data/paper/eval/curves" in plots and "data/paper/eval/images/discovery" in plots
    assert not any(path.endswith("dvc.yaml") for path in metrics + plots)
    with pytest.raises(SystemExit, match="configuration must be one of"):
        dvc_targets.targets("gpu", "plots")


def test_the_plots_page_needs_no_internet_and_every_chart_renders(tmp_path):
    import vl_convert

    page = plots_template.write_template(tmp_path / "template.html").read_text()
    assert "{plot_divs}" in page and "cdn" not in page.lower() and "http" not in page.split(
        "<script>")[0]
    assert "vegaEmbed" in page
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    dvc = str(Path(sys.executable).parent / "dvc")
    # the CPU configuration's committed curves and loss logs (cache: false, tracked by git)
    targets = [t for t in dvc_targets.targets("cpu", "plots")
               if "curves" in t or "plots/metrics" in t]
    shown = subprocess.run([dvc, "plots", "show", *targets, "--json"], cwd=REPO, env=env,
                           capture_output=True, text=True, check=True)
    charts = [entry for entries in json.loads(shown.stdout)["data"].values()
              for entry in entries if entry["type"] == "vega"]
    assert len(charts) >= 9   # 8 loss curves and the best-overlap curve
    for chart in charts:
        svg = vl_convert.vegalite_to_svg(chart["content"],
                                         vl_version=plots_template.VEGA_LITE_VERSION)
        assert svg.startswith("<svg")
    html = subprocess.run([dvc, "plots", "show", *targets, "--html-template",
                           str(tmp_path / "template.html"), "-o", str(tmp_path / "page")],
                          cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert html.returncode == 0
    rendered = (tmp_path / "page" / "index.html").read_text()
    assert "cdn.jsdelivr" not in rendered and rendered.count("vegaEmbed(") == len(charts)


def test_the_weights_download_says_what_to_do_offline(monkeypatch, tmp_path):
    from urllib.error import URLError

    import torch

    from glass.errors import MissingInput
    from glass.eval import generation

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    # patch the download itself: patching load_state_dict_from_url would be captured for good
    # by modules first imported under the patch (torchvision binds it at import)
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingInput, match="seems to have no internet.*copy alexnet-owt"):
        generation.download_weights()
