"""Each training equation on numbers that can be checked by hand."""

import math

import torch
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from portrait.presets import SD15_SCHEDULE
from train.attention import AttentionStore, CrossAttentionCapture, kept_token_probabilities
from train.losses import decoded_face_embedding, identity_loss, localization_loss, noise_loss, one_step_reverse


def blocks(values, size=4):
    """A (1, 1, size, size) map made of 2×2 blocks from a 2×2 list, for area resizing to 2×2."""
    return (
        torch.tensor(values, dtype=torch.float32)
        .repeat_interleave(size // 2, 0)
        .repeat_interleave(size // 2, 1)[None, None]
    )


def test_localization_loss_by_hand():
    mask = blocks([[1, 1], [0, 0]])  # face on the top row of a 2×2 layer
    identity = torch.tensor([0.9, 0.5, 0.1, 0.0])  # above β, below β, outside, outside
    expression = torch.tensor([0.05, 0.2, 0.3, 0.0])  # below γ, above γ, outside, outside
    maps = {"layer": torch.stack([identity, expression], dim=-1)[None]}
    loss = localization_loss(maps, mask, {"layer": (2, 2)}, beta=0.8, gamma=0.1, lam=0.001, mu=0.01)
    # identity: outside (0.1 + 0) / 4 = 0.025; inside relu(0.8 − [0.9, 0.5]) = [0, 0.3] → 0.3 / 4 = 0.075
    # expression: outside 0.3 / 4 = 0.075; inside relu(0.1 − [0.05, 0.2]) = [0.05, 0] → 0.0125
    expected = 0.001 * (0.025 + 0.075) + 0.01 * (0.075 + 0.0125)
    assert math.isclose(loss.item(), expected, rel_tol=1e-6)


def test_localization_loss_is_zero_at_beta_inside_and_nothing_outside():
    mask = blocks([[1, 0], [1, 0]])
    identity = 0.8 * mask[0, 0, ::2, ::2].flatten()
    maps = {
        "a": torch.stack([identity, torch.zeros(4)], -1)[None],
        "b": torch.stack([identity, torch.zeros(4)], -1)[None],
    }
    assert localization_loss(maps, mask, {"a": (2, 2), "b": (2, 2)}, 0.8, 0.1, 0.001, 0.01).item() == 0.0


def test_expression_term_only_for_samples_with_an_emotion_word():
    mask = blocks([[1, 1], [0, 0]]).repeat(2, 1, 1, 1)
    identity = torch.tensor([0.8, 0.8, 0.0, 0.0])
    with_word = torch.stack([identity, torch.tensor([0.0, 0.0, 0.4, 0.0])], -1)
    without_word = torch.stack([identity, torch.zeros(4)], -1)
    loss = localization_loss({"l": torch.stack([with_word, without_word])}, mask, {"l": (2, 2)}, 0.8, 0.1, 0.001, 0.01)
    # expression, first sample only: outside 0.4 / 4 = 0.1; inside relu(0.1 − 0) · 2 / 4 = 0.05
    assert math.isclose(loss.item(), 0.01 * (0.1 + 0.05), rel_tol=1e-6)


def test_noise_loss_with_and_without_the_face_mask():
    prediction = torch.zeros(2, 1, 2, 2)
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).expand(2, 1, 2, 2)
    mask = blocks([[1, 0], [0, 0]]).repeat(2, 1, 1, 1)
    loss = noise_loss(prediction, target, mask, torch.tensor([True, False]))
    # masked sample: only the top-left error 1² = 1; plain sample: (1 + 4 + 9 + 16) / 4 = 7.5
    assert loss.item() == (1.0 + 7.5) / 2


def test_one_step_reverse_recovers_z0_exactly():
    scheduler = DDPMScheduler(
        **{
            k: v
            for k, v in SD15_SCHEDULE.items()
            if k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")
        }
    )
    z0, noise = torch.randn(3, 4, 8, 8, dtype=torch.float64), torch.randn(3, 4, 8, 8, dtype=torch.float64)
    timesteps = torch.tensor([1, 250, 999])
    noisy = scheduler.add_noise(z0, noise, timesteps)
    torch.testing.assert_close(
        one_step_reverse(noisy, noise, scheduler.alphas_cumprod[timesteps]).double(), z0, atol=1e-4, rtol=1e-4
    )
    alpha = scheduler.alphas_cumprod[250].item()
    by_hand = (noisy[1, 0, 0, 0] - math.sqrt(1 - alpha) * noise[1, 0, 0, 0]) / math.sqrt(alpha)
    assert math.isclose(by_hand.item(), z0[1, 0, 0, 0].item(), rel_tol=1e-5, abs_tol=1e-6)


def test_identity_loss_is_zero_for_the_same_face_and_its_gradient_reaches_the_unet(tiny_pipe):
    vae, encoder, unet = tiny_pipe.vae, tiny_pipe.fusion_encoder, tiny_pipe.unet
    scheduler = DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    torch.manual_seed(0)
    z0, noise = torch.randn(2, 4, 16, 16), torch.randn(2, 4, 16, 16)
    landmarks = torch.tensor([[[50.0, 55], [78, 55], [64, 70], [52, 88], [76, 88]]]).expand(2, 5, 2)
    timesteps = torch.tensor([100, 200])
    noisy = scheduler.add_noise(z0, noise, timesteps)
    with torch.no_grad():
        reference = decoded_face_embedding(vae, encoder, z0, landmarks)
        same = decoded_face_embedding(
            vae, encoder, one_step_reverse(noisy, noise, scheduler.alphas_cumprod[timesteps]), landmarks
        )
    assert identity_loss(same, reference, 2).abs().item() < 1e-4
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    predicted = unet(noisy, timesteps, encoder_hidden_states=text).sample
    estimate = one_step_reverse(noisy, predicted, scheduler.alphas_cumprod[timesteps])
    loss = identity_loss(decoded_face_embedding(vae, encoder, estimate, landmarks), reference, 2)
    unet.zero_grad()
    loss.backward()
    assert loss.item() > 0 and unet.conv_in.weight.grad is not None and unet.conv_in.weight.grad.abs().sum() > 0
    unet.zero_grad()


def naive_probabilities(query, key, tokens):
    """softmax(QKᵀ/√d) over all keys, then the kept columns, averaged over heads."""
    weights = torch.softmax(query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1]), dim=-1)
    return torch.stack([weights[b, :, :, tokens[b]].mean(0) for b in range(query.shape[0])])


