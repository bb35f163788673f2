"""Camera maths: pose encodings, pose inversion, depth unprojection, PnP poses.

Conventions: OpenCV camera axes (x right, y down, z forward); "extrinsics" are 3x4
world-to-camera [R|t]; "poses" are 4x4 camera-to-world.  Functions accept any leading
batch dimensions.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch


def quaternion_to_matrix(quaternions: torch.Tensor) -> torch.Tensor:
    """Unit-or-not quaternions (..., 4) in x, y, z, w order (scalar last) -> rotations (..., 3, 3)."""
    i, j, k, r = torch.unbind(quaternions, -1)
    two_s = 2.0 / (quaternions * quaternions).sum(-1)
    matrix = torch.stack(
        (
            1 - two_s * (j * j + k * k), two_s * (i * j - k * r), two_s * (i * k + j * r),
            two_s * (i * j + k * r), 1 - two_s * (i * i + k * k), two_s * (j * k - i * r),
            two_s * (i * k - j * r), two_s * (j * k + i * r), 1 - two_s * (i * i + j * j),
        ),
        -1,
    )
    return matrix.reshape(quaternions.shape[:-1] + (3, 3))


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotations (..., 3, 3) -> unit quaternions (..., 4) in x, y, z, w order with w >= 0, from the
    best-conditioned of the four candidate formulas (the inverse of `quaternion_to_matrix`)."""
    m = matrix.reshape(matrix.shape[:-2] + (9,))
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = torch.unbind(m, dim=-1)
    q_abs = torch.sqrt(torch.clamp(torch.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1), min=0.0))
    candidates = torch.stack([
        torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
        torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
        torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], dim=-1),
        torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], dim=-1),
    ], dim=-2) / (2.0 * q_abs[..., None].clamp(min=0.1))
    best = q_abs.argmax(dim=-1)
    wxyz = torch.gather(candidates, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    xyzw = wxyz[..., [1, 2, 3, 0]]
    return torch.where(xyzw[..., 3:4] < 0, -xyzw, xyzw)


def pose_encoding_to_extrinsics_intrinsics(
    pose_encoding: torch.Tensor, image_hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """VGGT's "absT_quaR_FoV" encoding (..., 9) = [t(3), quat xyzw(4), fov_h, fov_w] ->
    world-to-camera extrinsics (..., 3, 4) and pinhole intrinsics (..., 3, 3) for an
    image of `image_hw` pixels with the principal point at its centre."""
    translation = pose_encoding[..., :3]
    rotation = quaternion_to_matrix(pose_encoding[..., 3:7])
    extrinsics = torch.cat([rotation, translation[..., None]], dim=-1)
    height, width = image_hw
    fy = (height / 2.0) / torch.tan(pose_encoding[..., 7] / 2.0)
    fx = (width / 2.0) / torch.tan(pose_encoding[..., 8] / 2.0)
    intrinsics = torch.zeros(pose_encoding.shape[:-1] + (3, 3), dtype=pose_encoding.dtype, device=pose_encoding.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2
    intrinsics[..., 1, 2] = height / 2
    intrinsics[..., 2, 2] = 1.0
    return extrinsics, intrinsics


def extrinsics_to_poses(extrinsics: np.ndarray) -> np.ndarray:
    """World-to-camera (..., 3, 4) or (..., 4, 4) -> camera-to-world 4x4 (closed-form inverse)."""
    rotation = extrinsics[..., :3, :3]
    translation = extrinsics[..., :3, 3]
    poses = np.zeros(extrinsics.shape[:-2] + (4, 4), dtype=extrinsics.dtype)
    poses[..., :3, :3] = np.swapaxes(rotation, -1, -2)
    poses[..., :3, 3] = -np.einsum("...ji,...j->...i", rotation, translation)
    poses[..., 3, 3] = 1
    return poses


def unproject_depth(depth: np.ndarray, intrinsics: np.ndarray, poses: np.ndarray | None = None) -> np.ndarray:
    """Depth maps (S, H, W) -> points (S, H, W, 3): in each camera's frame, or in the world
    frame when camera-to-world `poses` (S, 4, 4) are given.  Pixel centres at integer
    coordinates, as the VGGT reference unprojects."""
    _frames, height, width = depth.shape
    u, v = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    fx, fy = intrinsics[:, 0, 0, None, None], intrinsics[:, 1, 1, None, None]
    cx, cy = intrinsics[:, 0, 2, None, None], intrinsics[:, 1, 2, None, None]
    camera = np.stack([(u - cx) * depth / fx, (v - cy) * depth / fy, depth], axis=-1).astype(np.float32)
    if poses is None:
        return camera
    rotation, translation = poses[:, :3, :3], poses[:, :3, 3]
    world = np.einsum("sij,shwj->shwi", rotation, camera) + translation[:, None, None, :]
    return world.astype(np.float32)


def intrinsics_in_original_pixels(intrinsics: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(N, 3, 3) intrinsics of processed images mapped back to their original images, where
    x_processed = scale * x_original + offset per view ((N, 2) scales and offsets)."""
    original = np.array(intrinsics, dtype=np.float64)
    original[:, 0, :] /= scales[:, 0, None]
    original[:, 1, :] /= scales[:, 1, None]
    original[:, 0, 2] -= offsets[:, 0] / scales[:, 0]
    original[:, 1, 2] -= offsets[:, 1] / scales[:, 1]
    return original


def intrinsics_in_processed_pixels(intrinsics: np.ndarray, scales: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The inverse of `intrinsics_in_original_pixels`: (N, 3, 3) intrinsics of the original
    images mapped to their processed images (x_processed = scale * x_original + offset)."""
    processed = np.array(intrinsics, dtype=np.float64)
    processed[:, 0, :2] *= scales[:, 0, None]
    processed[:, 1, :2] *= scales[:, 1, None]
    processed[:, 0, 2] = processed[:, 0, 2] * scales[:, 0] + offsets[:, 0]
    processed[:, 1, 2] = processed[:, 1, 2] * scales[:, 1] + offsets[:, 1]
    return processed


def pnp_pose(
    points: np.ndarray,
    focals: Sequence[float],
    iterations: int = 100,
    reprojection_px: float = 8.0,
    mask: np.ndarray | None = None,
    method: int = cv2.SOLVEPNP_ITERATIVE,
) -> tuple[np.ndarray, float] | None:
    """Camera-to-world pose and focal of a view from its point map (H, W, 3) in a common
    frame: OpenCV's RANSAC PnP (principal point at the image centre, `method`, `iterations`,
    `reprojection_px`) on the finite points under `mask`, at each of `focals`; the focal with
    the most inliers wins.  None when fewer than 4 points are usable or every solve fails."""
    height, width = points.shape[:2]
    valid = np.isfinite(points).all(-1) if mask is None else (mask & np.isfinite(points).all(-1))
    if valid.sum() < 4:
        return None
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    pixels = np.stack((cols, rows), axis=-1)[valid]
    world = points[valid].astype(np.float32)
    best: tuple[int, float, np.ndarray, np.ndarray] | None = None
    for focal in focals:
        camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float32)
        try:
            ok, rvec, tvec, inliers = cv2.solvePnPRansac(
                world, pixels, camera, None, iterationsCount=iterations, reprojectionError=reprojection_px, flags=method,
            )
        except cv2.error:
            continue
        if ok and inliers is not None and (best is None or len(inliers) > best[0]):
            best = (len(inliers), float(focal), rvec, tvec)
    if best is None:
        return None
    world_to_camera = np.eye(4)
    world_to_camera[:3, :3] = cv2.Rodrigues(best[2])[0]
    world_to_camera[:3, 3] = best[3].ravel()
    return np.linalg.inv(world_to_camera), best[1]
