"""The paper's metrics and the combined scores later papers report.

- Id Pres: cosine of FaceNet (InceptionResnetV1, VGGFace2) embeddings of MTCNN crops of the reference
  and the generated image; 0 when no face is found in the generated image.
- CLIP-TI: cosine of CLIP ViT-L/14 image and text embeddings.
- Expression coefficient: CLIP similarity of the emotion word and the image.
- ID(P): identity counted only when CLIP-TI ≥ 0.23; HM / GM: harmonic / geometric mean of identity and
  text scores.
Real networks load from local files or the hub; `MetricModels.tiny()` builds the same architectures with
random weights, for tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from portrait.loading import resolve_model, resolve_weight_file
from portrait.weights import CLIP_VIT_L14, FACENET_VGGFACE2

TEXT_THRESHOLD = 0.23  # ID(P): identity counts only where the image follows the text this well


def greedy_match(similarity: np.ndarray) -> list[tuple[int, int, float]]:
    """Match generated faces (rows) to references (columns), best pair first, each used once.

    Ties go to the earlier row, then the earlier column. Returns (face, reference, similarity).
    """
    similarity = np.array(similarity, dtype=np.float64)
    matches = []
    while similarity.size and np.isfinite(similarity).any():
        face, reference = np.unravel_index(
            np.nanargmax(np.where(np.isfinite(similarity), similarity, -np.inf)), similarity.shape
        )
        matches.append((int(face), int(reference), float(similarity[face, reference])))
        similarity[face, :] = -np.inf
        similarity[:, reference] = -np.inf
    return matches


def pair_score(similarity: np.ndarray, references: int) -> float:
    """A multi-subject image's identity score: its worst matched reference, at least 0 (0 if one is unmatched).

    `similarity` rows are every face detected in the generated image, columns the references: all
    faces take part in the greedy matching, as the paper describes its multi-subject protocol.
    """
    matched = {reference: value for _, reference, value in greedy_match(np.asarray(similarity))}
    return max(0.0, min(matched.get(reference, 0.0) for reference in range(references)))


def id_p(identity: float, text: float) -> float:
    return identity if text >= TEXT_THRESHOLD else 0.0


def harmonic_mean(identity: float, text: float) -> float:
    identity = max(identity, 0.0)
    return 0.0 if identity + text <= 0 else 2 * identity * text / (identity + text)


def geometric_mean(identity: float, text: float) -> float:
    return math.sqrt(max(identity, 0.0) * max(text, 0.0))


@dataclass
class MetricModels:
    detector: object  # facenet_pytorch.MTCNN returning 160×160 crops
    facenet: torch.nn.Module
    clip: torch.nn.Module
    clip_tokenizer: object
    clip_processor: object
    device: torch.device

    @classmethod
    def load(cls, weights_dir: str | Path | None = None, device: str = "cpu") -> "MetricModels":
        from facenet_pytorch import InceptionResnetV1
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        facenet = InceptionResnetV1(classify=False).eval()
        state = torch.load(resolve_weight_file(FACENET_VGGFACE2, weights_dir), map_location="cpu", weights_only=True)
        facenet.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
        folder = resolve_model(CLIP_VIT_L14, "CLIP ViT-L/14")
        clip = CLIPModel.from_pretrained(folder).eval()
        return cls(_mtcnn(device), facenet.to(device), clip.to(device), CLIPTokenizer.from_pretrained(folder),
                   CLIPImageProcessor.from_pretrained(folder), torch.device(device))  # fmt: skip

    @classmethod
    def tiny(cls, seed: int = 0) -> "MetricModels":
        """The same architectures with random weights (FaceNet full size, CLIP at toy size)."""
        from facenet_pytorch import InceptionResnetV1
        from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

        from portrait.identity.clip_features import TINY_VISION
        from portrait.presets import PRESETS, tiny_tokenizer

        tokenizer = tiny_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            facenet = InceptionResnetV1(classify=False).eval()
            text_config = dict(PRESETS["tiny"].text_encoder, vocab_size=len(tokenizer), max_position_embeddings=77,
                               bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            vision_config = {k: v for k, v in TINY_VISION.items() if k != "projection_dim"}
            config = CLIPConfig(
                text_config=text_config, vision_config=vision_config, projection_dim=TINY_VISION["projection_dim"]
            )
            clip = CLIPModel(config).eval()
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return cls(_mtcnn("cpu"), facenet, clip, tokenizer, processor, torch.device("cpu"))

    @torch.no_grad()
    def faces(self, image: Image.Image) -> torch.Tensor:
        """FaceNet embeddings (N, 512), L2-normalised, of every face MTCNN finds, largest first (N may be 0)."""
        if min(image.size) < 20:
            return torch.zeros(0, 512)
        crops = self.detector(image.convert("RGB"))
        if crops is None:
            return torch.zeros(0, 512)
        return F.normalize(self.facenet(crops.to(self.device)), dim=-1).cpu()

    @torch.no_grad()
    def clip_similarity(self, image: Image.Image, texts: list[str]) -> list[float]:
        pixels = self.clip_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values.to(self.device)
        tokens = self.clip_tokenizer(texts, padding=True, truncation=True, return_tensors="pt").to(self.device)
        image_embeds = F.normalize(_features(self.clip.get_image_features(pixel_values=pixels)), dim=-1)
        text_embeds = F.normalize(_features(self.clip.get_text_features(**tokens)), dim=-1)
        return (text_embeds @ image_embeds.T)[:, 0].tolist()

    def identity(self, generated: Image.Image, reference_embedding: torch.Tensor) -> tuple[float, bool]:
        """Id Pres of one image: the largest face's cosine to the reference, at least 0; and whether a
        face was found (FastComposer's protocol, which the paper follows)."""
        found = self.faces(generated)
        if found.shape[0] == 0:
            return 0.0, False
        return max(0.0, float(found[0] @ reference_embedding)), True


def _features(output) -> torch.Tensor:
    """transformers returns a tensor or, in newer versions, an output object holding the pooled features."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _mtcnn(device: str):
    from facenet_pytorch import MTCNN

    return MTCNN(
        image_size=160, margin=0, keep_all=True, select_largest=True, post_process=True, device=torch.device(device)
    )
