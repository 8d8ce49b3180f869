import json

import numpy as np
import pytest
import torch
from PIL import ImageOps

from portrait.errors import MissingWeightsError, NoFaceError, OptionError
from portrait.pipeline import FaceEncoding, PortraitBoothPipeline
from portrait.portrait_weights import portrait_modules

from helpers import CHANGED, SAME, as_array, largest_difference, seeded

PROMPT = "a photo of a woman in the snow"
STEPS = 4


def run(pipe, face, **kwargs) -> np.ndarray:
    """Float pixels: a tiny random UNet reacts to the face by less than one 8-bit step."""
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("generator", seeded(0))
    return pipe(PROMPT, face=face, output_type="np", **kwargs).images


def run_plain(pipe) -> np.ndarray:
    plain = pipe.as_plain_pipeline()
    return plain(PROMPT, num_inference_steps=STEPS, guidance_scale=5.0, generator=seeded(0), output_type="np").images


def test_deterministic_for_a_fixed_seed_and_sized_as_asked(tiny_pipe, astronaut_face):
    first = run(tiny_pipe, astronaut_face, height=64, width=96)
    second = run(tiny_pipe, astronaut_face, height=64, width=96)
    assert first.shape == (1, 64, 96, 3)
    assert np.array_equal(first, second)
    image = tiny_pipe(PROMPT, face=astronaut_face, num_inference_steps=1, height=96, width=64).images[0]
    assert image.size == (64, 96) and image.mode == "RGB"


def test_defaults_are_the_papers_recipe(tiny_pipe):
    import inspect

    from diffusers import EulerDiscreteScheduler

    parameters = inspect.signature(PortraitBoothPipeline.__call__).parameters
    assert parameters["num_inference_steps"].default == 50 and parameters["guidance_scale"].default == 5.0
    assert isinstance(tiny_pipe.scheduler, EulerDiscreteScheduler)


def test_different_faces_give_different_images(tiny_pipe, astronaut, astronaut_face):
    other = tiny_pipe.encode_faces(ImageOps.grayscale(ImageOps.mirror(astronaut)))
    assert not torch.allclose(other.features, astronaut_face.features)
    assert largest_difference(run(tiny_pipe, astronaut_face), run(tiny_pipe, other)) > CHANGED


def test_untrained_stea_is_exactly_plain_stable_diffusion(tiny_pipe, astronaut_face):
    trained = {name: value.clone() for name, value in tiny_pipe.stea.fc2.state_dict().items()}
    try:
        torch.nn.init.zeros_(tiny_pipe.stea.fc2.weight)
        torch.nn.init.zeros_(tiny_pipe.stea.fc2.bias)
        ours = run(tiny_pipe, astronaut_face)
    finally:
        tiny_pipe.stea.fc2.load_state_dict(trained)
    assert np.array_equal(ours, run_plain(tiny_pipe))


def test_identity_start_one_is_text_only_and_a_half_is_between(tiny_pipe, astronaut_face):
    plain = run_plain(tiny_pipe)
    late = run(tiny_pipe, astronaut_face, identity_start=1.0)
    half = run(tiny_pipe, astronaut_face, identity_start=0.5)
    full = run(tiny_pipe, astronaut_face)
    assert np.array_equal(late, plain)
    # The face enters halfway: the picture moves away from plain SD, less than with the face from the start.
    assert CHANGED < largest_difference(half, plain) < largest_difference(full, plain)
    with pytest.raises(OptionError):
        run(tiny_pipe, astronaut_face, identity_start=1.5)


@pytest.mark.parametrize("identity_start", [0.0, 0.5])
def test_callbacks_fire_once_per_step(tiny_pipe, astronaut_face, identity_start):
    steps = []

    def callback(pipe, step, timestep, tensors):
        steps.append(step)
        assert set(tensors) == {"latents"}
        return {}

    run(tiny_pipe, astronaut_face, identity_start=identity_start, callback_on_step_end=callback)
    assert steps == list(range(STEPS))


def test_several_reference_photos_are_averaged(tiny_pipe, astronaut, astronaut_face):
    mirrored = ImageOps.mirror(astronaut)
    both = tiny_pipe.encode_faces([astronaut, mirrored])
    single = tiny_pipe.encode_faces(mirrored)
    torch.testing.assert_close(both.features, (astronaut_face.features + single.features) / 2)
    assert len(both.analyses) == 2


def test_images_per_prompt_prompt_lists_and_negative_prompt(tiny_pipe, astronaut_face):
    out = tiny_pipe([PROMPT, "a man at the beach"], face=astronaut_face, num_images_per_prompt=2, num_inference_steps=2)
    assert len(out.images) == 4 and [p.identity_word for p in out.prompts] == ["woman", "man"]
    assert np.abs(as_array(out.images[0]) - as_array(out.images[1])).mean() > 1  # each image its own noise
    assert (
        largest_difference(run(tiny_pipe, astronaut_face, negative_prompt="blurry"), run(tiny_pipe, astronaut_face))
        > CHANGED
    )


