"""Pose estimation runtime (pure: ONNX Runtime + numpy, no rclpy, no torch).

``PoseEstimator(model_path, hand)`` loads a pose ONNX model, checks its contract against the hand
registry (refusing a mismatch with ``ModelContractError``), and ``predict(images)`` returns the
cube pose from one image per camera (registry order, uint8 (H, W, 3) rgb8).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dex_common.contract import (
    ModelContractError,
    check_pose_contract,
    read_contract,
    verified_sha256,
)
from dex_common.ort_session import cpu_session
from dex_common.stats import RollingStats
from dex_description.registry import HandSpec, get_hand

__all__ = ["ImageError", "ModelContractError", "PoseEstimator", "default_model_path"]


class ImageError(ValueError):
    """The images handed to ``predict`` do not match the model (count, dtype, shape)."""


def default_model_path(hand: str = "shadow") -> Path:
    """The default pose model shipped with the package, ``models/pose_<hand name>.onnx``."""
    return Path(__file__).resolve().parent / "models" / f"pose_{get_hand(hand).name}.onnx"


class PoseEstimator:
    """Cube pose from the hand's cameras with an ONNX model (2 intra-op threads)."""

    def __init__(self, model_path: str | Path | None = None, hand: str = "shadow",
                 threads: int = 2, resolution: tuple[int, int] | None = None) -> None:
        """``resolution`` (width, height): the cameras render that, not the registry's size
        (offline evaluation of a model trained at another resolution)."""
        self.spec: HandSpec = get_hand(hand)
        if resolution is not None:
            self.spec = self.spec.at_resolution(*resolution)
        self.model_path = Path(model_path) if model_path else default_model_path(hand)
        if not self.model_path.is_file():
            raise FileNotFoundError(f"pose model not found: {self.model_path}")
        # The bytes first (a listed model that differs is refused before it is parsed).
        self.sha256 = verified_sha256(self.model_path)
        self.contract = read_contract(self.model_path)
        check_pose_contract(self.contract, self.spec)  # raises ModelContractError listing mismatches
        self.cameras = list(self.spec.camera_names)
        # Expected (H, W, 3) per camera, from the registry (the contract matched it above).
        self.shapes = [(c.height, c.width, 3) for c in self.spec.cameras]
        self.session = cpu_session(self.model_path, threads)
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if "images" not in inputs or not {"position", "orientation"} <= set(outputs):
            raise ModelContractError(
                f"{self.model_path}: pose model must have input 'images' and outputs "
                f"'position', 'orientation'; has inputs {list(inputs)}, outputs {outputs}"
            )
        self.timing = RollingStats(1000)
        self._batch = np.empty((1, len(self.cameras), *self.shapes[0]), np.uint8)

    @property
    def eval(self) -> dict:
        """The model's recorded evaluation (``dex.eval``), {} when absent or unreadable."""
        try:
            return json.loads(self.contract.get("dex.eval", "{}"))
        except (TypeError, ValueError):
            return {}

    def check_images(self, images: Sequence[np.ndarray]) -> None:
        """Raise ImageError unless ``images`` is one uint8 (H, W, 3) array per camera."""
        if len(images) != len(self.cameras):
            raise ImageError(
                f"expected {len(self.cameras)} images (cameras {self.cameras}); got {len(images)}"
            )
        for name, img, shape in zip(self.cameras, images, self.shapes, strict=True):
            if not isinstance(img, np.ndarray):
                raise ImageError(f"{name}: expected a numpy array; got {type(img).__name__}")
            if img.dtype != np.uint8:
                raise ImageError(f"{name}: expected dtype uint8 (rgb8); got {img.dtype}")
            if img.shape != shape:
                raise ImageError(
                    f"{name}: expected shape (H, W, 3) = {shape} (the camera resolution); "
                    f"got {img.shape}"
                )

    def predict_batch(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions [N, 3], unit quaternions [N, 4]) for image sets [N, C, H, W, 3] uint8
        (offline evaluation: the same model and outputs as ``predict``, many sets per call)."""
        want = (len(self.cameras), *self.shapes[0])
        if images.dtype != np.uint8 or images.ndim != 5 or images.shape[1:] != want:
            raise ImageError(f"expected uint8 image sets [N, {', '.join(map(str, want))}]; "
                             f"got {images.dtype} {images.shape}")
        pos, quat = self.session.run(["position", "orientation"], {"images": images})
        q = quat.astype(np.float64)
        return pos.astype(np.float64), q / np.linalg.norm(q, axis=1, keepdims=True)

    def predict(self, images: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,) m world, unit quaternion (4,) w,x,y,z) from one image per camera."""
        self.check_images(images)
        t0 = time.perf_counter()
        for i, img in enumerate(images):
            self._batch[0, i] = img  # one copy into the model's input layout
        pos, quat = self.session.run(["position", "orientation"], {"images": self._batch})
        self.timing.add(time.perf_counter() - t0)
        p = pos[0].astype(np.float64)
        q = quat[0].astype(np.float64)
        n = float(np.linalg.norm(q))
        if not (np.all(np.isfinite(p)) and np.isfinite(n) and n > 1e-6):
            raise FloatingPointError(f"pose model produced a non-finite pose: {p}, {q}")
        return p, q / n
