"""Conditional-generation (reconstruction) metrics of paper Table 7: PSNR, SSIM, LPIPS, FID.

The paper reconstructs each input image from its slots with the diffusion decoder and compares the
reconstruction with the input (Table 7: GLASS PSNR 10.93 dB, SSIM 0.21, LPIPS 0.59, FID 71.30; the
FID "is calculated using 512 generated and real COCO images"; docs/paper-facts.md "Evaluation"). All four
come from torchmetrics (its ``image`` extra, which brings torch-fidelity for FID):

- PSNR: per-image PSNR with data range 1, averaged over images (``dim=(1, 2, 3)``); an exact
  reconstruction has infinite PSNR.
- SSIM: Wang et al.'s SSIM (Gaussian window 11, σ 1.5, K = 0.01 / 0.03), data range 1, averaged
  over images.
- LPIPS: Zhang et al.'s learned metric; the linear heads ship inside torchmetrics, the backbone
  (AlexNet by default, the LPIPS authors' recommendation for a metric; the paper does not say
  which) is torchvision's ImageNet checkpoint. Averaged over images.
- FID: torch-fidelity's InceptionV3 port of the TF-FID network, 2048-d pool features, between
  the set of real images and the set of generated ones (images in [0, 1] are turned into uint8 by
  torchmetrics). It needs at least 2 images per set; the paper uses 512.

LPIPS and FID need downloaded weights. They are looked up in torch's hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``), or for FID an explicit file.
Whether a metric can be computed is decided before any network access: if its weights file is
present the metric is built from it; if not and downloads are not allowed (the default when
``HF_HUB_OFFLINE`` is set, the project's offline switch, see scripts/env.sh) the metric is
*unavailable* and ``compute()`` reports it as ``None`` next to a ``<name>_unavailable`` reason
that names the missing file and how to get it; if downloads are allowed the library downloads
the file and a failure to do so (or an unreadable file) is caught and reported the same way.
A metric is never replaced by a number from another network. Fetch the weights on a machine
with internet with ``python -m glass.eval.generation download`` and copy the cache.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch

from glass.errors import InvalidInput, MissingInput
from glass.eval.frechet import FeatureStatistics, pooled_encoder_features

__all__ = ["GenerationMetrics", "RequiredWeights", "lpips_weights", "fid_weights",
           "downloads_allowed", "download_weights", "PAPER_FID_NUM_IMAGES"]

PAPER_FID_NUM_IMAGES = 512          # paper Sec. 5.2: FID on 512 real and generated COCO images
# torchmetrics' LPIPS backbones → torchvision weight enums (their DEFAULT is what it loads).
_LPIPS_BACKBONES = {"alex": ("alexnet", "AlexNet_Weights"),
                    "vgg": ("vgg16", "VGG16_Weights"),
                    "squeeze": ("squeezenet1_1", "SqueezeNet1_1_Weights")}
_FALSE = {"", "0", "false", "no", "off"}
# What a failed download or an unreadable checkpoint raises (URLError/HTTPError are OSErrors;
# torch.load raises RuntimeError for a truncated zip, UnpicklingError/EOFError for other damage).
_LOAD_ERRORS = (OSError, RuntimeError, EOFError, pickle.UnpicklingError)


@dataclass(frozen=True)
class RequiredWeights:
    """A checkpoint a metric needs: where it is looked for and where it comes from."""

    metric: str
    description: str
    url: str
    path: Path

    @property
    def present(self) -> bool:
        return self.path.is_file()

    @property
    def shown_path(self) -> str:
        """The path as recorded in outputs that git tracks (conventions.json, report.md): the
        torch cache written as $TORCH_HOME, so that no machine's home folder is recorded."""
        hub = Path(torch.hub.get_dir())
        try:
            return "$TORCH_HOME/hub/" + self.path.relative_to(hub).as_posix()
        except ValueError:
            return str(self.path)

    def how_to_get(self) -> str:
        return (f"on a machine with internet run `python -m glass.eval.generation download` (or "
                f"download {self.url}) and copy the file to {self.shown_path} here ($TORCH_HOME "
                "defaults to ~/.cache/torch)")


