"""Mapping core: keyframes, sliding windows, Sim(3) chaining, global map and exports (no rclpy)."""
from .chaining import ChainConfig, ChainFit, WindowInMap
from .exports import read_tum, save_map, write_tum
from .global_map import GlobalMap, KeyframePose, MapConfig
from .keyframes import Frame, Keyframe, KeyframeConfig, KeyframeSelector
from .mapper import MapperConfig, MapperStats, Reconstructor, SlidingWindowMapper, WindowError, as_reconstructor
from .windows import Window, WindowBuilder, WindowConfig

__all__ = [
    "ChainConfig",
    "ChainFit",
    "Frame",
    "GlobalMap",
    "Keyframe",
    "KeyframeConfig",
    "KeyframePose",
    "KeyframeSelector",
    "MapConfig",
    "MapperConfig",
    "MapperStats",
    "Reconstructor",
    "SlidingWindowMapper",
    "Window",
    "WindowBuilder",
    "WindowConfig",
    "WindowError",
    "WindowInMap",
    "as_reconstructor",
    "read_tum",
    "save_map",
    "write_tum",
]
