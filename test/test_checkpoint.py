"""Checkpoint resolution (file, folder, hub cache, offline) and strict loading."""
from __future__ import annotations

import argparse
import hashlib

import pytest
import torch
from safetensors.torch import save_file

from scene_from_views_ros.core.checkpoint import (
    build_network,
    check_checkpoint_reference,
    load_checkpoint_into,
    load_state_dict,
    resolve_checkpoint,
    safetensors_index,
)
from scene_from_views_ros.core.errors import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
)


def make_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """An HF cache under tmp_path, used offline as a robot without internet would."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf_home" / "hub"


def populate_hub_cache(hub_dir, repo_id, filename, payload_path) -> None:
    """Lay a file out exactly as huggingface_hub's cache does (blobs, refs, snapshots)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = hub_dir / f"models--{repo_id.replace('/', '--')}"
    data = payload_path.read_bytes()
    blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    snapshot = repo_dir / "snapshots" / commit
    (snapshot / filename).parent.mkdir(parents=True)
    (snapshot / filename).symlink_to(blob)


def test_local_safetensors_file(tmp_path):
    source = make_net(1)
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    target = make_net(2)
    assert load_checkpoint_into(target, path) == path
    assert_same_weights(source, target)


def test_local_pth_with_pickled_argparse_loads_safely(tmp_path):
    source = make_net(1)
    path = tmp_path / "checkpoint.pth"
    torch.save({"args": argparse.Namespace(model="Tiny()", lr=1e-4), "model": source.state_dict()}, path)
    target = make_net(2)
    load_checkpoint_into(target, path)
    assert_same_weights(source, target)


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": make_net().state_dict(), "payload": hashlib.sha256}, path)
    with pytest.raises(CheckpointCorruptError, match="cannot read checkpoint"):
        load_state_dict(path)


def test_local_folder_picks_preferred_file(tmp_path):
    source = make_net(3)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    torch.save(make_net(4).state_dict(), tmp_path / "other.pt")
    assert resolve_checkpoint(tmp_path, ("model.safetensors", "model.pt")) == tmp_path / "model.safetensors"
    with pytest.raises(CheckpointNotFoundError, match="several weight files"):
        resolve_checkpoint(tmp_path, ("weights.bin",))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointNotFoundError, match="holds no weight file"):
        resolve_checkpoint(empty)


def test_repo_id_from_prepopulated_offline_cache(offline_hub, tmp_path):
    source = make_net(5)
    payload = tmp_path / "payload.safetensors"
    save_file(source.state_dict(), str(payload))
    populate_hub_cache(offline_hub, "acme/tiny-net", "model.safetensors", payload)
    target = make_net(6)
    used = load_checkpoint_into(target, "acme/tiny-net")
    assert used.name == "model.safetensors" and str(offline_hub) in str(used)
    assert_same_weights(source, target)


def test_repo_id_second_filename_from_cache(offline_hub, tmp_path):
    payload = tmp_path / "payload.pt"
    torch.save(make_net(7).state_dict(), payload)
    populate_hub_cache(offline_hub, "acme/pt-only", "model.pt", payload)
    assert resolve_checkpoint("acme/pt-only", ("model.safetensors", "model.pt")).name == "model.pt"


def test_one_file_of_a_repo_with_several(offline_hub, tmp_path):
    payload = tmp_path / "payload.pth"
    torch.save(make_net(8).state_dict(), payload)
    populate_hub_cache(offline_hub, "acme/several", "checkpoints/second.pth", payload)
    used = resolve_checkpoint("acme/several/checkpoints/second.pth", ("first.pth",))
    assert used.name == "second.pth" and used.parent.name == "checkpoints" and str(offline_hub) in str(used)
    with pytest.raises(CheckpointNotFoundError, match="'acme/several'.*no cached copy of checkpoints/third.pth"):
        resolve_checkpoint("acme/several/checkpoints/third.pth")
    check_checkpoint_reference("acme/several/checkpoints/third.pth")  # a hub file is checked when used
    with pytest.raises(CheckpointNotFoundError, match="neither an existing file"):
        check_checkpoint_reference("./checkpoints/missing.pth")


def test_offline_miss_names_repo_and_local_path_fix(offline_hub):
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve_checkpoint("facebook/VGGT-1B")
    message = str(caught.value)
    assert "'facebook/VGGT-1B'" in message and "HF_HUB_OFFLINE" in message
    assert "local file or folder" in message and str(offline_hub) in message


def test_unreachable_hub_fails_fast_with_the_fix(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    started = time.monotonic()
    with pytest.raises(CheckpointNotFoundError, match="'acme/net': the hub is unreachable.*local file or folder"):
        resolve_checkpoint("acme/net")
    assert time.monotonic() - started < 5.0


def test_nonexistent_local_path(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="neither an existing file"):
        resolve_checkpoint(str(tmp_path / "missing.safetensors"))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth"])
def test_corrupt_files_are_named(tmp_path, suffix):
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointCorruptError, match=f"broken{suffix}.*corrupt"):
        load_checkpoint_into(make_net(), path)


def test_truncated_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(make_net().state_dict(), str(path))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(CheckpointCorruptError):
        load_state_dict(path)


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    state = make_net().state_dict()
    state["2.weight"] = torch.zeros(3, 8)  # mis-shaped
    del state["0.bias"]  # missing
    state["extra.head"] = torch.zeros(1)  # unexpected
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    target = make_net(9)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as caught:
        load_checkpoint_into(target, path)
    message = str(caught.value)
    assert "missing keys: 0.bias" in message
    assert "unexpected keys: extra.head" in message
    assert "2.weight (checkpoint (3, 8) vs model (2, 8))" in message
    assert "another model" in message
    for name, value in target.state_dict().items():  # nothing half-loaded
        assert torch.equal(value, before[name])


