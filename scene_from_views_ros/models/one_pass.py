"""What the one-pass multi-view models (Fast3R, MV-DUSt3R) share: their raw outputs as a
mapping of per-view arrays under the reference's own output names, in the caller's view order,
and how their point maps and PnP cameras become the common result."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.base import SceneFromViewsBase
from ..core.result import PointCloud, SceneFromViewsResult
from ..geometry.camera import intrinsics_in_original_pixels
from ..optimizers.base import SceneOptimizerInput, optimizer_input_from_result
from .dust3r import PairViews


class ViewOutputs(dict[str, Any]):
    """Raw outputs per view under the reference's names: arrays (N, H, W, 3) / (N, H, W) when
    all views share a shape, else lists of per-view arrays."""

    @classmethod
    def from_views(cls, outputs: Mapping[str, Sequence[torch.Tensor]]) -> dict[str, Any]:
        """Per key the per-view tensors (H, W, ...) (a stacked (N, H, W, ...) tensor is one)
        -> float32 numpy arrays, stacked where the shapes allow."""
        arrays: dict[str, Any] = {}
        for key, values in outputs.items():
            views = [value.float().cpu().numpy() for value in values]
            same = all(view.shape == views[0].shape for view in views)
            arrays[key] = np.stack(views) if same else views
        return arrays

    def view(self, key: str, index: int) -> np.ndarray:
        """One view's `key` output."""
        return np.asarray(self[key][index])

    @property
    def num_views(self) -> int:
        return len(next(iter(self.values())))


class OnePassModel(SceneFromViewsBase):
    """Base of the one-pass multi-view models (Fast3R, MV-DUSt3R, Depth Anything 3)."""

    @staticmethod
    def assemble_result(
        processed: PairViews, poses: list[np.ndarray], depths: list[np.ndarray], clouds: list[np.ndarray],
        confidences: list[np.ndarray], masks: list[np.ndarray], focals: Sequence[float], as_pointcloud: bool, extras: dict[str, Any],
    ) -> SceneFromViewsResult:
        """The common result of a model whose cameras come from PnP: pinhole intrinsics with each
        view's focal and the principal point at the image centre, the fused cloud of the masked pixels (empty without `as_pointcloud`),
        and besides `extras` the focals and intrinsics in the original images' pixels."""
        intrinsics = []
        for focal, image in zip(focals, processed.rgb, strict=True):
            height, width = image.shape[:2]
            intrinsics.append(np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]]))
        cloud = PointCloud.from_views(clouds, processed.rgb, masks) if as_pointcloud else PointCloud(np.zeros((0, 3)), np.zeros((0, 3)))
        return SceneFromViewsResult(
            global_point_cloud=cloud, camera_poses=poses, processed_images=processed.rgb, depth_predictions=depths,
            point_clouds=clouds, intrinsics=intrinsics, confidences=confidences, masks=masks,
            extras={
                **extras, "focals": np.asarray(focals, dtype=np.float64),
                "intrinsics_original": list(intrinsics_in_original_pixels(np.asarray(intrinsics), processed.scales, processed.offsets)),
                "scales": processed.scales, "offsets": processed.offsets,
            },
        )

    def create_optimizer_input(self, raw: Any, processed: PairViews) -> SceneOptimizerInput:
        """One pair prediction per ordered pair of views, from the post-processed point maps and poses."""
        result = self.postprocess_results(raw, processed.rgb, processed, as_pointcloud=False)
        return optimizer_input_from_result(result, raw=raw, device=str(self.device))
