"""adios.load_encoder / load_masker: exported weights rebuild the run's modules from the header."""

import json

import pytest
import torch
import torchvision
import yaml
from safetensors.torch import load_file, save_file

import adios
from adios.api import ModelFileError, encoder_metadata, masker_metadata, read_metadata
from adios.checkpoint import export_safetensors
from adios.cli import main
from adios.config import load_config
from adios.data.augment import normalize
from adios.data.scenes import generate_scenes
from adios.models import build_backbone, build_masker

TINY = [
    "preset=shapes-paper", "data.num_train=16", "data.num_val=8", "data.num_test=8",
    "objective.proj_hidden=32", "objective.proj_out=16", "optim.batch_size=16",
    "optim.warmup_epochs=1", "train.knn_bank=16", "train.progress=false", "train.device=cpu",
    "train.threads=1", "train.epochs=1",
]


def tiny_run(tmp_path, *args):
    run_dir = tmp_path / "run"
    assert main(["train", f"run_dir={run_dir}", *TINY, *args]) == 0
    return run_dir


def run_backbone(run_dir):
    """The backbone as the run itself holds it: rebuilt from config.yaml and checkpoint.pt."""
    cfg = load_config([], base=yaml.safe_load((run_dir / "config.yaml").read_text()))
    backbone = build_backbone(cfg.model.backbone, cfg.data.image_size, width=cfg.model.width,
                              stem=cfg.model.stem)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["objective"]
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in state.items()
                              if k.startswith("backbone.")})
    return backbone.eval(), cfg


def scene_batch(image_size, mean, std):
    images = generate_scenes(6, seed=123).images
    images = torch.nn.functional.interpolate(images.float(), size=image_size).round().byte()
    return images, normalize(images, mean, std)


@pytest.mark.parametrize("stem", ["cifar", "imagenet"])
def test_exported_width64_encoder_is_torchvision_resnet18_with_the_runs_features(tmp_path, stem):
    run_dir = tiny_run(tmp_path, "model.width=64", f"model.stem={stem}", "masking.mode=none",
                       "optim.batch_size=8", "data.num_train=8", "train.knn_bank=8")
    encoder = adios.load_encoder(run_dir)
    assert type(encoder) is torchvision.models.ResNet
    assert isinstance(encoder.maxpool, torch.nn.Identity) == (stem == "cifar")
    assert encoder.conv1.kernel_size == ((3, 3) if stem == "cifar" else (7, 7))
    meta = encoder.adios_metadata
    assert (meta["stem"], meta["width"], meta["image_size"], meta["out_dim"]) == (stem, 64, 32, 512)
    backbone, cfg = run_backbone(run_dir)
    assert meta["mean"] == list(cfg.data.mean) and meta["std"] == list(cfg.data.std)
    images, x = scene_batch(32, cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        expected = backbone(x)
        got = encoder(adios.preprocess(encoder, images))
    assert got.shape == (6, 512)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the untrained encoder would not pass: the comparison sees the training
    untrained = build_backbone("resnet18", 32, width=64, stem=stem).eval()
    with torch.no_grad():
        assert not torch.allclose(untrained(x), expected, atol=1e-3)


def test_narrow_encoder_and_masker_load_from_the_file_alone(tmp_path):
    run_dir = tiny_run(tmp_path, "model.width=4", "masker.fbase=8", "masker.n_masks=3")
    encoder = adios.load_encoder(run_dir / "encoder.safetensors")
    backbone, cfg = run_backbone(run_dir)
    images, x = scene_batch(32, cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), backbone(x), rtol=1e-5, atol=1e-5)
    masker = adios.load_masker(run_dir / "masker.safetensors")
    assert (masker.adios_metadata["n_masks"], masker.adios_metadata["fbase"]) == (3, 8)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["masker"]
    for key, value in masker.state_dict().items():
        assert torch.equal(value, state[key]), key
    masks = masker(x)
    assert masks.shape == (6, 3, 32, 32)
    torch.testing.assert_close(masks.sum(1), torch.ones(6, 32, 32))


def test_metadata_round_trips_through_the_safetensors_header(tmp_path):
    cfg = load_config(["preset=stl10-simclr-adios", "model.width=8", "model.stem=auto"])
    backbone = build_backbone("resnet18", cfg.data.image_size, width=8, stem=cfg.model.stem)
    path = tmp_path / "encoder.safetensors"
    header = encoder_metadata(cfg, backbone)
    assert all(isinstance(v, str) for v in header.values())  # what safetensors accepts
    export_safetensors(backbone.state_dict(), path, metadata=header)
    meta = read_metadata(path)
    assert meta == {key: json.loads(value) for key, value in header.items()}
    assert meta["stem"] == "imagenet"  # auto at 96 px, recorded as what it resolved to
    assert meta["image_size"] == 96 and meta["preset"] == "stl10-simclr-adios"
    assert tuple(meta["mean"]) == tuple(cfg.data.mean) and meta["adios_version"] == "0.1.0"
    masker_header = masker_metadata(cfg)
    assert json.loads(masker_header["n_masks"]) == cfg.masker.n_masks
    assert json.loads(masker_header["kind"]) == "masker"
    with pytest.raises(ModelFileError, match="holds a 'encoder', not an masker"):
        adios.load_masker(path)


