"""ament_python build of scene_from_views_ros; also a plain pip-installable package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "scene_from_views_ros"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "tools"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        (f"share/{PACKAGE_NAME}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE_NAME}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE_NAME}/config/models", glob("config/models/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy",
        "torch>=2.1",
        "huggingface_hub",
        "opencv-python-headless",
        "pillow",
        "pyyaml",
        "scipy",
        "tqdm",
    ],
    extras_require={
        "open3d": ["open3d-cpu"],
        "bags": ["rosbags"],
        "ray": ["ray"],
        "test": ["pytest", "pycolmap"],
    },
    zip_safe=True,
    maintainer="scene_from_views_ros maintainers",
    maintainer_email="maintainers@scene-from-views.invalid",
    description="ROS 2 mapping with feed-forward 3D reconstruction models (VGGT and friends).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "scene_from_views_node = scene_from_views_ros.ros.node:main",
            "scene_from_views_lifecycle_node = scene_from_views_ros.ros.node:lifecycle_main",
            "scene_from_views_map = scene_from_views_ros.cli.map:main",
        ],
    },
)
