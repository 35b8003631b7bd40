"""Forward kinematics of the hand (pure: no rclpy): fingertip positions from joint angles.

The policy node observes fingertips but receives /joint_states; this computes them with the
same MJCF and the same MuJoCo code the sim uses, so sim and node agree to float precision. It
lives next to the model it reads: a controller on a real hand does not import the simulator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mujoco
import numpy as np

from dex_description.registry import get_hand
from dex_description.scene import SceneIndex, load_model


class HandKinematics:
    """Fingertip positions (world frame) for a hand, on its own MjData."""

    def __init__(self, hand: str = "shadow") -> None:
        self.spec = get_hand(hand)
        self.model = load_model(hand)
        self.data = mujoco.MjData(self.model)
        self.idx = SceneIndex(self.model, self.spec)
        mujoco.mj_forward(self.model, self.data)

    def fingertips(self, joint_positions: Sequence[float] | np.ndarray) -> np.ndarray:
        """(5, 3) fingertip site positions for 24 joint angles in registry order."""
        q = np.asarray(joint_positions, dtype=float)
        if q.shape != (self.spec.n_joints,):
            raise ValueError(
                f"expected {self.spec.n_joints} joint positions in registry order, got shape "
                f"{q.shape}"
            )
        # Checked as Python floats: cheaper than numpy's isfinite + all on ~20 values.
        if not all(map(math.isfinite, q.tolist())):
            raise ValueError("joint positions contain NaN/Inf")
        self.data.qpos[self.idx.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.idx.site_ids]