def test_face_photo_goes_through_detection(tiny_pipe, astronaut, astronaut_face):
    out = tiny_pipe(PROMPT, astronaut, num_inference_steps=STEPS, generator=seeded(0), output_type="np")
    assert out.faces[0].num_faces == 1
    assert np.array_equal(out.images, run(tiny_pipe, astronaut_face))


def test_missing_face_is_a_clear_error(tiny_pipe):
    with pytest.raises(NoFaceError, match="reference photo"):
        tiny_pipe(PROMPT)
    with pytest.raises(NoFaceError):
        tiny_pipe.encode_faces([])


def test_prompt_without_identity_word_is_prefixed(tiny_pipe, astronaut_face):
    out = tiny_pipe("in the snow", face=astronaut_face, identity_word="woman", num_inference_steps=1)
    assert out.prompts[0].text == "a photo of a woman, in the snow" and out.prompts[0].notice


def test_save_pretrained_round_trip(tiny_pipe, astronaut_face, tmp_path):
    tiny_pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["stea"][1] == "STEA" and index["fusion_encoder"][1] == "IdentityEncoder"
    assert (
        list(tmp_path.glob("**/*.bin")) == [] and (tmp_path / "stea" / "diffusion_pytorch_model.safetensors").is_file()
    )
    loaded = PortraitBoothPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert_same_as_the_original(loaded, tiny_pipe, astronaut_face)


def test_portrait_weights_on_a_plain_base(tiny_pipe, astronaut_face, tmp_path):
    tiny_pipe.as_plain_pipeline().save_pretrained(tmp_path / "base")
    tiny_pipe.save_portrait_weights(tmp_path / "weights")
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == ["stea", "unet"]
    loaded = PortraitBoothPipeline.from_pretrained(
        tmp_path / "base", portrait_weights=tmp_path / "weights", fusion_encoder=tiny_pipe.fusion_encoder
    )
    loaded.set_progress_bar_config(disable=True)
    assert_same_as_the_original(loaded, tiny_pipe, astronaut_face)


def test_folders_saved_before_the_fusion_encoder_had_its_name_load(tiny_pipe, astronaut_face, tmp_path):
    """A saved pipeline and a weights folder from when `fusion_encoder/` was called `identity_encoder/`."""
    tiny_pipe.save_pretrained(tmp_path / "old")
    (tmp_path / "old" / "fusion_encoder").rename(tmp_path / "old" / "identity_encoder")
    index = json.loads((tmp_path / "old" / "model_index.json").read_text())
    index["identity_encoder"] = index.pop("fusion_encoder")
    (tmp_path / "old" / "model_index.json").write_text(json.dumps(index))
    stea_config = json.loads((tmp_path / "old" / "stea" / "config.json").read_text())
    stea_config["identity_encoder"] = stea_config.pop("fusion_encoder")  # "tiny", not STEA's default
    (tmp_path / "old" / "stea" / "config.json").write_text(json.dumps(stea_config))
    loaded = PortraitBoothPipeline.from_pretrained(tmp_path / "old")
    loaded.set_progress_bar_config(disable=True)
    assert "identity_encoder" not in PortraitBoothPipeline.load_config(
        tmp_path / "old"
    )  # diffusers would ignore it, warning
    assert loaded.stea.config.fusion_encoder == "tiny" and "identity_encoder" not in loaded.stea.config
    saved = tiny_pipe.fusion_encoder.state_dict()
    assert all(torch.equal(value, saved[key]) for key, value in loaded.fusion_encoder.state_dict().items())
    assert_same_as_the_original(loaded, tiny_pipe, astronaut_face)
    weights = portrait_modules(tmp_path / "old")  # a weights folder of the w/o-STEA ablation, as training wrote it
    assert all(torch.equal(value, saved[key]) for key, value in weights["fusion_encoder"].state_dict().items())


def assert_same_as_the_original(loaded, original, face) -> None:
    """Equal within rounding; and that tolerance would catch weights that were not loaded."""
    ours = run(loaded, face)
    assert largest_difference(ours, run(original, face)) < SAME
    assert largest_difference(ours, run(loaded.with_untrained_stea(), face)) > 10 * SAME


def test_missing_base_files_are_named(tmp_path, offline):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="unet/diffusion_pytorch_model.safetensors"):
        PortraitBoothPipeline.from_pretrained(tmp_path)
    with pytest.raises(MissingWeightsError, match="not in the Hugging Face cache and could not be downloaded"):
        PortraitBoothPipeline.from_pretrained("nobody/no-such-model-here")


def test_missing_identity_encoder_weights_are_named(tiny_pipe, tmp_path, offline):
    tiny_pipe.as_plain_pipeline().save_pretrained(tmp_path / "base")
    with pytest.raises(MissingWeightsError, match="CurricularFace_Backbone.pth"):
        PortraitBoothPipeline.from_pretrained(tmp_path / "base", weights_dir=tmp_path / "weights")


def test_precomputed_face_encoding_can_be_made_by_hand(tiny_pipe):
    dim = tiny_pipe.fusion_encoder.feature_dim
    faces = [FaceEncoding(torch.randn(1, dim, generator=seeded(i)), torch.zeros(1, 32)) for i in (1, 2)]
    first, second = (run(tiny_pipe, face) for face in faces)
    assert largest_difference(first, second) > CHANGED
