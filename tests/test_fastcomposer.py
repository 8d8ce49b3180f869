"""FastComposer's checkpoint in PortraitBooth's pipeline: strict loading, its fusion formula, its prompts, its
delayed conditioning, two people in one pass, conversion, and the CLI, app, evaluation and training entries."""

import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import ImageOps

from portrait.cli import main as portrait_main
from portrait.engine import ModelSource, identity_model_line, load_pipeline
from portrait.errors import DataError, PromptError
from portrait.fastcomposer import fastcomposer_modules, vision_config_of
from portrait.identity.clip_features import TINY_VISION
from portrait.identity.fastcomposer_image import VIT_L14_VISION, face_crop_box, pad_to_square, prepare_reference
from portrait.multi import Person, PortraitBoothPeoplePipeline
from portrait.postfuse import FastComposerFusion
from portrait.presets import build_random_components
from portrait.prompts import token_index

from fastcomposer_fixture import their_layout, write_checkpoint
from helpers import CHANGED, SAME, largest_difference, seeded

PAIR = "a photo of a man img and a woman img at a bar"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("fastcomposer"))


@pytest.fixture(scope="module")
def fc_pipe(checkpoint, analyzer):
    pipe = load_pipeline(
        ModelSource(base="tiny", identity_model=str(checkpoint), safety_checker=False, watermark=False)
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.face_analyzer = analyzer
    return pipe


@pytest.fixture(scope="module")
def fc_faces(fc_pipe, astronaut):
    return fc_pipe.encode_faces(astronaut), fc_pipe.encode_faces(ImageOps.grayscale(ImageOps.mirror(astronaut)))


def tiny_base():
    components = build_random_components("tiny")
    return components["unet"].config, components["text_encoder"].config, components["tokenizer"]


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("extra_token_row", [False, True])
def test_every_key_group_of_their_checkpoint_is_used_or_named(extra_token_row, caplog, tmp_path):
    state = their_layout(extra_token_row=extra_token_row).state_dict()
    groups = {key.split(".")[0] for key in state} | {
        ".".join(key.split(".")[:2]) for key in state if not key.startswith(("unet", "vae"))
    }
    assert groups >= {"unet", "vae", "text_encoder.embeddings", "text_encoder.encoder", "text_encoder.final_layer_norm",
                      "image_encoder.vision_model", "image_encoder.visual_projection", "postfuse_module.mlp1",
                      "postfuse_module.mlp2", "postfuse_module.layer_norm"}  # fmt: skip
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="portrait.fastcomposer"):
        pipe = load_pipeline(ModelSource(base="tiny", identity_model=str(path), safety_checker=False))
    (line,) = [record.getMessage() for record in caplog.records if "FastComposer checkpoint" in record.getMessage()]
    vae_keys = sum(key.startswith("vae.") for key in state)
    assert f"used {len(state) - vae_keys} keys" in line and f"ignored: vae.* ({vae_keys} keys)" in line
    assert ("tokenizer entry 'img' added" in line) == extra_token_row
    # Every used tensor sits in the module that now holds it: nothing left at the base's values.
    loaded = {
        "unet.": pipe.unet.state_dict(),
        "text_encoder.": pipe.text_encoder.state_dict(),
        "image_encoder.": {
            key.removeprefix("vision."): value for key, value in pipe.fusion_encoder.state_dict().items()
        },
        "postfuse_module.": pipe.stea.state_dict(),
    }
    for key, value in state.items():
        prefix = next((p for p in loaded if key.startswith(p)), None)
        if prefix is not None:
            assert torch.equal(loaded[prefix][key[len(prefix) :]], value), key
    assert isinstance(pipe.stea, FastComposerFusion)
    assert (
        len(pipe.tokenizer)
        == pipe.text_encoder.config.vocab_size
        == state["text_encoder.embeddings.token_embedding.weight"].shape[0]
    )
    if extra_token_row:
        assert pipe.tokenizer.convert_tokens_to_ids("img") == len(pipe.tokenizer) - 1


