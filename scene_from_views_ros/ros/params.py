"""The node's ROS parameters, declared from the one declaration in `mapping.settings`.

Every parameter of `mapping.settings.parameters(model_type)` (the fixed groups and the
options of the model class that ``model_type`` names) is declared with a descriptor made
from its `OptionSpec`: description with unit and allowed values, integer/floating-point
range (and step), choices as additional constraints, read-only when a change needs a
restart.  ``ros2 param describe`` shows all of it.

Values are checked by `settings_from_parameters`, the function the offline tool uses, at
start-up and on every ``ros2 param set``; so the node and the CLI accept the same values
with the same messages.  Parameters are declared dynamically typed for that reason: an
integer is accepted where a float is expected (``conf_thres: 30`` in YAML), as the CLI
accepts it, and a wrong type is refused by our check, which names the parameter.
``optimizer.<option>`` parameters depend on the optimizer type: they are declared from the
overrides and checked against that optimizer's declaration.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter as RosParameter

from ..core.base import SceneFromViewsBase
from ..core.options import Options
from ..mapping.settings import (
    OPTIMIZER_PREFIX,
    MappingSettings,
    Parameter,
    RunOptions,
    parameters,
    settings_from_parameters,
)
from ..optimizers import NO_OPTIMIZER, SceneOptimizerBase

# Parameters every rclpy node has; they are ROS's, not ours to check.
ROS_NODE_PARAMETERS = frozenset({"use_sim_time", "start_type_description_service"})
QOS_OVERRIDES_PREFIX = "qos_overrides."  # rclpy's QoS overriding parameters of the published topics


def is_ros_parameter(name: str) -> bool:
    """A parameter rclpy itself declares (sim time, QoS overrides), not one of the node's settings."""
    return name in ROS_NODE_PARAMETERS or name.startswith(QOS_OVERRIDES_PREFIX)


def parameter_descriptor(parameter: Parameter) -> ParameterDescriptor:
    """The ROS descriptor of a declared parameter."""
    spec = parameter.spec
    description = spec.description + (f" [{spec.unit}]" if spec.unit else "")
    if spec.restart:
        description += " Read-only: restart the node to change it."
    descriptor = ParameterDescriptor(
        description=description, read_only=spec.restart, additional_constraints=f"allowed: {spec.allowed()}",
        dynamic_typing=not _needs_static_type(parameter),
    )
    if spec.low is not None and spec.high is not None:
        if spec.kind is float:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
        elif spec.kind is int:
            descriptor.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=int(spec.step or 0))]
    return descriptor


def _needs_static_type(parameter: Parameter) -> bool:
    """An empty list has no type of its own in ROS: declare it as a string array."""
    return parameter.spec.kind is tuple and not parameter.spec.default


def _overrides(node: Node) -> dict[str, Any]:
    # rclpy keeps the node's overrides in Node._parameter_overrides (no public accessor).
    return {name: override.value for name, override in node._parameter_overrides.items()}  # noqa: SLF001


def declare_node_parameters(node: Node) -> MappingSettings:
    """Declare every parameter on `node` (overrides applied) and return the checked settings.

    Raises UnknownKwargError for an override that is no parameter (a misspelt name, or a
    model option the model class does not have) and InvalidOptionError for a bad value,
    with the same messages as the offline tool.
    """
    overrides = {name: value for name, value in _overrides(node).items() if not is_ros_parameter(name)}
    model_type = RunOptions.create({"model_type": overrides.get("model_type", RunOptions().model_type)}).model_type
    for parameter in parameters(model_type):
        default = list(parameter.spec.default) if parameter.spec.kind is tuple else parameter.spec.default
        descriptor = parameter_descriptor(parameter)
        if _needs_static_type(parameter):
            node.declare_parameter(parameter.name, RosParameter.Type.STRING_ARRAY, descriptor)
        else:
            node.declare_parameter(parameter.name, default, descriptor)
    for name in sorted(overrides):
        if name.startswith(OPTIMIZER_PREFIX) and not node.has_parameter(name):
            node.declare_parameter(name, overrides[name], ParameterDescriptor(
                description="An option of the scene optimizer (optimizer.type).", dynamic_typing=True))
    undeclared = {name: value for name, value in overrides.items() if not node.has_parameter(name)}
    return settings_from_parameters({**parameter_values(node), **undeclared})


