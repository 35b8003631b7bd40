"""Where the packaged model files are (works for an editable install, a plain pip install and a
colcon install: the files are package data next to this module)."""

from __future__ import annotations

from pathlib import Path

from dex_description.registry import HandSpec, get_hand

_PKG_DIR = Path(__file__).resolve().parent


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} not found at {path}. It is generated package data: run "
            "`python -m dex_description.generate` in the source tree and reinstall "
            "dex_description (pip install -e src/dex_description, or colcon build)."
        )
    return path


def scene_xml(hand: str = "shadow") -> Path:
    """The MJCF scene MuJoCo loads: hand + cube + goal marker + 3 cameras + lights."""
    spec = get_hand(hand)
    return _existing(_PKG_DIR / "models" / f"{spec.name}_scene.xml", f"MJCF scene for {hand!r}")


def urdf_path(hand: str = "shadow") -> Path:
    """The URDF of the hand (no cube), with its <ros2_control> tag."""
    spec = get_hand(hand)
    return _existing(_PKG_DIR / "models" / f"{spec.name}.urdf", f"URDF for {hand!r}")


def rviz_config(hand: str = "shadow") -> Path:
    """The RViz2 config (fixed frame world, robot model, camera images, goal, object poses);
    ``dex.rviz`` for the Shadow hand, ``<hand name>.rviz`` for another profile."""
    return _existing(_PKG_DIR / "rviz" / rviz_name(get_hand(hand)), f"RViz config for {hand!r}")


def rviz_name(spec: HandSpec) -> str:
    """RViz config file name: ``dex.rviz`` for the default hand, ``<hand name>.rviz`` else."""
    return "dex.rviz" if spec.name == get_hand().name else f"{spec.name}.rviz"