def test_the_vision_tower_is_read_off_the_checkpoint():
    shapes = {
        "embeddings.class_embedding": (1024,), "embeddings.patch_embedding.weight": (1024, 3, 14, 14),
        "embeddings.position_embedding.weight": (257, 1024),
        **{f"encoder.layers.{i}.mlp.fc1.weight": (4096, 1024) for i in range(24)},
    }  # fmt: skip
    state = {f"image_encoder.vision_model.{key}": torch.empty(shape, device="meta") for key, shape in shapes.items()}
    state["image_encoder.visual_projection.weight"] = torch.empty(768, 1024, device="meta")
    assert vision_config_of(state) == VIT_L14_VISION  # their checkpoint's tower: CLIP ViT-L/14
    tiny = vision_config_of(their_layout().state_dict())
    assert {key: tiny[key] for key in TINY_VISION} == TINY_VISION
    with pytest.raises(DataError, match="missing image_encoder.visual_projection.weight"):
        vision_config_of({key: value for key, value in state.items() if "projection" not in key})


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda s: s.update({"postfuse_module.mlp3.weight": torch.zeros(2)}), "unexpected postfuse_module.mlp3.weight"),
        (lambda s: s.pop("image_encoder.visual_projection.weight"), "missing image_encoder.visual_projection.weight"),
        (
            lambda s: s.update({"postfuse_module.layer_norm.weight": torch.ones(7)}),
            "postfuse_module.layer_norm.weight has shape (7,)",
        ),
        (lambda s: s.update({"ema_param.shadow": torch.ones(1)}), "unexpected ema_param.shadow"),
    ],
)
def test_a_wrong_key_or_shape_is_one_line_naming_it(change, named):
    state = their_layout().state_dict()
    change(state)
    with pytest.raises(DataError) as caught:
        fastcomposer_modules(state, *tiny_base(), source="their.bin")
    message = str(caught.value)
    assert named in message and "\n" not in message and message.startswith("their.bin does not fit")


def test_the_cli_says_a_bad_checkpoint_in_one_line(tmp_path, capsys):
    state = their_layout().state_dict()
    state["postfuse_module.layer_norm.bias"] = torch.zeros(3)
    torch.save(state, tmp_path / "pytorch_model.bin")
    status = portrait_main(["generate", "--tiny", "--identity-model", str(tmp_path / "pytorch_model.bin"),
                            "--face", "example:astronaut", "--prompt", "a man img", "--out", str(tmp_path / "out")])  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert status == 2 and len(error.splitlines()) == 1 and "postfuse_module.layer_norm.bias has shape (3,)" in error
    assert portrait_main(["generate", "--tiny", "--identity-model", str(tmp_path / "none.bin"), "--face", "example:astronaut",
                          "--prompt", "a man", "--out", str(tmp_path / "out")]) == 2  # fmt: skip
    assert "No FastComposer checkpoint at" in capsys.readouterr().err


# ------------------------------------------------------------------ fusion and prompts
def test_fused_embedding_is_their_formula_by_hand_and_only_the_marked_word_changes(fc_pipe, checkpoint):
    state = torch.load(checkpoint, weights_only=True)
    w = {
        key.removeprefix("postfuse_module."): value
        for key, value in state.items()
        if key.startswith("postfuse_module.")
    }
    width = w["layer_norm.weight"].shape[0]

    def mlp(x, name):
        x = F.layer_norm(x, (x.shape[-1],), w[f"{name}.layernorm.weight"], w[f"{name}.layernorm.bias"], eps=1e-5)
        return F.linear(
            F.gelu(F.linear(x, w[f"{name}.fc1.weight"], w[f"{name}.fc1.bias"])),
            w[f"{name}.fc2.weight"],
            w[f"{name}.fc2.bias"],
        )

    torch.manual_seed(3)
    text, image = torch.randn(2, 5, width), torch.randn(2, width)
    index = torch.tensor([1, 3])
    x = mlp(torch.cat([text[[0, 1], index], image], dim=-1), "mlp1") + text[[0, 1], index]
    x = mlp(x, "mlp2") + x
    expected = F.layer_norm(x, (width,), w["layer_norm.weight"], w["layer_norm.bias"], eps=1e-5)
    fused = fc_pipe.stea(text, index, image)
    torch.testing.assert_close(fused[[0, 1], index], expected, rtol=1e-5, atol=1e-6)
    untouched = torch.ones_like(text, dtype=torch.bool)
    untouched[[0, 1], index] = False
    assert torch.equal(fused[untouched], text[untouched])
    assert torch.equal(fc_pipe.stea(text, torch.tensor([-1, -1]), image), text)  # NO_IDENTITY: the text as it was