def parameter_values(node: Node) -> dict[str, Any]:
    """Current value of every parameter the node holds (declared or set); a string array
    declared without a value (an empty list, see `_needs_static_type`) reads as []."""
    values = {}
    for name, parameter in node.get_parameters_by_prefix("").items():
        if is_ros_parameter(name):
            continue
        unset_array = parameter.type_ == RosParameter.Type.NOT_SET and (
            node.describe_parameter(name).type == RosParameter.Type.STRING_ARRAY.value)
        values[name] = [] if unset_array else parameter.value
    return values


@dataclass
class Backend:
    """A built model and scene optimizer, and the settings they were built from."""

    model: SceneFromViewsBase
    optimizer: SceneOptimizerBase | list[SceneOptimizerBase] | None
    settings: MappingSettings

    @property
    def reconstruct_kwargs(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer if self.optimizer is not None else NO_OPTIMIZER}


def call_option_values(options: Options, model: SceneFromViewsBase) -> Mapping[str, Any]:
    """The per-call option values of `options`, as `with_call_options` takes them."""
    values = options.values()
    return {name: values[name] for name in model.call_kwargs()}


def build_backend(settings: MappingSettings, previous: Backend | None = None) -> Backend:
    """Build what `settings` describe.  When the model's construction options, type and
    device are those of `previous`, its loaded network is reused with the new per-call
    options (a threshold change does not reload a 1B-parameter network); otherwise the
    model is built (slow: run it off the callback thread).  Errors propagate."""
    if previous is not None and previous.settings.model_signature() == settings.model_signature():
        model = previous.model.with_call_options(**call_option_values(settings.model_options, previous.model))
        model.check_window(settings.mapper.window.size)
    else:
        model = settings.build_model()
    return Backend(model, settings.build_optimizer(), settings)


class BackendRebuilder:
    """Builds backends on a thread of its own so that a parameter callback never waits for a
    model to load; the newest request wins.  `on_ready(backend)` or `on_failed(settings,
    error)` is called from that thread, unless a newer request came in meanwhile."""

    def __init__(self, on_ready: Callable[[Backend], None], on_failed: Callable[[MappingSettings, Exception], None]) -> None:
        self._on_ready, self._on_failed = on_ready, on_failed
        self._condition = threading.Condition()
        self._request: MappingSettings | None = None
        self._building: MappingSettings | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sfv-model-builder", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """True while a build runs or waits."""
        return self.target is not None

    @property
    def target(self) -> tuple[Any, ...] | None:
        """The model signature that is being built or waits to be (None when idle)."""
        with self._condition:
            settings = self._request or self._building
            return None if settings is None else settings.model_signature()

    def request(self, settings: MappingSettings) -> None:
        with self._condition:
            self._request = settings
            self._condition.notify_all()

    def cancel(self) -> None:
        """Forget a waiting request (a running build still finishes and reports)."""
        with self._condition:
            self._request = None

    def close(self, timeout: float | None = 5.0) -> None:
        with self._condition:
            self._closing, self._request = True, None
            self._condition.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._request is None and not self._closing:
                    self._condition.wait()
                if self._closing:
                    return
                settings, self._request = self._request, None
                self._building = settings
            backend, failure = None, None
            try:
                backend = build_backend(settings)
            except Exception as error:  # noqa: BLE001 - any failure is reported, the old model stays
                failure = error
            with self._condition:
                superseded = self._request is not None  # then build the newer request instead
            if not superseded and backend is not None:
                self._on_ready(backend)
            elif not superseded and failure is not None:
                self._on_failed(settings, failure)
            with self._condition:
                self._building = None
