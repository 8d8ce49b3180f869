import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from portrait.errors import OptionError, PromptError
from portrait.multi import (
    Person,
    PortraitBoothPeoplePipeline,
    default_regions,
    fuse_regions,
    latent_weights,
    region_mask,
)

from helpers import CHANGED, largest_difference, seeded

SCENE = "a photo of a man and a woman in front of a bar"


def test_fusion_is_the_weighted_average():
    predictions = torch.tensor([2.0, 6.0]).view(2, 1, 1, 1, 1).expand(2, 1, 1, 1, 3)
    weights = torch.tensor([[[1.0, 3.0, 0.0]], [[0.0, 1.0, 1.0]]])
    fused = fuse_regions(predictions, weights)
    # pixel 0: only region 0 → 2; pixel 1: (3·2 + 1·6) / 4 = 3; pixel 2: only region 1 → 6
    assert fused.flatten().tolist() == [2.0, 3.0, 6.0]


def test_default_regions_are_soft_halves_that_sum_to_one():
    left, right = default_regions(2, 2, 10, split=0.5, overlap=0.2)
    np.testing.assert_allclose(left[0], [1, 1, 1, 1, 0.75, 0.25, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(left + right, np.ones((2, 10)), atol=1e-6)
    hard = default_regions(3, 1, 6, overlap=0.0)
    assert [mask[0].tolist() for mask in hard] == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]]
    with pytest.raises(OptionError):
        default_regions(2, 8, 8, split=1.2)


def test_boxes_and_masks_describing_the_same_area_agree():
    box = region_mask((0.25, 0.0, 0.75, 0.5), 64, 96)
    drawn = Image.new("L", (96, 64), 0)
    ImageDraw.Draw(drawn).rectangle((24, 0, 71, 31), fill=255)
    np.testing.assert_array_equal(box, region_mask(drawn, 64, 96))
    np.testing.assert_array_equal(box, region_mask(np.asarray(drawn) > 0, 64, 96))
    weights = latent_weights([box], (8, 12))
    assert weights.shape == (1, 8, 12) and weights[0, 0, 3:9].eq(1).all() and weights[0, 4:].eq(0).all()
    with pytest.raises(OptionError, match="canvas fractions"):
        region_mask((0.5, 0, 0.2, 1), 8, 8)


@pytest.fixture(scope="module")
def people_pipe(tiny_pipe):
    return PortraitBoothPeoplePipeline.from_pipe(tiny_pipe)


@pytest.fixture(scope="module")
def two_faces(tiny_pipe, astronaut):
    return tiny_pipe.encode_faces(astronaut), tiny_pipe.encode_faces(ImageOps.grayscale(ImageOps.mirror(astronaut)))


def pair(pipe, faces, **kwargs) -> np.ndarray:
    people = [Person(face, region=region) for face, region in zip(faces, kwargs.pop("regions", (None, None)))]
    kwargs.setdefault("generator", seeded(0))
    return pipe(SCENE, people, num_inference_steps=3, output_type="np", **kwargs).images


def test_two_people_are_deterministic_and_faces_matter(people_pipe, two_faces):
    first = pair(people_pipe, two_faces)
    assert first.shape == (1, 64, 64, 3)
    assert np.array_equal(first, pair(people_pipe, two_faces))
    assert largest_difference(first, pair(people_pipe, two_faces[::-1])) > CHANGED  # who stands where matters


def test_negative_prompt_changes_the_picture(people_pipe, two_faces):
    assert (
        largest_difference(pair(people_pipe, two_faces, negative_prompt="blurry"), pair(people_pipe, two_faces))
        > CHANGED
    )


def test_box_and_mask_regions_give_the_same_picture(people_pipe, two_faces):
    boxes = ((0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0))
    left = np.zeros((64, 64), np.float32)
    left[:, :32] = 1
    assert np.array_equal(
        pair(people_pipe, two_faces, regions=boxes), pair(people_pipe, two_faces, regions=(left, 1 - left))
    )


def test_batched_step_equals_one_unet_call_per_branch(people_pipe, two_faces):
    torch.manual_seed(0)
    latents = torch.randn(2, 4, 8, 8)
    conditions = torch.randn(4 * 2, 77, 32)  # unconditional, scene, person 1, person 2; 2 images each
    weights = torch.rand(3, 8, 8)
    people_pipe.scheduler.set_timesteps(4)
    timestep = people_pipe.scheduler.timesteps[0]
    people_pipe._guidance_scale = 5.0
    with torch.no_grad():
        batched = people_pipe.fused_noise(latents, timestep, conditions, weights)
        model_input = people_pipe.scheduler.scale_model_input(latents, timestep)
        branches = [
            people_pipe.unet(model_input, timestep, encoder_hidden_states=c).sample for c in conditions.chunk(4)
        ]
    guided = [branches[0] + 5.0 * (branch - branches[0]) for branch in branches[1:]]
    reference = sum(w[None, None] * g for w, g in zip(weights, guided)) / weights.sum(0)
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-5)


def test_same_word_twice_and_count_errors(people_pipe, two_faces):
    out = people_pipe(
        "a man and a man, both wearing suspicious expressions", [Person(f) for f in two_faces], num_inference_steps=1
    )
    assert [p.identity_span for p in out.prompts] == [(2, 5), (12, 15)] and len(out.regions) == 2
    with pytest.raises(PromptError, match="2 faces were given but the prompt names 1 person"):
        people_pipe("a woman at a bar", [Person(f) for f in two_faces], num_inference_steps=1)


def test_callbacks_and_interrupt(people_pipe, two_faces):
    steps = []

    def stop_after_two(pipe, step, timestep, tensors):
        steps.append(step)
        if step == 1:
            pipe._interrupt = True
        return tensors

    pair(people_pipe, two_faces, callback_on_step_end=stop_after_two)
    assert steps == [0, 1]