def test_their_img_marker_and_our_identity_word_mark_the_same_token(fc_pipe, fc_faces):
    marked = fc_pipe.identity_prompts("a man img playing guitar")
    chosen = fc_pipe.identity_prompts("a man playing guitar", identity_word="man")
    assert marked == chosen and marked[0].text == "a man playing guitar"
    text, with_face, _ = fc_pipe.encode_identity_prompt(marked, fc_faces[0], do_classifier_free_guidance=False)
    _, by_word, _ = fc_pipe.encode_identity_prompt(chosen, fc_faces[0], do_classifier_free_guidance=False)
    assert torch.equal(with_face, by_word)
    changed = (with_face != text).any(dim=-1)[0].nonzero().flatten().tolist()
    assert changed == [token_index(fc_pipe.tokenizer, marked[0].text, marked[0].identity_span)] == [2]
    with pytest.raises(PromptError, match="marks 'man'"):
        fc_pipe.identity_prompts("a man img playing guitar", identity_word="woman")
    with pytest.raises(PromptError, match="right before it"):
        fc_pipe.identity_prompts("img a man")


def test_identity_start_defaults_to_their_demo_and_the_first_steps_see_the_plain_prompt(fc_pipe, fc_faces):
    # Their rule: the plain prompt while step i ≤ (1 − α)·N; α = 0.75 → 13 of 50 steps, 2 of 4.
    assert fc_pipe.stea.default_identity_start(50) == 13 / 50 and fc_pipe.stea.default_identity_start(4) == 0.5
    seen = []
    hook = fc_pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["encoder_hidden_states"][1].clone()), with_kwargs=True)  # fmt: skip
    try:
        fc_pipe(
            "a man img playing guitar",
            face=fc_faces[0],
            num_inference_steps=4,
            generator=seeded(0),
            output_type="latent",
        )
    finally:
        hook.remove()
    text, with_face, _ = fc_pipe.encode_identity_prompt(
        fc_pipe.identity_prompts("a man img playing guitar"), fc_faces[0]
    )
    assert len(seen) == 4
    assert all(torch.equal(step, text[0]) for step in seen[:2]) and all(
        torch.equal(step, with_face[0]) for step in seen[2:]
    )


def test_the_reference_is_prepared_as_their_inference_does():
    assert face_crop_box((100, 100, 140, 150), 400, 300) == (45, 50, 195, 200)  # 3 × 50 px, centred on the face
    assert face_crop_box((0, 0, 40, 40), 400, 300) == (0, 0, 80, 80)  # clipped to the photo
    wide = torch.ones(1, 2, 6)
    assert pad_to_square(wide)[0, :, 0].tolist() == [0, 0, 1, 1, 0, 0]  # black above and below, content centred
    square = prepare_reference(np.full((4, 2, 3), 255, np.uint8), 4)
    assert square.shape == (3, 4, 4) and square[0, :, 0].tolist() == [0.0] * 4 and square.max() == 1.0


def test_faces_are_encoded_from_their_crop_with_clip(fc_pipe, astronaut, fc_faces):
    analysis = fc_faces[0].analyses[0]
    crop = fc_pipe.fusion_encoder.reference_pixels(analysis)
    assert crop.shape == (3, TINY_VISION["image_size"], TINY_VISION["image_size"])
    with torch.no_grad():
        direct = fc_pipe.fusion_encoder(crop[None]).features
    torch.testing.assert_close(fc_faces[0].features, direct)
    assert fc_faces[0].features.shape == (1, TINY_VISION["projection_dim"])


# ------------------------------------------------------------------ two people
def test_one_pass_puts_each_face_at_its_own_word(fc_pipe, fc_faces):
    several = fc_pipe.with_modules(PortraitBoothPeoplePipeline)
    several._guidance_scale = 5.0
    people = [Person(face) for face in fc_faces]
    prompts = several.identity_prompts("a photo of a man and a woman at a bar", "man") + several.identity_prompts(
        "a photo of a man and a woman at a bar", "woman"
    )
    with_faces, text_only = several._branch_conditions(prompts, people, None, 1, regions=False)
    assert with_faces.shape[0] == 2 and torch.equal(
        text_only[0], with_faces[0]
    )  # [unconditional; scene], no person branches
    text, scene = text_only[1], with_faces[1]
    indices = [token_index(several.tokenizer, p.text, p.identity_span) for p in prompts]
    for index, face in zip(indices, fc_faces):
        expected = several.stea.fuse(text[index], face.features[0])
        torch.testing.assert_close(scene[index], expected)
    others = [i for i in range(text.shape[0]) if i not in indices]
    assert torch.equal(scene[others], text[others])