def test_dropped_prefixes_are_skipped_knowingly(tmp_path, caplog):
    state = make_net(1).state_dict()
    state["track_head.w"] = torch.ones(2)
    path = tmp_path / "with_track.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointMismatchError, match="track_head.w"):
        load_checkpoint_into(make_net(), path)
    with caplog.at_level("INFO", logger="scene_from_views_ros.core.checkpoint"):
        load_checkpoint_into(make_net(), path, drop_prefixes=("track_head.",))
        build_network(make_net, path, drop_prefixes=("track_head.",))
    dropped = [r.getMessage() for r in caplog.records if "dropped (not built)" in r.getMessage()]
    assert len(dropped) == 2 and all("1 keys under track_head." in message for message in dropped)


def test_non_state_dict_pickle(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointCorruptError, match="does not contain a state dict"):
        load_state_dict(path)


# ---------------------------------------------------------------- reading and building
def test_our_safetensors_reader_equals_the_library_for_every_dtype(tmp_path):
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(0)
    state = {
        "f32": torch.randn(3, 5, generator=generator),
        "f16": torch.randn(7, generator=generator).half(),
        "bf16": torch.randn(2, 3, generator=generator).bfloat16(),
        "f64": torch.randn(4, generator=generator).double(),
        "i64": torch.arange(-3, 9),
        "i32": torch.arange(5, dtype=torch.int32),
        "u8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
    }
    path = tmp_path / "all.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    ours, reference = load_state_dict(path), load_file(str(path))
    assert set(ours) == set(reference) == set(state)
    for name, tensor in reference.items():
        assert ours[name].dtype == tensor.dtype and ours[name].shape == tensor.shape, name
        assert torch.equal(ours[name], tensor), name
    only = load_state_dict(path, select=lambda key: key.startswith("f"))
    assert set(only) == {"f32", "f16", "f64"}


def test_a_file_cut_short_or_with_a_bad_header_is_corrupt(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(1000)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-1000])
    with pytest.raises(CheckpointCorruptError, match="tensor 'a' needs bytes"):
        safetensors_index(path)
    path.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    with pytest.raises(CheckpointCorruptError, match="no valid safetensors header"):
        safetensors_index(path)


def test_build_network_allocates_only_the_checkpoints_tensors(tmp_path, monkeypatch):
    """The network is constructed on the meta device (nothing initialised), the file is
    checked against it from its header, only the kept keys are read, and the tensors read
    become the parameters themselves (no copy); fp16 weights become the network's fp32."""
    from scene_from_views_ros.core import checkpoint

    source = make_net(3)
    state = {k: v.half() for k, v in source.state_dict().items()}
    state["track_head.w"] = torch.ones(2)
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    constructed_on_meta, requested, read = [], [], {}
    original_read = checkpoint.read_safetensors

    def spy_read(path, entries, device="cpu"):
        requested.extend(entries)
        read.update(original_read(path, entries, device))
        return read

    monkeypatch.setattr(checkpoint, "read_safetensors", spy_read)

    def build() -> torch.nn.Module:
        net = make_net(0)
        constructed_on_meta.append(all(p.is_meta for p in net.parameters()))
        return net

    net = build_network(build, path, "cpu", drop_prefixes=("track_head.",))
    assert constructed_on_meta == [True]
    assert sorted(requested) == sorted(source.state_dict())  # the dropped key was never read
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    for name, value in source.state_dict().items():
        assert net.state_dict()[name].dtype == torch.float32
        assert torch.equal(net.state_dict()[name], value.half().float()), name
    # The fp32 copies replaced the fp16 tensors read; a float32 file is used in place:
    save_file(source.state_dict(), str(path))
    read.clear()
    net = build_network(lambda: make_net(0), path, "cpu")
    assert {name: p.data_ptr() for name, p in net.named_parameters()} == {name: t.data_ptr() for name, t in read.items()}


def test_build_network_refuses_a_mismatch_before_reading_any_tensor(tmp_path, monkeypatch):
    from scene_from_views_ros.core import checkpoint

    state = make_net().state_dict()
    state["2.weight"] = torch.zeros(3, 8)
    path = tmp_path / "wrong.safetensors"
    save_file(state, str(path))
    monkeypatch.setattr(checkpoint, "read_safetensors", lambda *args, **kwargs: pytest.fail("tensors were read"))
    with pytest.raises(CheckpointMismatchError, match=r"2\.weight \(checkpoint \(3, 8\) vs model \(2, 8\)\)"):
        build_network(lambda: make_net(0), path)


def test_build_network_from_an_official_style_pth(tmp_path):
    source = make_net(5)
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": source.state_dict(), "args": argparse.Namespace(model="Net()")}, path)
    net = build_network(lambda: make_net(0), path)
    assert_same_weights(net, source)


def test_every_module_tensor_must_come_from_the_checkpoint(tmp_path):
    class WithBuffer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.register_buffer("constant", torch.ones(2), persistent=False)

    path = tmp_path / "model.safetensors"
    save_file(WithBuffer().state_dict(), str(path))
    with pytest.raises(RuntimeError, match="constant"):
        build_network(WithBuffer, path)
