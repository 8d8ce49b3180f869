"""Every weight the project can use, said once: what it is for, where it comes from, where it goes, its licence.

The loaders (portrait/loading.py and its callers) take their hub ids, file lists and URLs from here, and
`portrait weights` lists and fetches the same entries, so a weight named anywhere is named here first.
Sizes are bytes. A file's size and sha256 are checked after a download when known (from its Git LFS pointer
on Hugging Face mirrors of the same release); a hub model's size is the approximate download of the files
the project needs (huggingface_hub checks those itself).
"""

from __future__ import annotations

from dataclasses import dataclass

from .defaults import BASE_MODEL_ID


@dataclass(frozen=True)
class WeightFile:
    """A third-party weight file that lives in the weights folder."""

    filename: str
    description: str
    url: str | None = None  # where it can be downloaded from, when it can
    size: int | None = None  # exact bytes, when known: checked after a download
    sha256: str | None = None  # when known: checked after a download
    by_hand: str | None = None  # where to get it when there is no `url`


@dataclass(frozen=True)
class HubModel:
    """Files of a Hugging Face hub repository, kept in the Hugging Face cache."""

    repo_id: str
    required: tuple[str, ...]  # what the project loads; every one must be in the cache
    extra_patterns: tuple[str, ...] = ()  # fetched with them: files whose names vary (tokenizers)
    size: int | None = None  # approximate download of the files above

    @property
    def patterns(self) -> list[str]:
        return [*self.required, *self.extra_patterns]


@dataclass(frozen=True)
class Weight:
    """One line of `portrait weights`."""

    name: str  # what `portrait weights fetch` takes
    purpose: str
    licence: str
    source: WeightFile | HubModel
    alternatives: tuple[HubModel, ...] = ()  # other places the loader also accepts (never fetched)


GB, MB = 10**9, 10**6

# --- Stable Diffusion 1.5 and what ships with it
SD15 = HubModel(
    BASE_MODEL_ID,
    (
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.safetensors",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/config.json",
        "vae/diffusion_pytorch_model.safetensors",
    ),  # what inference needs: no EMA copies, no .bin duplicates
    ("tokenizer/*",),
    size=int(4.27 * GB),
)
SD15_SAFETY_CHECKER = HubModel(
    SD15.repo_id,
    ("safety_checker/config.json", "safety_checker/model.safetensors", "feature_extractor/preprocessor_config.json"),
    size=int(1.22 * GB),
)
SAFETY_CHECKER_ALONE = HubModel(
    "CompVis/stable-diffusion-safety-checker", ("config.json", "model.safetensors", "preprocessor_config.json")
)
LCM_LORA = HubModel("latent-consistency/lcm-lora-sdv1-5", ("pytorch_lora_weights.safetensors",), size=135 * MB)

# --- Faces: φ, detection, parsing
_FACEXLIB_RELEASES = "https://github.com/xinntao/facexlib/releases/download"
CURRICULARFACE = WeightFile(
    "CurricularFace_Backbone.pth",
    "CurricularFace IR-101 identity encoder (TFace)",
    by_hand="the Google Drive or Baidu link under 'Model' in github.com/HuangYG123/CurricularFace's README "
    "(or TFace's IR_101 checkpoint, renamed)",
)
RETINAFACE = WeightFile(
    "detection_Resnet50_Final.pth",
    "RetinaFace face detector",
    f"{_FACEXLIB_RELEASES}/v0.1.0/detection_Resnet50_Final.pth",
    size=109_497_761,
    sha256="6d1de9c2944f2ccddca5f5e010ea5ae64a39845a86311af6fdf30841b0a5a16d",
)
BISENET = WeightFile(
    "parsing_bisenet.pth",
    "BiSeNet face parser",
    f"{_FACEXLIB_RELEASES}/v0.2.0/parsing_bisenet.pth",
    size=53_289_463,
    sha256="468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567",
)
ARCFACE = WeightFile(  # no size or hash published for this release asset
    "recognition_arcface_ir_se50.pth",
    "ArcFace IR-SE50 identity encoder",
    f"{_FACEXLIB_RELEASES}/v0.1.0/recognition_arcface_ir_se50.pth",
)
FACEXLIB_WEIGHTS = {"retinaface": RETINAFACE, "bisenet": BISENET, "arcface": ARCFACE}

