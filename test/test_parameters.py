"""The option declarations: consistent, checked where given, and the one source of the
parameter files and README tables."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from scene_from_views_ros import InvalidOptionError, UnknownKwargError, implemented_types, model_class, scene_from_views_factory
from scene_from_views_ros.cli.parameter_docs import expected_files
from scene_from_views_ros.core.options import Options, option
from scene_from_views_ros.mapping.settings import (
    FIXED_PARAMETERS,
    PARAMETER_GROUPS,
    SettingsError,
    default_parameters,
    load_parameter_file,
    parameters,
    settings_from_parameters,
)
from scene_from_views_ros.models import vggt as vggt_module

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL_OPTION_CLASSES = [*PARAMETER_GROUPS, *(model_class(t).options_class for t in implemented_types())]
_KIND_OF_ANNOTATION = {"bool": bool, "int": int, "float": float, "str": str, "tuple": tuple}


@pytest.mark.parametrize("cls", ALL_OPTION_CLASSES, ids=lambda cls: cls.__name__)
def test_each_declaration_is_consistent(cls: type[Options]) -> None:
    hints = typing.get_type_hints(cls)
    for spec in cls.specs():
        assert _KIND_OF_ANNOTATION[hints[spec.name].__name__] is spec.kind, spec.name
        assert spec.description.strip().endswith((".", ")")), spec.name
        assert spec.check(spec.default, spec.name) == spec.default, spec.name  # the default is allowed
        if spec.kind in (int, float):
            assert spec.low is not None and spec.high is not None and spec.low <= spec.default <= spec.high, spec.name
        if spec.choices is not None:
            assert spec.default in spec.choices and spec.kind is str, spec.name
    assert cls() == cls.create({})  # every option has a default


def test_parameter_names_are_unique_and_every_model_adds_its_own() -> None:
    for model_type in implemented_types():
        names = [p.name for p in parameters(model_type)]
        assert len(names) == len(set(names))
        model_names = {name for name in names if name.startswith("model.")}
        cls = model_class(model_type)
        assert model_names == {f"model.{name}" for name in cls.options_class.names(exposed=True)}
        assert "model.checkpoint" in model_names  # every model declares its weights
    assert set(FIXED_PARAMETERS) == {name for name in default_parameters() if not name.startswith("model.")}


@dataclasses.dataclass(frozen=True)
class Example(Options):
    prefix: typing.ClassVar[str] = "example."
    ratio: float = option(0.5, "A ratio.", low=0.0, high=1.0)
    size: int = option(28, "A size.", unit="pixels", low=14, high=140, step=14)
    mode: str = option("crop", "A mode.", choices=("crop", "pad"))
    flag: bool = option(False, "A flag.")
    name: str = option("x", "A name.", nonempty=True)
    topics: tuple = option(("/a",), "Topics.", nonempty=True)


@pytest.mark.parametrize(("changes", "message"), [
    ({"ratio": 1.5}, "example.ratio=1.5 is not allowed: expected a number in [0, 1]"),
    ({"ratio": "0.5"}, "example.ratio='0.5' is not allowed: expected a number in [0, 1]"),
    ({"ratio": float("nan")}, "example.ratio=nan is not allowed"),
    ({"ratio": True}, "example.ratio=True is not allowed"),
    ({"size": 29}, "example.size=29 is not allowed: expected an integer in [14, 140], a multiple of 14 (pixels)"),
    ({"size": 28.0}, "example.size=28.0 is not allowed: expected an integer"),
    ({"mode": "square"}, "example.mode='square' is not allowed: expected one of crop, pad"),
    ({"flag": 1}, "example.flag=1 is not allowed: expected true or false"),
    ({"name": ""}, "example.name='' is not allowed: expected a non-empty string"),
    ({"topics": []}, "example.topics=[] is not allowed: expected a non-empty list of non-empty strings"),
    ({"topics": ["/a", ""]}, "is not allowed: expected a non-empty list of non-empty strings"),
    ({"topics": "/a"}, "example.topics='/a' is not allowed"),
])
def test_bad_values_are_refused_naming_option_value_and_what_is_allowed(changes: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        Example.create(changes)
    assert message in str(caught.value)


def test_values_are_converted_to_the_declared_kind() -> None:
    example = Example.create({"ratio": 1, "mode": "PAD", "topics": ["/b", "/c"]})
    assert example.ratio == 1.0 and isinstance(example.ratio, float)
    assert example.mode == "pad" and example.topics == ("/b", "/c")
    assert example.changed(size=42).size == 42 and example.size == 28
    with pytest.raises(UnknownKwargError, match=r"unknown option example\.sise \(did you mean example\.size\?\)"):
        example.changed(sise=42)
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.size = 42  # type: ignore[misc]


def test_the_factory_checks_options_before_anything_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vggt_module, "resolve_checkpoint", lambda *a, **k: pytest.fail("weights were looked up"))
    with pytest.raises(InvalidOptionError, match=r"model\.conf_thres=150 is not allowed"):
        scene_from_views_factory("vggt", device="cpu", conf_thres=150)
    with pytest.raises(UnknownKwargError, match=r"model\.not_an_option"):
        scene_from_views_factory("vggt_robust", device="cpu", not_an_option=1)
    with pytest.raises(InvalidOptionError, match=r"model\.rej_thresh=-1 is not allowed"):
        scene_from_views_factory("vggt_robust", device="cpu", rej_thresh=-1)


def test_generated_parameter_files_and_readme_tables_are_current() -> None:
    """config/*.yaml and the README tables are made from the declarations (python -m
    scene_from_views_ros.cli.parameter_docs --write); they must not drift."""
    for path, text in expected_files(REPO_ROOT).items():
        assert path.read_text() == text, f"{path} is stale: run python -m scene_from_views_ros.cli.parameter_docs --write"


@pytest.mark.parametrize("model_type", [t.value for t in implemented_types()])
def test_shipped_files_hold_the_declared_defaults(model_type: str) -> None:
    shared = load_parameter_file(REPO_ROOT / "config" / "scene_from_views.yaml")
    own = load_parameter_file(REPO_ROOT / "config" / "models" / f"{model_type}.yaml")
    values = {**shared, **own}
    defaults = default_parameters(model_type)
    assert values.keys() == defaults.keys()
    for name, default in defaults.items():
        assert values[name] == default and type(values[name]) is type(default), name
    settings = settings_from_parameters(values)
    assert settings.model_options == model_class(model_type).options_class()


NODE_YAML = """\
/**:
  ros__parameters:
    device: cpu
    window.size: 5
scene_from_views:
  ros__parameters:
    model_type: vggt
    image_topics: ["/camera/image_raw"]
    map_frame: world
    model:
      target_size: 140
      conf_thres: 20
    keyframe:
      min_change: 0.1
      min_interval_s: 1
    window.overlap: 3
    map:
      voxel_size: 0.05
      output_dir: /tmp/maps
other_node:
  ros__parameters:
    window.size: 99
"""


def test_parameter_file_in_the_node_format(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(NODE_YAML)
    params = load_parameter_file(path)
    assert params["window.size"] == 5 and params["window.overlap"] == 3
    settings = settings_from_parameters(params)
    assert settings.device == "cpu" and settings.model_type.value == "vggt"
    assert (settings.model_options.target_size, settings.model_options.conf_thres) == (140, 20.0)
    assert settings.optimizer.type == "auto" and settings.optimizer_type == "none" and settings.build_optimizer() is None
    dust3r = settings_from_parameters({"model_type": "dust3r"})
    assert dust3r.optimizer_type == "dense_scene_optimizer" and dust3r.build_optimizer().name == "dense_scene_optimizer"
    assert settings_from_parameters({"model_type": "mast3r"}).optimizer_type == "sparse_scene_optimizer"
    assert settings_from_parameters({"model_type": "dust3r", "optimizer.type": "none"}).build_optimizer() is None
    assert settings.mapper.window.size == 5 and settings.mapper.window.overlap == 3
    assert settings.mapper.keyframe.min_interval_s == 1.0 and isinstance(settings.mapper.keyframe.min_interval_s, float)
    assert settings.mapper.map.voxel_size == 0.05 and settings.output_dir == "/tmp/maps"
    assert settings.mapper.chain.metric is False  # VGGT is not metric
    assert settings.frames.map_frame == "world" and settings.frames.camera_frame == "sfv_camera"
    assert settings.node_only_given() == ["image_topics"]
    assert load_parameter_file(path, "other_node")["window.size"] == 99


def test_optimizer_then_chains_optimizers_and_routes_their_options() -> None:
    """MASt3R's use_tsdf as parameters: the sparse optimizer, then TSDF refinement; a shared
    option (subsample) reaches both, the others only the optimizer that declares them."""
    settings = settings_from_parameters({
        "model_type": "mast3r", "optimizer.then": ["tsdf_refinement"], "optimizer.TSDF_thresh": 0.02,
        "optimizer.subsample": 4, "optimizer.niter1": 50,
    })
    assert settings.optimizer_types == ["sparse_scene_optimizer", "tsdf_refinement"]
    sparse, tsdf = settings.build_optimizer()
    assert (sparse.name, sparse.options.subsample, sparse.options.niter1) == ("sparse_scene_optimizer", 4, 50)
    assert (tsdf.name, tsdf.options.subsample, tsdf.options.TSDF_thresh) == ("tsdf_refinement", 4, 0.02)
    after_vggt = settings_from_parameters({"optimizer.then": ["tsdf_refinement"], "optimizer.TSDF_thresh": 0.1}).build_optimizer()
    assert after_vggt.name == "tsdf_refinement" and after_vggt.options.TSDF_thresh == 0.1
    with pytest.raises(InvalidOptionError, match=r"optimizer.then.*'tsdf' is no optimizer.*tsdf_refinement"):
        settings_from_parameters({"optimizer.then": ["tsdf"]})
    with pytest.raises(UnknownKwargError, match=r"optimizer.niter1"):
        settings_from_parameters({"optimizer.then": ["tsdf_refinement"], "optimizer.niter1": 5})
    with pytest.raises(InvalidOptionError, match=r"optimizer.TSDF_thresh=-1"):
        settings_from_parameters({"model_type": "mast3r", "optimizer.then": ["tsdf_refinement"], "optimizer.TSDF_thresh": -1.0})
    with pytest.raises(InvalidOptionError, match="matches local descriptors"):
        settings_from_parameters({"optimizer.type": "none", "optimizer.then": ["sparse_scene_optimizer"]})


def test_parameter_file_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read parameter file"):
        load_parameter_file(tmp_path / "missing.yaml")
    other = tmp_path / "other.yaml"
    other.write_text("talker:\n  ros__parameters:\n    a: 1\n")
    with pytest.raises(SettingsError, match=r"no section for node 'scene_from_views' \(sections with ros__parameters: talker\)"):
        load_parameter_file(other)
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_parameter_file(broken)


def test_settings_refuse_what_the_declarations_refuse() -> None:
    with pytest.raises(UnknownKwargError, match=r"unknown parameter window\.window_size"):
        settings_from_parameters({"window.window_size": 4})
    with pytest.raises(UnknownKwargError, match=r"unknown parameter map\.voxel \(did you mean map\.voxel_size\?\)"):
        settings_from_parameters({"map.voxel": 4})
    with pytest.raises(InvalidOptionError, match=r"window\.overlap=3 is not allowed with window\.size=3"):
        settings_from_parameters({"window.size": 3, "window.overlap": 3})
    with pytest.raises(InvalidOptionError, match=r"camera_frame='cam' is not allowed: it must differ from map_frame"):
        settings_from_parameters({"map_frame": "cam", "camera_frame": "cam"})
    with pytest.raises(InvalidOptionError, match=r"odom_frame='map' is not allowed: it must differ from map_frame"):
        settings_from_parameters({"odom_frame": "map"})
    with pytest.raises(InvalidOptionError, match=r"camera_info_topics=\['/a', '/b'\] is not allowed: at most one per image topic"):
        settings_from_parameters({"camera_info_topics": ["/a", "/b"]})
    with pytest.raises(UnknownKwargError, match=r"model\.build_track_head.*valid"):  # a Python-API-only option
        settings_from_parameters({"model.build_track_head": True})
    assert settings_from_parameters({"window.size": 6, "chain.metric": True}).mapper.window.size == 6