def test_kept_token_probabilities_match_a_naive_softmax():
    torch.manual_seed(0)
    query, key = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 77, 8)
    tokens = torch.tensor([[5, 9], [3, -1]])
    kept = kept_token_probabilities(query, key, tokens)
    naive = naive_probabilities(query, key, tokens.clamp(min=0))
    torch.testing.assert_close(kept[0], naive[0], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(kept[1, :, 0], naive[1, :, 0], atol=1e-6, rtol=1e-5)
    assert kept[1, :, 1].abs().sum() == 0  # a missing word has no map


def test_capture_processor_keeps_the_layer_output_and_records_the_maps():
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16, heads=4, dim_head=8)
    hidden, context = torch.randn(2, 12, 32), torch.randn(2, 77, 16)
    attn.set_processor(AttnProcessor2_0())
    expected = attn(hidden, encoder_hidden_states=context)
    store = AttentionStore(token_indices=torch.tensor([[4, 6], [2, -1]]), latent_size=(3, 4))
    attn.set_processor(CrossAttentionCapture(store, "layer"))
    hidden.requires_grad_(True)
    actual = attn(hidden, encoder_hidden_states=context)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    query = attn.to_q(hidden).view(2, 12, 4, 8).transpose(1, 2)
    key = attn.to_k(context).view(2, 77, 4, 8).transpose(1, 2)
    torch.testing.assert_close(
        store.maps["layer"][0], naive_probabilities(query, key, torch.tensor([[4, 6], [2, 0]]))[0], atol=1e-6, rtol=1e-5
    )
    assert store.resolution(12) == (3, 4)
    store.maps["layer"].sum().backward()
    assert hidden.grad.abs().sum() > 0


def test_one_step_reverse_for_v_prediction():
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction"
    )
    z0, noise = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    timesteps = torch.tensor([10, 240])
    noisy = scheduler.add_noise(z0, noise, timesteps)
    velocity = scheduler.get_velocity(z0, noise, timesteps)
    recovered = one_step_reverse(noisy, velocity, scheduler.alphas_cumprod[timesteps], "v_prediction")
    torch.testing.assert_close(recovered.double(), z0, atol=1e-4, rtol=1e-4)