def test_vit_encoder_loads_from_its_header(tmp_path):
    cfg = load_config(["model.backbone=vit_tiny", "data.image_size=32"])
    torch.manual_seed(0)
    backbone = build_backbone("vit_tiny", 32).eval()
    path = tmp_path / "vit.safetensors"
    export_safetensors(backbone.state_dict(), path, metadata=encoder_metadata(cfg, backbone))
    encoder = adios.load_encoder(path)
    assert encoder.adios_metadata["patch_size"] == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), backbone(x))


def test_file_without_metadata_needs_its_run_dir(tmp_path):
    run_dir = tiny_run(tmp_path, "model.width=4", "masking.mode=none")
    path = run_dir / "encoder.safetensors"
    save_file(load_file(path), str(path))  # as exported before the header existed
    assert read_metadata(path) == {}
    with pytest.raises(ModelFileError, match="carries no adios metadata.*run directory"):
        adios.load_encoder(path)
    encoder = adios.load_encoder(run_dir)  # config.yaml describes it
    assert encoder.adios_metadata["width"] == 4 and encoder.adios_metadata["adios_version"] is None
    backbone, cfg = run_backbone(run_dir)
    _, x = scene_batch(32, cfg.data.mean, cfg.data.std)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), backbone(x))
    with pytest.raises(ModelFileError, match="no such file.*trained no masker"):
        adios.load_masker(run_dir)


def test_token_masker_loads_from_its_header(tmp_path):
    cfg = load_config(["model.backbone=vit_tiny", "masking.mode=token-adios",
                       "masker.token_dim=32"])

    torch.manual_seed(0)
    masker = build_masker(cfg).eval()
    path = tmp_path / "masker.safetensors"
    export_safetensors(masker.state_dict(), path, metadata=masker_metadata(cfg))
    loaded = adios.load_masker(path)
    assert type(loaded) is type(masker) and loaded.adios_metadata["mode"] == "token-adios"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), masker(x))


def _small_encoder_file(tmp_path, **header_changes):
    """A width-4 encoder file whose header is changed as given (the weights are not)."""
    cfg = load_config(["model.width=4"])
    backbone = build_backbone("resnet18", 32, width=4, stem="cifar")
    header = encoder_metadata(cfg, backbone)
    header.update({key: json.dumps(value) for key, value in header_changes.items()})
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in backbone.state_dict().items()}, str(path),
              metadata=header)
    return path, backbone.state_dict()


def test_29_4_load_encoder_refuses_non_finite_or_integer_weights(tmp_path):
    path, state = _small_encoder_file(tmp_path)
    meta = read_metadata(path)
    key = next(k for k, v in state.items() if v.is_floating_point())
    for value, match in ((state[key].clone().fill_(float("nan")), "non-finite"),
                         (state[key].to(torch.int8), "is torch.int8, not torch.float32")):
        save_file({**state, key: value}, str(path),
                  metadata={k: json.dumps(v) for k, v in meta.items()})
        with pytest.raises(ModelFileError, match=match):
            adios.load_encoder(path)


@pytest.mark.parametrize("header", [
    {"width": 4096},  # would allocate 1.2 GB before looking at the weights
    {"backbone": "vit_tiny", "image_size": 100000, "patch_size": 16},  # 60 GB
    {"backbone": "no_such_net"}, {"width": "wide"},
])
def test_29_10_a_header_that_lies_is_one_error_before_any_allocation(tmp_path, header):
    path, _ = _small_encoder_file(tmp_path, **header)
    torch.manual_seed(0)
    with pytest.raises(ModelFileError, match=str(path)):
        adios.load_encoder(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        adios.load_encoder(path)


def test_metadata_holds_no_path_and_the_masker_still_loads(tmp_path):
    """Shared weights carry nothing about where they were trained (data path, run directory)."""
    data = tmp_path / "private" / "images"
    cfg = load_config(["data.name=folder", f"data.path={data}", f"run_dir={tmp_path / 'run'}",
                       "data.mean=[0.4, 0.4, 0.4]", "data.std=[0.2, 0.2, 0.2]",
                       "model.width=4", "masker.fbase=8"])
    backbone = build_backbone("resnet18", 32, width=4)
    masker = build_masker(cfg)
    export_safetensors(backbone.state_dict(), tmp_path / "e.safetensors",
                       metadata=encoder_metadata(cfg, backbone))
    export_safetensors(masker.state_dict(), tmp_path / "m.safetensors",
                       metadata=masker_metadata(cfg))
    for name in ("e.safetensors", "m.safetensors"):
        header = json.dumps(read_metadata(tmp_path / name))
        assert str(tmp_path) not in header and "private" not in header, name
    assert "config" not in read_metadata(tmp_path / "e.safetensors")
    loaded = adios.load_masker(tmp_path / "m.safetensors")
    assert loaded.adios_metadata["mean"] == [0.4, 0.4, 0.4]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), masker.eval()(x))


def test_preprocess_fits_any_size_and_names_channels_first():
    encoder = build_backbone("resnet18", 32, width=4)
    encoder.adios_metadata = {"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3}
    images = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8)
    assert adios.preprocess(encoder, images).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"channels first \(B, 3, H, W\).*permute\(0, 3, 1, 2\)"):
        adios.preprocess(encoder, images.permute(0, 2, 3, 1))
