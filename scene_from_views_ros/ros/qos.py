"""QoS profiles of the node's topics, in one place so that publishers and tests agree."""
from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

# The map is large and changes once per window: keep the last one for late joiners (RViz).
MAP_CLOUD_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Per-window outputs: reliable, a short history (several depth images share one window).
WINDOW_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=16,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# What tf2_ros.TransformBroadcaster uses for /tf.
TF_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
)
# What tf2_ros.StaticTransformBroadcaster uses for /tf_static: latched.
TF_STATIC_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=100,
    reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


def image_qos(kind: str, depth: int) -> QoSProfile:
    """Subscription QoS for camera topics: "sensor_data" (best effort, what camera drivers
    publish) or "reliable" (e.g. bag playback, image_transport republishers); the choice is
    checked by the parameter's declaration (`NodeInputs.image_qos`)."""
    base = qos_profile_sensor_data if kind == "sensor_data" else QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=base.reliability, durability=DurabilityPolicy.VOLATILE,
    )
