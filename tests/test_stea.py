import math

import torch

from portrait.stea import NO_IDENTITY, STEA


def small_stea(**overrides) -> STEA:
    return STEA(text_dim=6, identity_dim=4, hidden_dim=5, **overrides)


def gelu(x: float) -> float:
    return x * 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_untrained_stea_is_exactly_plain_text():
    stea = small_stea()
    text = torch.randn(2, 7, 6)
    out = stea(text, torch.tensor([3, 1]), torch.randn(2, 4))
    assert torch.equal(out, text) and not stea.is_trained


def test_trained_stea_changes_only_the_identity_token():
    torch.manual_seed(0)
    stea = small_stea()
    stea.fc2.reset_parameters()
    text = torch.randn(2, 7, 6)
    out = stea(text, torch.tensor([3, 1]), torch.randn(2, 4))
    changed = (out != text).any(dim=-1)
    assert changed.tolist() == [[i == 3 for i in range(7)], [i == 1 for i in range(7)]] and stea.is_trained


def test_different_faces_give_different_rows_and_no_identity_keeps_text():
    torch.manual_seed(0)
    stea = small_stea()
    stea.fc2.reset_parameters()
    text = torch.randn(1, 7, 6).expand(3, 7, 6)
    out = stea(text, torch.tensor([2, 2, NO_IDENTITY]), torch.randn(3, 4))
    assert not torch.allclose(out[0, 2], out[1, 2])
    assert torch.equal(out[2], text[2])


def test_equation_4_by_hand():
    """c = ψ + W2·GELU(W1·LN([ψ ‖ φ]) + b1) + b2 with numbers small enough to follow on paper."""
    stea = STEA(text_dim=2, identity_dim=1, hidden_dim=2)
    with torch.no_grad():
        stea.fc1.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        stea.fc1.bias.zero_()
        stea.fc2.weight.copy_(torch.eye(2))
        stea.fc2.bias.copy_(torch.tensor([0.5, 0.0]))
    psi, phi = [1.0, 3.0], [2.0]
    # LayerNorm([1, 3, 2]): mean 2, variance 2/3 → [-a, a, 0] with a = 1/sqrt(2/3 + 1e-5)
    a = 1 / math.sqrt(2 / 3 + 1e-5)
    expected = torch.tensor([1.0 + gelu(-a) + 0.5, 3.0 + gelu(a)])
    out = stea(torch.tensor([[psi, [9.0, 9.0]]]), torch.tensor([0]), torch.tensor([phi]))
    torch.testing.assert_close(out[0, 0], expected, atol=1e-6, rtol=0)
    assert torch.equal(out[0, 1], torch.tensor([9.0, 9.0]))


def test_gradient_reaches_the_mlp_and_the_text():
    stea = small_stea()
    text = torch.randn(2, 7, 6, requires_grad=True)
    stea(text, torch.tensor([3, NO_IDENTITY]), torch.randn(2, 4)).sum().backward()
    assert stea.fc2.weight.grad.abs().sum() > 0 and text.grad is not None


def test_config_describes_the_weights(tmp_path):
    stea = small_stea(fusion_encoder="arcface_ir_se50", feature_layer="embedding", identity_words=("person",))
    stea.save_pretrained(tmp_path)
    loaded = STEA.from_pretrained(tmp_path)
    assert loaded.config.fusion_encoder == "arcface_ir_se50" and loaded.config.feature_layer == "embedding"
    assert list(loaded.config.identity_words) == ["person"] and len(loaded.config.emotion_words) == 11
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
