import pytest
import torch

from portrait.identity import IdentityEncoder
from portrait.identity.iresnet import IResNet


@pytest.mark.parametrize(
    ("layers", "mode", "architecture"), [(50, "ir_se", "arcface_ir_se50"), (100, "ir", "curricularface_ir101")]
)
def test_loads_facexlib_layout_checkpoints_exactly(tmp_path, layers, mode, architecture):
    from facexlib.recognition.arcface_arch import Backbone

    torch.manual_seed(0)
    reference = Backbone(layers, 0.6, mode).eval()
    torch.save(reference.state_dict(), tmp_path / "backbone.pth")
    encoder = IdentityEncoder.from_checkpoint(architecture, checkpoint=tmp_path / "backbone.pth")
    faces = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        expected = reference((faces - 0.5) / 0.5)
        actual = encoder(faces)
    torch.testing.assert_close(actual.embedding, expected, atol=1e-6, rtol=0)
    assert actual.features.shape == (2, 512)


def test_tface_variant_is_read_off_the_checkpoint(tmp_path):
    torch.manual_seed(0)
    tface = IResNet((3, 13, 30, 3), extra_bn=True, output_bn_affine=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in tface.state_dict().items()}}, tmp_path / "tface.pth")
    encoder = IdentityEncoder.from_checkpoint("curricularface_ir101", checkpoint=tmp_path / "tface.pth")
    assert encoder.config.extra_bn is True and encoder.config.output_bn_affine is False
    assert len(encoder.backbone.body[0].res_layer) == 6


@pytest.mark.parametrize(("layer", "dim"), [("stage1", 8), ("stage3", 16), ("stage4", 16), ("embedding", 32)])
def test_feature_layers(layer, dim):
    encoder = IdentityEncoder.from_preset("tiny", feature_layer=layer)
    with torch.no_grad():
        out = encoder(torch.rand(3, 3, 112, 112))
    assert encoder.feature_dim == dim and out.features.shape == (3, dim)
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(3))


def test_unknown_preset_and_layer():
    with pytest.raises(ValueError, match="Unknown identity encoder"):
        IdentityEncoder.from_preset("vgg")
    with pytest.raises(ValueError, match="feature_layer"):
        IdentityEncoder.from_preset("tiny", feature_layer="stage9")


def test_save_and_load_as_safetensors(tmp_path):
    encoder = IdentityEncoder.from_preset("tiny")
    encoder.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = IdentityEncoder.from_pretrained(tmp_path)
    faces = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(loaded(faces).features, encoder(faces).features, atol=0, rtol=0)