# --- Evaluation and data preparation
FACENET_VGGFACE2 = WeightFile(  # no size or hash published for this release asset
    "20180402-114759-vggface2.pt",
    "FaceNet InceptionResnetV1 (VGGFace2)",
    "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt",
)
CLIP_VIT_L14 = HubModel(
    "openai/clip-vit-large-patch14",
    ("config.json", "model.safetensors", "tokenizer_config.json", "preprocessor_config.json"),
    ("*.json", "*.txt"),
    size=int(1.71 * GB),
)
BLIP_CAPTIONER = HubModel(
    "Salesforce/blip-image-captioning-base",
    ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json"),
    ("*.json", "*.txt"),
    size=990 * MB,
)

# --- Other models of the family, and control
FASTCOMPOSER = HubModel("mit-han-lab/fastcomposer", ("pytorch_model.bin",), size=int(4.52 * GB))
_CONTROLNET_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
CONTROLNET_CANNY = HubModel("lllyasviel/control_v11p_sd15_canny", _CONTROLNET_FILES, size=int(1.45 * GB))
CONTROLNET_OPENPOSE = HubModel("lllyasviel/control_v11p_sd15_openpose", _CONTROLNET_FILES, size=int(1.45 * GB))
CONTROLNET_DEPTH = HubModel("lllyasviel/control_v11f1p_sd15_depth", _CONTROLNET_FILES, size=int(1.45 * GB))
OPENPOSE_ANNOTATOR = HubModel("lllyasviel/Annotators", ("body_pose_model.pth",), size=209 * MB)
DEPTH_ANNOTATOR = HubModel(
    "Intel/dpt-hybrid-midas", ("config.json", "model.safetensors", "preprocessor_config.json"), size=490 * MB
)

_FACEXLIB_LICENCE = "MIT (facexlib)"  # its LICENSE file; its package metadata says Apache-2.0
WEIGHTS: dict[str, Weight] = {
    weight.name: weight
    for weight in (
        Weight("sd15", "base model, Stable Diffusion 1.5 (everything but --tiny)", "CreativeML OpenRAIL-M", SD15),
        Weight(
            "safety-checker",
            "SD 1.5's safety checker (app and CLI)",
            "CreativeML OpenRAIL-M",
            SD15_SAFETY_CHECKER,
            alternatives=(SAFETY_CHECKER_ALONE,),
        ),  # fmt: skip
        Weight(
            "curricularface",
            "φ, the paper's identity encoder (CurricularFace IR-101)",
            "MIT (CurricularFace)",
            CURRICULARFACE,
        ),  # fmt: skip
        Weight("retinaface", "face detector (used when present; MTCNN otherwise)", _FACEXLIB_LICENCE, RETINAFACE),
        Weight("bisenet", "face parser: face masks of training data", _FACEXLIB_LICENCE, BISENET),
        Weight("arcface", "second identity-encoder option (ArcFace IR-SE50)", _FACEXLIB_LICENCE, ARCFACE),
        Weight(
            "facenet-vggface2", "evaluation: Id Pres (FaceNet, VGGFace2)", "MIT (facenet-pytorch)", FACENET_VGGFACE2
        ),  # fmt: skip
        Weight("clip-vit-l14", "evaluation: CLIP-TI; the w/o-STEA ablation's φ", "MIT (OpenAI CLIP)", CLIP_VIT_L14),
        Weight("lcm-lora", "Fast mode: --scheduler lcm", "OpenRAIL++", LCM_LORA),
        Weight("blip", "captions: prepare_celebvt --captioner blip", "BSD-3-Clause", BLIP_CAPTIONER),
        Weight(
            "fastcomposer", "FastComposer, the published baseline (--identity-model fastcomposer)", "MIT", FASTCOMPOSER
        ),  # fmt: skip
        Weight(
            "controlnet-canny",
            "ControlNet SD 1.5, canny edges (annotator: OpenCV, no weights)",
            "OpenRAIL",
            CONTROLNET_CANNY,
        ),  # fmt: skip
        Weight("controlnet-openpose", "ControlNet SD 1.5, pose", "OpenRAIL", CONTROLNET_OPENPOSE),
        Weight(
            "openpose-annotator",
            "pose from a picture, for controlnet-openpose",
            "other (lllyasviel/Annotators)",
            OPENPOSE_ANNOTATOR,
        ),  # fmt: skip
        Weight("controlnet-depth", "ControlNet SD 1.5, depth", "OpenRAIL", CONTROLNET_DEPTH),
        Weight(
            "depth-annotator",
            "depth from a picture (DPT-Hybrid MiDaS), for controlnet-depth",
            "Apache-2.0",
            DEPTH_ANNOTATOR,
        ),  # fmt: skip
    )
}
