"""package.xml against what the code imports and what rosdep resolves.

Every dependency key must resolve on Jazzy and Kilted (Ubuntu Noble): the verdicts for our keys
were taken from ros/rosdistro by tools/check_rosdep_keys.py (test/data/rosdep_keys.json names
the commit and its date); a new key fails here until it is checked there.  Every module the
package imports must be covered by a declared key, and every declared key must be imported.
Keys that name a package of this repository (interfaces/scene_from_views_interfaces) are no rosdep
keys: that package is built from source beside ours, and rosdep skips it like every package of
the paths it installs for (`--from-paths ... --ignore-src`).
"""
from __future__ import annotations

import ast
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from check_rosdep_keys import (  # noqa: E402
    DISTRIBUTIONS,
    KEYS_FILE,
    package_keys,
    released_packages,
    rosdep_keys,
    rule_installs,
    workspace_packages,
)

# The key that installs each third-party or ROS module the package imports.
IMPORT_KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "builtin_interfaces": "builtin_interfaces",
    "ament_index_python": "ament_index_python", "std_msgs": "std_msgs", "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs", "nav_msgs": "nav_msgs", "std_srvs": "std_srvs", "diagnostic_msgs": "diagnostic_msgs",
    "tf2_msgs": "tf2_msgs", "lifecycle_msgs": "lifecycle_msgs",
    "launch": "launch", "launch_ros": "launch_ros", "numpy": "python3-numpy", "cv2": "python3-opencv",
    "PIL": "python3-pil", "yaml": "python3-yaml", "scipy": "python3-scipy", "tqdm": "python3-tqdm", "torch": "python3-torch",
    "huggingface_hub": "python3-huggingface-hub-pip", "rosbags": "python3-rosbags-pip",
    "scene_from_views_interfaces": "scene_from_views_interfaces",
}
TEST_KEYS = {"python3-pytest", "python3-hypothesis"}


def imported_modules() -> set[str]:
    """Top-level modules imported by the installed code (package and launch files), stdlib and
    the package itself left out."""
    modules = set()
    for path in [*(REPO / "scene_from_views_ros").rglob("*.py"), *(REPO / "launch").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m not in ("__future__", "scene_from_views_ros")}


def test_every_key_resolves_with_rosdep_on_the_supported_distributions() -> None:
    record = json.loads(KEYS_FILE.read_text())
    assert record["platform"] == "ubuntu/noble" and len(record["rosdistro_commit"]) == 40 and record["rosdistro_date"]
    for distro in DISTRIBUTIONS:
        verdicts = record["verdicts"][distro]
        unchecked = [key for key in rosdep_keys() if key not in verdicts]
        assert not unchecked, f"keys not checked against rosdistro (run tools/check_rosdep_keys.py --write): {unchecked}"
        unresolved = [key for key in rosdep_keys() if verdicts[key] == "unresolved"]
        assert not unresolved, f"keys rosdep cannot resolve on {distro}: {unresolved}"


def test_declared_dependencies_are_exactly_what_the_code_imports() -> None:
    imported = imported_modules()
    unknown = sorted(imported - set(IMPORT_KEYS))
    assert not unknown, f"imported modules with no package.xml key decided (add them to IMPORT_KEYS and package.xml): {unknown}"
    needed = {IMPORT_KEYS[module] for module in imported}
    declared = set(package_keys()) - TEST_KEYS
    unused = declared - needed
    assert needed <= declared and not unused, f"missing: {sorted(needed - declared)}, declared but never imported: {sorted(unused)}"


def test_our_own_packages_are_found_in_the_repository_and_declared() -> None:
    """The keys exempt from rosdep are exactly this repository's packages that colcon builds:
    the interface package (an ament_cmake rosidl package), not scripts/tf2_msgs (COLCON_IGNORE:
    setup_env.sh builds it into the venv only) nor anything under .venv."""
    packages = workspace_packages()
    assert packages == {"scene_from_views_interfaces": REPO / "interfaces" / "scene_from_views_interfaces"}
    assert "scene_from_views_interfaces" in package_keys() and "scene_from_views_interfaces" not in rosdep_keys()
    for name, folder in packages.items():
        manifest = ET.parse(folder / "package.xml").getroot()
        assert manifest.get("format") == "3" and manifest.findtext("name") == name
        assert manifest.findtext("export/build_type") == "ament_cmake"
        assert manifest.findtext("member_of_group") == "rosidl_interface_packages"
        assert "rosidl_default_generators" in {e.text for e in manifest.iter("buildtool_depend")}
        assert "rosidl_default_runtime" in {e.text for e in manifest.iter("exec_depend")}
        assert not (folder / "COLCON_IGNORE").exists()


def test_the_checker_reads_rosdep_rules_as_rosdep_does_on_noble() -> None:
    """Rule shapes of rosdistro's yaml files: per-codename apt lists (null: none on that
    release, as python3-open3d on noble), pip installers, wildcard platforms."""
    assert rule_installs({"ubuntu": {"*": ["python3-open3d"], "focal": None, "noble": None}}) is None
    assert rule_installs({"ubuntu": {"*": ["python3-torch"], "focal": None}}) == "apt"
    assert rule_installs({"ubuntu": ["python3-numpy"]}) == "apt"
    assert rule_installs({"*": {"pip": ["huggingface_hub"]}}) == "pip"
    assert rule_installs({"ubuntu": {"pip": {"packages": ["rosbags"]}}}) == "pip"
    assert rule_installs({"debian": ["python3-x"], "fedora": ["python3-x"]}) is None  # no Ubuntu installer
    distribution = {"repositories": {"geometry2": {"release": {"packages": ["tf2", "tf2_msgs"], "version": "0.36.1-1"}},
                                     "rclpy": {"release": {"version": "7.1.1-1"}}, "planned": {"release": {"tags": {}}},
                                     "unreleased": {"source": {}}}}
    assert released_packages(distribution) == {"tf2", "tf2_msgs", "rclpy"}
