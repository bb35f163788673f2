"""Offline inputs and outputs: frame sources (image folders, videos, ROS 2 bags, the built-in
sample), the output folder's files, and the replay bag writer.  No rclpy here."""
from .exports import EXPORT_FORMATS, KeyframeImages, parse_exports, write_map_exports
from .outputs import MapOutputs, RunSummary, colorize, keyframe_files
from .sources import FrameSource, ImageFilesSource, InputError, Selection, SyntheticSource, VideoSource, open_source

__all__ = [
    "EXPORT_FORMATS",
    "FrameSource",
    "ImageFilesSource",
    "InputError",
    "KeyframeImages",
    "MapOutputs",
    "RunSummary",
    "Selection",
    "SyntheticSource",
    "VideoSource",
    "colorize",
    "keyframe_files",
    "open_source",
    "parse_exports",
    "write_map_exports",
]
