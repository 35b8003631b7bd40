"""The ros2_control files for a ROS 2 distro agree with the registry and the driver defaults."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from dex_description.paths import urdf_path
from dex_description.registry import get_hand, get_servo_map
from dex_hardware.leap import LeapConfig
from dex_hardware.ros2_control import files, main

SPEC = get_hand("leap")


def test_committed_files_are_up_to_date() -> None:
    assert main(["--check"]) == 0


def test_dynamixel_block_maps_every_joint_to_its_servo() -> None:
    xml, yaml = files().values()
    root = ET.fromstring(xml.split("-->", 1)[1])
    hw = {p.get("name"): p.text for p in root.find("hardware").findall("param")}
    assert root.find("hardware/plugin").text == "dynamixel_hardware_interface/DynamixelHardware"
    assert hw["baud_rate"] == "4000000" and hw["number_of_joints"] == "16"
    assert [j.get("name") for j in root.findall("joint")] == SPEC.actuator_names
    cfg = LeapConfig()
    gpios = root.findall("gpio")
    assert [int(g.find("param[@name='ID']").text) for g in gpios] == list(get_servo_map("leap").ids)
    for g in gpios:
        sid = int(g.find("param[@name='ID']").text)
        p = {e.get("name"): e.text for e in g.findall("param")}
        scale = 0.75 if sid in (0, 4, 8) else 1.0
        assert p["Position P Gain"] == str(round(cfg.p_gain * scale))
        assert p["Position D Gain"] == str(round(cfg.d_gain * scale))
        assert p["Operating Mode"] == "5" and p["Goal Current"] == "350"
    # The URDF (dry run: mock_components) commands the same joints.
    urdf = ET.parse(urdf_path("leap")).getroot()
    mock = urdf.find("ros2_control")
    assert mock.find("hardware/plugin").text == "mock_components/GenericSystem"
    commanded = [j.get("name") for j in mock.findall("joint") if j.find("command_interface") is not None]
    assert commanded == SPEC.actuator_names
    # Controllers: the topic dex publishes on, joints in registry order.
    joints = [ln.strip()[2:] for ln in yaml.splitlines() if ln.startswith("      - ")]
    assert joints == SPEC.actuator_names
    assert "hand_position_controller:" in yaml and "ForwardCommandController" in yaml