def test_one_pass_is_the_default_for_fastcomposer_and_differs_from_regions(fc_pipe, fc_faces):
    several = fc_pipe.with_modules(PortraitBoothPeoplePipeline)
    people = [Person(face) for face in fc_faces]
    common = dict(num_inference_steps=2, generator=None, output_type="np", identity_start=0.0)
    one_pass = several(PAIR, people, **{**common, "generator": seeded(0)})
    regions = several(PAIR, people, people_mode="regions", **{**common, "generator": seeded(0)})
    assert one_pass.regions is None and len(regions.regions) == 2
    assert largest_difference(one_pass.images, regions.images) > CHANGED
    again = several(PAIR, people, people_mode="one-pass", **{**common, "generator": seeded(0)})
    assert largest_difference(one_pass.images, again.images) < SAME


def test_one_pass_works_with_portraitbooth_stea(tiny_pipe, astronaut_face, astronaut):
    several = tiny_pipe.with_modules(PortraitBoothPeoplePipeline)
    people = [Person(astronaut_face), Person(tiny_pipe.encode_faces(ImageOps.mirror(astronaut)))]
    common = dict(num_inference_steps=2, output_type="np")
    regions = several("a photo of a man and a woman at a bar", people, generator=seeded(0), **common)
    one_pass = several(
        "a photo of a man and a woman at a bar", people, people_mode="one-pass", generator=seeded(0), **common
    )
    assert len(regions.regions) == 2 and one_pass.regions is None  # regions stay PortraitBooth's default
    assert largest_difference(one_pass.images, regions.images) > CHANGED


# ------------------------------------------------------------------ conversion and the entries
def test_convert_writes_a_folder_that_loads_offline_with_the_same_weights(checkpoint, fc_pipe, tmp_path, capsys):
    out = tmp_path / "converted"
    assert portrait_main(["convert", "fastcomposer", str(checkpoint), str(out), "--tiny"]) == 0
    assert (out / "stea" / "diffusion_pytorch_model.safetensors").is_file() and (out / "stea" / "config.json").is_file()
    assert json.loads((out / "model_index.json").read_text())["stea"][1] == "FastComposerFusion"
    for source in (ModelSource(base=str(out)), ModelSource(base="tiny", identity_model=str(out), safety_checker=False)):
        again = load_pipeline(source)
        for name in ("unet", "text_encoder", "stea", "fusion_encoder"):
            ours, theirs = getattr(again, name).state_dict(), getattr(fc_pipe, name).state_dict()
            assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
    assert again.stea.config.alpha == 0.75 and "FastComposer" in identity_model_line(again)


def test_app_banner_names_the_identity_model_and_its_licence(checkpoint):
    import app

    service, banner = app.load_service(
        app.parse_args(["--tiny", "--identity-model", str(checkpoint), "--detector", "mtcnn"])
    )
    assert "FastComposer (mit-han-lab/fastcomposer, MIT licence)" in banner and "tiny untrained model" in banner
    assert isinstance(service.pipe.stea, FastComposerFusion)


def test_training_can_start_from_their_unet(checkpoint):
    from train.config import TrainConfig
    from train.train import build_models

    config = TrainConfig.load("train/configs/tiny.yaml", init_unet_from=str(checkpoint))
    unet = build_models(config).unet.state_dict()
    state = torch.load(checkpoint, weights_only=True)
    assert all(
        torch.equal(unet[key.removeprefix("unet.")], value) for key, value in state.items() if key.startswith("unet.")
    )


@pytest.mark.slow
def test_evaluation_runs_fastcomposer_as_a_baseline(checkpoint, tmp_path, astronaut):
    from evaluation.harness import main as evaluate

    subjects = tmp_path / "subjects"
    subjects.mkdir()
    astronaut.save(subjects / "eileen.png")
    ImageOps.mirror(astronaut).save(subjects / "mirror.png")
    (subjects / "subjects.json").write_text(json.dumps({"eileen.png": "woman", "mirror.png": "man"}))
    prompts = tmp_path / "prompts.json"
    prompts.write_text(
        json.dumps({"style": ["an oil painting of {subject}"], "multi": ["{subject_a} and {subject_b} at a bar"]})
    )
    run = tmp_path / "run"
    evaluate(["generate", "--subjects", str(subjects), "--out", str(run), "--prompts", str(prompts), "--images-per-prompt", "1",
              "--tiny", "--steps", "1", "--baseline", "fastcomposer", "--identity-model", str(checkpoint)])  # fmt: skip
    images = sorted(p.relative_to(run).as_posix() for p in run.rglob("*.png"))
    assert len(images) == 2 + 2 * 11 + 1 and "images/multi/eileen+mirror/multi-00-0.png" in images
    assert json.loads((run / "run.json").read_text())["method"] == "baseline-fastcomposer"
