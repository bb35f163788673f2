"""The interface package interfaces/scene_from_views_interfaces as generated (scripts/setup_env.sh
builds it into the venv; colcon builds it in a ROS workspace): SaveMap has exactly the fields of
its definition, every field documented, and its type support serialises it."""
from __future__ import annotations

import re
from pathlib import Path

from rclpy.serialization import deserialize_message, serialize_message
from scene_from_views_interfaces.srv import SaveMap

SRV = Path(__file__).resolve().parents[1] / "interfaces" / "scene_from_views_interfaces" / "srv" / "SaveMap.srv"


def test_save_map_has_exactly_the_documented_fields() -> None:
    assert SaveMap.Request.get_fields_and_field_types() == {"directory": "string", "formats": "sequence<string>"}
    assert SaveMap.Response.get_fields_and_field_types() == {"success": "boolean", "message": "string", "files": "sequence<string>"}
    request, response = SaveMap.Request(), SaveMap.Response()
    # The defaults mean "the node's map.output_dir" and "every default format".
    assert request.directory == "" and list(request.formats) == []
    assert response.success is False and response.message == "" and list(response.files) == []


def test_every_field_of_the_definition_has_a_comment_above_it() -> None:
    lines = SRV.read_text().splitlines()
    fields = [(number, line) for number, line in enumerate(lines) if line.strip() and not line.startswith("#") and line != "---"]
    assert [line.split()[1] for _, line in fields] == ["directory", "formats", "success", "message", "files"]
    for number, line in fields:
        assert re.fullmatch(r"# \S.*", lines[number - 1]), f"no comment right above '{line}'"


def test_type_support_round_trips_a_request_and_a_response() -> None:
    request = SaveMap.Request(directory="maps/run 1", formats=["ply", "pcd", "tum", "json"])
    assert deserialize_message(serialize_message(request), SaveMap.Request) == request
    response = SaveMap.Response(success=True, message="4 files", files=["/tmp/a.ply", "/tmp/ä.pcd"])
    assert deserialize_message(serialize_message(response), SaveMap.Response) == response
