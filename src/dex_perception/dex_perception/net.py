"""The pose CNN, after Dactyl's vision model (arXiv 1808.00177, Fig. 6), sized for a CPU.

Per camera (weights shared across the cameras; optionally average-pooled first): Conv 32@5x5 stride 2, Conv 32@3x3, MaxPool 2,
residual stages (16/32/64/64 channels, the later ones stride 2), spatial softmax (one expected
(x, y) keypoint per channel). The keypoints of all cameras are concatenated → FC 128 → position
(3) and orientation.

Orientation (``NetConfig.rotation``): ``"6d"`` (the default for new models) predicts two 3-vectors
that Gram-Schmidt turns into a rotation matrix (Zhou et al., CVPR 2019: the 6-D representation
is continuous, where a quaternion output has to jump between q and −q somewhere); the matrix is
converted to a quaternion inside the graph, so the ONNX contract (``orientation`` [B, 4] w,x,y,z)
does not change. ``"quat"`` (the first shipped model) predicts a 4-vector, normalised.
Symmetry: the cube's faces are coloured distinctly, so all 24 of its rotational symmetries are
told apart and every orientation has one label; only q ≡ −q needs handling (both losses are
invariant to it).

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
    rotation: str = "6d"  # "6d" (Gram-Schmidt) or "quat" (normalised 4-vector)
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
        d.setdefault("rotation", "quat")  # models from before the 6-D head
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
        if cfg.rotation not in ("6d", "quat"):
            raise ValueError(f"NetConfig.rotation {cfg.rotation!r}: expected '6d' or 'quat'")
        self.pos = nn.Linear(cfg.fc, 3)
        self.rot = nn.Linear(cfg.fc, 6 if cfg.rotation == "6d" else 4)
        self.register_buffer("pos_center", torch.tensor(cfg.pos_center, dtype=torch.float32))
        self.register_buffer("pos_scale", torch.tensor(cfg.pos_scale, dtype=torch.float32))
        # Start near the identity orientation so early normalisation is well conditioned.
        with torch.no_grad():
            ident = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0] if cfg.rotation == "6d" else [1.0, 0.0, 0.0, 0.0]
            self.rot.bias.copy_(torch.tensor(ident))

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(position [B, 3], raw rotation output [B, 6 or 4]): what the losses train."""
        b, c, h, w, ch = images.shape
        x = images.to(torch.float32) * (1.0 / 255.0) - 0.5
        # NHWC → NCHW, made contiguous: a channels_last tensor here sends the stride-2 1x1 skip
        # conv to a oneDNN backward kernel that corrupts the heap for odd batches on 2+ threads
        # (torch 2.13 CPU; found with a partial last batch).
        x = x.reshape(b * c, h, w, ch).permute(0, 3, 1, 2).contiguous()
        if self.cfg.input_downsample > 1:
            x = F.avg_pool2d(x, self.cfg.input_downsample)
        feats = self.tower(x).reshape(b, -1)  # cameras concatenated in order
        z = self.head(feats)
        return self.pos_center + self.pos_scale * self.pos(z), self.rot(z)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pos, r = self.features(images)
        if self.cfg.rotation == "6d":
            return pos, matrix_to_quat(rot6d_to_matrix(r))
        return pos, r / torch.clamp(torch.linalg.vector_norm(r, dim=1, keepdim=True), min=1e-8)


