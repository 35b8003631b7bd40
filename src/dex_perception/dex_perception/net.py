"""The pose CNN, after Dactyl's vision model (arXiv 1808.00177, Fig. 6), sized for a CPU.

Per camera (weights shared across the cameras; optionally average-pooled first): Conv 32@5x5 stride 2, Conv 32@3x3, MaxPool 2,
residual stages (16/32/64/64 channels, the later ones stride 2), spatial softmax (one expected
(x, y) keypoint per channel). The keypoints of all cameras are concatenated → FC 128 → position
(3) and orientation quaternion (4, normalised).

One addition to Dactyl's head: the per-channel global average of the last feature map is
concatenated with the keypoints. Keypoints only say *where* a feature fires; the averages say
*how much*, which helps tell the distinctly coloured faces apart (orientation) in short CPU runs.

The module takes ``images`` as uint8 [B, C, H, W, 3] (C cameras in registry order, rgb8) and does
the cast / normalise / transpose inside, so the exported ONNX graph takes raw camera frames.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class NetConfig:
    n_cameras: int = 3
    height: int = 128
    width: int = 128
    # Average-pool the camera image by this factor first (1 = full resolution, Dactyl). 2 makes
    # the net ~4x cheaper: what lets a useful model train on 2 shared CPU cores.
    input_downsample: int = 1
    stem_channels: int = 32
    stages: tuple[int, ...] = (16, 32, 64, 64)
    stage_strides: tuple[int, ...] = (1, 2, 2, 1)
    fc: int = 128
    # Position is predicted as centre + scale * raw output (world m), so the net's raw output is
    # O(1); centre is the cube's rest position from the registry.
    pos_center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pos_scale: float = 0.05
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stages"] = list(self.stages)
        d["stage_strides"] = list(self.stage_strides)
        d["pos_center"] = list(self.pos_center)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetConfig:
        d = dict(d)
        d.setdefault("input_downsample", 1)
        d["stages"] = tuple(d["stages"])
        d["stage_strides"] = tuple(d["stage_strides"])
        d["pos_center"] = tuple(d["pos_center"])
        return cls(**d)


class ResBlock(nn.Module):
    """Pre-activation-free basic residual block (two 3x3 convs), optional stride / widening."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x))


class SpatialSoftmax(nn.Module):
    """Per channel: softmax over pixels → expected (x, y) in [-1, 1]. Output [N, 2C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, dtype=x.dtype, device=x.device)
        xs = torch.linspace(-1.0, 1.0, w, dtype=x.dtype, device=x.device)
        p = torch.softmax(x.flatten(2), dim=-1).view(n, c, h, w)
        ex = (p.sum(dim=2) * xs).sum(dim=-1)  # [n, c]
        ey = (p.sum(dim=3) * ys).sum(dim=-1)
        return torch.cat([ex, ey], dim=1)


class CameraTower(nn.Module):
    """The per-camera feature extractor (shared across cameras)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        s = cfg.stem_channels
        self.stem = nn.Sequential(
            nn.Conv2d(3, s, 5, 2, 2, bias=False),
            nn.BatchNorm2d(s),
            nn.ReLU(),
            nn.Conv2d(s, s, 3, 1, 1, bias=False),
            nn.BatchNorm2d(s),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        blocks = []
        cin = s
        for cout, stride in zip(cfg.stages, cfg.stage_strides, strict=True):
            blocks.append(ResBlock(cin, cout, stride))
            cin = cout
        self.stages = nn.Sequential(*blocks)
        self.keypoints = SpatialSoftmax()
        self.out_features = 3 * cin  # 2 keypoint coords + 1 mean activation per channel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stages(self.stem(x))
        return torch.cat([self.keypoints(f), f.mean(dim=(2, 3))], dim=1)


class PoseNet(nn.Module):
    """images uint8 [B, C, H, W, 3] → (position [B, 3] world m, orientation [B, 4] w,x,y,z)."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tower = CameraTower(cfg)
        self.head = nn.Sequential(
            nn.Linear(cfg.n_cameras * self.tower.out_features, cfg.fc), nn.ReLU()
        )
        self.pos = nn.Linear(cfg.fc, 3)
        self.rot = nn.Linear(cfg.fc, 4)
        self.register_buffer("pos_center", torch.tensor(cfg.pos_center, dtype=torch.float32))
        self.register_buffer("pos_scale", torch.tensor(cfg.pos_scale, dtype=torch.float32))
        # Start near identity orientation so early normalisation is well conditioned.
        with torch.no_grad():
            self.rot.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, h, w, ch = images.shape
        x = images.to(torch.float32) * (1.0 / 255.0) - 0.5
        x = x.reshape(b * c, h, w, ch).permute(0, 3, 1, 2)  # NHWC → NCHW
        if self.cfg.input_downsample > 1:
            x = F.avg_pool2d(x, self.cfg.input_downsample)
        feats = self.tower(x).reshape(b, -1)  # cameras concatenated in order
        z = self.head(feats)
        pos = self.pos_center + self.pos_scale * self.pos(z)
        q = self.rot(z)
        q = q / torch.clamp(torch.linalg.vector_norm(q, dim=1, keepdim=True), min=1e-8)
        return pos, q


def pose_loss(
    pos: torch.Tensor,
    quat: torch.Tensor,
    pos_gt: torch.Tensor,
    quat_gt: torch.Tensor,
    pos_weight: float = 1.0 / 0.01**2,
    rot_weight: float = 20.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, position MSE in m², rotation loss). Rotation loss 1 − |<q, q̂>| is invariant to
    the q / −q double cover but not to the cube's 24 symmetries (its faces are coloured
    distinctly, so every orientation is distinguishable). ``pos_weight`` makes 1 cm of position
    error cost 1; ``rot_weight`` makes ~25 degrees of rotation error cost about 0.5."""
    pos_mse = ((pos - pos_gt) ** 2).sum(dim=1).mean()
    rot = (1.0 - (quat * quat_gt).sum(dim=1).abs()).mean()
    return pos_weight * pos_mse + rot_weight * rot, pos_mse, rot


def rotation_error_rad(quat: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
    """Angle (rad) of the rotation between unit quaternions, per row."""
    d = (quat * quat_gt).sum(dim=1).abs().clamp(max=1.0)
    return 2.0 * torch.acos(d)