def _hub_checkpoint(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` caches ``url`` (read at call time, so a
    changed TORCH_HOME is honoured)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def lpips_weights(net: str = "alex") -> RequiredWeights:
    """The torchvision ImageNet backbone checkpoint LPIPS with ``net`` needs."""
    if net not in _LPIPS_BACKBONES:
        raise InvalidInput(f"LPIPS net must be one of {sorted(_LPIPS_BACKBONES)}, got {net!r}")
    import torchvision.models

    model_name, enum_name = _LPIPS_BACKBONES[net]
    url = getattr(torchvision.models, enum_name).DEFAULT.url
    return RequiredWeights("lpips", f"torchvision {model_name} ImageNet weights (LPIPS backbone)",
                           url, _hub_checkpoint(url))


def fid_weights(weights_path: str | Path | None = None) -> RequiredWeights:
    """torch-fidelity's InceptionV3 (TF-FID) checkpoint: ``weights_path`` if given, else its
    torch hub cache location."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    path = Path(weights_path) if weights_path is not None else _hub_checkpoint(URL_INCEPTION_V3)
    return RequiredWeights("fid", "torch-fidelity InceptionV3 FID weights", URL_INCEPTION_V3, path)


def downloads_allowed() -> bool:
    """False when ``HF_HUB_OFFLINE`` is set to a true value: the project's offline runs."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _FALSE


_NO_DOWNLOAD = "downloads are off (HF_HUB_OFFLINE is set or allow_download=False)"


def _load_metric(weights: RequiredWeights, build: Callable[[], torch.nn.Module],
                 allow_download: bool, no_download: str = _NO_DOWNLOAD
                 ) -> tuple[torch.nn.Module | None, str | None]:
    """(metric, None) or (None, reason). No network access unless ``allow_download`` and the
    file is missing; ``no_download`` says why downloading is not an option."""
    if not weights.present and not allow_download:
        return None, (f"{weights.description} not found at {weights.shown_path} and "
                      f"{no_download}; {weights.how_to_get()}")
    try:
        return build(), None
    except _LOAD_ERRORS as error:
        where = ("could not be loaded from " + weights.shown_path if weights.present
                 else f"could not be downloaded from {weights.url}")
        return None, (f"{weights.description} {where} ({type(error).__name__}: {error}); "
                      f"{weights.how_to_get()}")


def _check_images(real: torch.Tensor, generated: torch.Tensor) -> None:
    for name, images in (("real", real), ("generated", generated)):
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            raise InvalidInput(f"{name} images must be a (B, 3, H, W) tensor, got "
                             f"{getattr(images, 'shape', type(images))}")
        if not images.is_floating_point():
            raise TypeError(f"{name} images must be floats in [0, 1], got {images.dtype}")
        if images.numel() and not (torch.isfinite(images).all() and images.min() >= 0
                                   and images.max() <= 1):
            raise InvalidInput(f"{name} images must lie in [0, 1] (clamp decoder outputs first)")
    if real.shape != generated.shape:
        raise InvalidInput(f"real {tuple(real.shape)} and generated {tuple(generated.shape)} "
                         "images must be paired (same shape)")


class GenerationMetrics:
    """Accumulates paper Table 7's metrics over (real, generated) image pairs.

    ``lpips`` / ``fid``: request those metrics (PSNR and SSIM are always computed).
    ``lpips_net``: LPIPS backbone, ``"alex"`` (default), ``"vgg"`` or ``"squeeze"``.
    ``fid_weights_path``: an explicit InceptionV3 checkpoint (else the torch hub cache).
    ``allow_download``: may a missing checkpoint be downloaded (None: ``downloads_allowed()``).
    ``feature_encoder``: optionally a ``FrozenDinov2Encoder``; then ``fd_dinov2``, the Fréchet
    distance of mean-pooled DINOv2 features (``glass.eval.frechet``), is reported as well: a
    project-internal number, not the paper's FID.

    After construction ``unavailable`` maps each requested metric that cannot be computed to the
    reason, so a caller can stop before running a model over 512 images.
    """

    def __init__(self, *, fid: bool = True, lpips: bool = True, device: str | torch.device = "cpu",
                 lpips_net: str = "alex", fid_weights_path: str | Path | None = None,
                 allow_download: bool | None = None, feature_encoder=None) -> None:
        from torchmetrics.image import (PeakSignalNoiseRatio,
                                        StructuralSimilarityIndexMeasure)

        self.device = torch.device(device)
        allow = downloads_allowed() if allow_download is None else bool(allow_download)
        self.unavailable: dict[str, str] = {}
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)).to(self.device)
        # what a flat image of each real image's own mean colour scores: the level at which a
        # reconstruction says nothing about the layout (a PSNR read alone hides that)
        self.psnr_mean_colour = PeakSignalNoiseRatio(data_range=1.0,
                                                     dim=(1, 2, 3)).to(self.device)
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0).to(self.device)
        self.lpips = self.fid = None
        if lpips:
            self.lpips = self._build("lpips", lpips_weights(lpips_net),
                                     lambda: _new_lpips(lpips_net), allow)
        else:
            self.unavailable["lpips"] = "not requested (lpips=False)"
        if fid:
            weights = fid_weights(fid_weights_path)
            if fid_weights_path is None:
                self.fid = self._build("fid", weights, lambda: _new_fid(weights.path), allow)
            else:   # an explicit file that is missing is reported, not replaced by a download
                self.fid = self._build("fid", weights, lambda: _new_fid(weights.path), False,
                                       "an explicit fid_weights_path is never downloaded")
        else:
            self.unavailable["fid"] = "not requested (fid=False)"
        self.feature_encoder = feature_encoder
        self._dino = ({"real": FeatureStatistics(), "generated": FeatureStatistics()}
                      if feature_encoder is not None else None)
        self.num_images = 0

    def _build(self, name: str, weights: RequiredWeights, build, allow: bool,
               no_download: str = _NO_DOWNLOAD):
        metric, reason = _load_metric(weights, build, allow, no_download)
        if metric is None:
            self.unavailable[name] = reason
            return None
        return metric.to(self.device)

    @torch.no_grad()
    def update(self, real: torch.Tensor, generated: torch.Tensor) -> None:
        """``real`` inputs and their ``generated`` reconstructions, (B, 3, H, W) floats in
        [0, 1], paired by position."""
        _check_images(real, generated)
        if real.shape[0] == 0:
            return
        real = real.to(self.device, torch.float32)
        generated = generated.to(self.device, torch.float32)
        self.psnr.update(generated, real)
        self.psnr_mean_colour.update(real.mean(dim=(2, 3), keepdim=True).expand_as(real), real)
        self.ssim.update(generated, real)
        if self.lpips is not None:
            self.lpips.update(generated, real)
        if self.fid is not None:
            self.fid.update(real, real=True)
            self.fid.update(generated, real=False)
        if self._dino is not None:
            self._dino["real"].update(pooled_encoder_features(self.feature_encoder, real))
            self._dino["generated"].update(pooled_encoder_features(self.feature_encoder,
                                                                   generated))
        self.num_images += real.shape[0]

    def compute(self) -> dict:
        """``{"num_images", "psnr", "psnr_mean_colour", "ssim", "lpips", "fid"}`` (+
        ``"fd_dinov2"`` with a ``feature_encoder``); a metric that cannot be given is ``None`` and
        comes with a ``"<name>_unavailable"`` reason. ``psnr_mean_colour``: the PSNR of each real
        image's own mean colour as its reconstruction, a reference, not a model's score."""
        if self.num_images == 0:
            raise InvalidInput("no images were given to GenerationMetrics.update")
        result: dict = {"num_images": self.num_images,
                        "psnr": float(self.psnr.compute()),
                        "psnr_mean_colour": float(self.psnr_mean_colour.compute()),
                        "ssim": float(self.ssim.compute())}
        result["lpips"] = None if self.lpips is None else float(self.lpips.compute())
        if self.fid is not None and self.num_images < 2:
            result["fid"] = None
            result["fid_unavailable"] = ("FID needs at least 2 images per set, got "
                                         f"{self.num_images}")
        else:
            result["fid"] = None if self.fid is None else float(self.fid.compute())
        if self._dino is not None:
            if self.num_images < 2:
                result["fd_dinov2"] = None
                result["fd_dinov2_unavailable"] = ("the Fréchet distance needs at least 2 images "
                                                   f"per set, got {self.num_images}")
            else:
                result["fd_dinov2"] = self._dino["real"].frechet_distance(self._dino["generated"])
        for name, reason in self.unavailable.items():
            result[f"{name}_unavailable"] = reason
        return result


def _new_lpips(net: str) -> torch.nn.Module:
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net, reduction="mean", normalize=True)


def _new_fid(weights_path: Path) -> torch.nn.Module:
    from torchmetrics.image.fid import FrechetInceptionDistance

    # An explicit path: torch-fidelity then reads the file and never goes to the network. A
    # missing path (downloads allowed) lets it download into the hub cache instead.
    path = str(weights_path) if weights_path.is_file() else None
    return FrechetInceptionDistance(feature=2048, normalize=True,
                                    feature_extractor_weights_path=path)


def download_weights(lpips_nets: tuple[str, ...] = ("alex",), fid: bool = True) -> list[Path]:
    """Download the checkpoints into the torch hub cache (needs internet); return their paths."""
    needed = [lpips_weights(net) for net in lpips_nets] + ([fid_weights()] if fid else [])
    for weights in needed:
        if not weights.present:
            try:
                # check_hash: both file names carry a SHA-256 prefix, which torch.hub verifies
                torch.hub.load_state_dict_from_url(weights.url, map_location="cpu",
                                                   check_hash=True)
            except (OSError, RuntimeError) as error:   # URLError is an OSError
                raise MissingInput(
                    f"cannot download {weights.description} from {weights.url} "
                    f"({type(error).__name__}: {error}). This machine seems to have no "
                    "internet: run `python -m glass.eval.generation download` on one that does "
                    f"and copy {', '.join(w.path.name for w in needed)} into "
                    f"{Path(torch.hub.get_dir()) / 'checkpoints'} here") from None
    return [weights.path for weights in needed]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    download = commands.add_parser("download", help="fetch LPIPS/FID weights into the torch cache")
    download.add_argument("--lpips-net", action="append", choices=sorted(_LPIPS_BACKBONES),
                          help="LPIPS backbone(s) (default: alex)")
    download.add_argument("--no-fid", action="store_true", help="skip the InceptionV3 weights")
    commands.add_parser("check", help="say which weights are present in the torch cache")
    args = parser.parse_args(argv)
    if args.command == "download":
        for path in download_weights(tuple(args.lpips_net or ["alex"]), fid=not args.no_fid):
            print(path)
    else:
        for weights in (*(lpips_weights(net) for net in _LPIPS_BACKBONES), fid_weights()):
            print(f"{'present' if weights.present else 'MISSING'}  {weights.path}  "
                  f"({weights.description})")


if __name__ == "__main__":
    from glass.stage_runner import run_stage

    run_stage("glass.eval.generation", main)