def rot6d_to_matrix(r: torch.Tensor) -> torch.Tensor:
    """[B, 6] → rotation matrices [B, 3, 3] by Gram-Schmidt; the inputs are its first two
    columns before orthonormalisation."""
    a, b = r[:, :3], r[:, 3:]
    x = a / torch.clamp(torch.linalg.vector_norm(a, dim=1, keepdim=True), min=1e-8)
    b = b - (x * b).sum(dim=1, keepdim=True) * x
    y = b / torch.clamp(torch.linalg.vector_norm(b, dim=1, keepdim=True), min=1e-8)
    z = torch.cross(x, y, dim=1)
    return torch.stack([x, y, z], dim=2)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Unit quaternions [B, 4] (w, x, y, z) → rotation matrices [B, 3, 3]."""
    w, x, y, z = q.unbind(dim=1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).reshape(-1, 3, 3)


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B, 3, 3] → unit quaternions [B, 4] (w, x, y, z), without branches
    (exportable): of the four standard formulas each row takes the one whose pivot (4w², 4x²,
    4y² or 4z²) is largest, so it never divides by a small number."""
    r00, r01, r02 = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    r10, r11, r12 = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    r20, r21, r22 = m[:, 2, 0], m[:, 2, 1], m[:, 2, 2]
    # Each candidate is 4·(pivot component)·q; the pivot is its own first entry's component.
    cands = torch.stack([
        torch.stack([1 + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01], dim=1),
        torch.stack([r21 - r12, 1 + r00 - r11 - r22, r01 + r10, r02 + r20], dim=1),
        torch.stack([r02 - r20, r01 + r10, 1 - r00 + r11 - r22, r12 + r21], dim=1),
        torch.stack([r10 - r01, r02 + r20, r12 + r21, 1 - r00 - r11 + r22], dim=1),
    ], dim=1)  # [B, 4 candidates, 4]
    pivots = torch.diagonal(cands, dim1=1, dim2=2)  # [B, 4]
    best = torch.argmax(pivots, dim=1, keepdim=True)  # [B, 1]
    q = torch.gather(cands, 1, best.unsqueeze(-1).expand(-1, 1, 4)).squeeze(1)
    return q / torch.clamp(torch.linalg.vector_norm(q, dim=1, keepdim=True), min=1e-8)


def pose_loss(
    pos: torch.Tensor,
    quat: torch.Tensor,
    pos_gt: torch.Tensor,
    quat_gt: torch.Tensor,
    pos_weight: float = 1.0 / 0.01**2,
    rot_weight: float = 20.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, position MSE in m², rotation loss) for a unit-quaternion output. Rotation loss
    1 − |<q, q̂>| = 1 − cos(θ/2) is invariant to the q / −q double cover but not to the cube's 24
    symmetries (its faces are coloured distinctly, so every orientation is distinguishable).
    ``pos_weight`` makes 1 cm of position error cost 1; ``rot_weight`` makes ~25 degrees of
    rotation error cost about 0.5."""
    rot = (1.0 - (quat * quat_gt).sum(dim=1).abs()).mean()
    return _weighted(pos, pos_gt, rot, pos_weight, rot_weight)


def pose_loss_6d(
    pos: torch.Tensor,
    rot6d: torch.Tensor,
    pos_gt: torch.Tensor,
    quat_gt: torch.Tensor,
    pos_weight: float = 1.0 / 0.01**2,
    rot_weight: float = 20.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, position MSE in m², rotation loss) for the 6-D output: the rotation loss is
    ‖R − R̂‖²_F / 16 = sin²(θ/2) / 2, which for small angles matches ``pose_loss``'s term
    (θ²/8) so the same weights apply; q and −q give the same R̂."""
    diff = rot6d_to_matrix(rot6d) - quat_to_matrix(quat_gt)
    rot = ((diff ** 2).sum(dim=(1, 2)) / 16.0).mean()
    return _weighted(pos, pos_gt, rot, pos_weight, rot_weight)


def _weighted(pos: torch.Tensor, pos_gt: torch.Tensor, rot: torch.Tensor, pos_weight: float,
              rot_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, position MSE in m², rotation loss): the position term both losses share."""
    pos_mse = ((pos - pos_gt) ** 2).sum(dim=1).mean()
    return pos_weight * pos_mse + rot_weight * rot, pos_mse, rot


def net_loss(model: PoseNet, images: torch.Tensor, pos_gt: torch.Tensor, quat_gt: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The training loss for the model's rotation head (``pose_loss`` or ``pose_loss_6d``)."""
    pos, r = model.features(images)
    if model.cfg.rotation == "6d":
        return pose_loss_6d(pos, r, pos_gt, quat_gt)
    q = r / torch.clamp(torch.linalg.vector_norm(r, dim=1, keepdim=True), min=1e-8)
    return pose_loss(pos, q, pos_gt, quat_gt)


def rotation_error_rad(quat: torch.Tensor, quat_gt: torch.Tensor) -> torch.Tensor:
    """Angle (rad) of the rotation between unit quaternions, per row."""
    d = (quat * quat_gt).sum(dim=1).abs().clamp(max=1.0)
    return 2.0 * torch.acos(d)
