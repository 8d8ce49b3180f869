"""Several photos of one person: each checked against the others before their identities are averaged.

A photo of someone else among a person's photos would pull the averaged identity towards a stranger, so
each photo's recognition embedding (φ's, normalised) is compared with the mean of the others' (cosine
similarity). A photo under SAME_PERSON_THRESHOLD is flagged with a sentence and left out of the average.
0.35 is a conventional decision point for ArcFace-type embeddings (pairs of one person usually score above
it, different people below); it is not tuned on this project's data. Two photos that do not match each
other cannot say which is the stranger: the first (the main selfie) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import FaceError, OptionError
from .face.analyzer import FaceAnalysis
from .images import ImageInput
from .pipeline import FaceEncoding, PortraitBoothPipeline

SAME_PERSON_THRESHOLD = 0.35
MAX_PHOTOS = 4


@dataclass(frozen=True)
class SelfieCheck:
    similarities: list[float | None]  # each photo's similarity to the mean of the others (None: one photo only)
    flagged: list[int]  # photos left out of the average, 0-based
    threshold: float = SAME_PERSON_THRESHOLD

    def sentences(self) -> list[str]:
        return [
            f"Photo {index + 1} does not look like the same person as the others (identity similarity "
            f"{self.similarities[index]:.2f}, under {self.threshold:.2f}): it was left out of the average."
            for index in self.flagged
        ]


def similarities_to_the_others(embeddings: torch.Tensor) -> list[float | None]:
    """Cosine similarity of each (normalised) embedding with the mean of the others."""
    count = embeddings.shape[0]
    if count == 1:
        return [None]
    total = embeddings.sum(dim=0, keepdim=True)
    others = F.normalize(total - embeddings, dim=-1)  # row i: the mean direction of every photo but i
    return [float(value) for value in (embeddings * others).sum(dim=-1)]


def check_photos(embeddings: torch.Tensor, threshold: float = SAME_PERSON_THRESHOLD) -> SelfieCheck:
    """Which photos (rows of normalised recognition embeddings) to leave out, and why."""
    similarities = similarities_to_the_others(embeddings)
    flagged = [index for index, value in enumerate(similarities) if value is not None and value < threshold]
    if len(similarities) == 2 and flagged:
        flagged = [1]  # two photos that differ: keep the main selfie
    return SelfieCheck(similarities, flagged, threshold)


def encode_checked(
    pipe: PortraitBoothPipeline, photos: list[ImageInput | FaceAnalysis], threshold: float = SAME_PERSON_THRESHOLD
) -> tuple[FaceEncoding, SelfieCheck, list[FaceAnalysis]]:
    """One person's identity from up to MAX_PHOTOS photos, photos of someone else left out; the check; and each
    photo's face analysis (in order, flagged ones included) for previews."""
    if not 1 <= len(photos) <= MAX_PHOTOS:
        raise OptionError(f"Give one to {MAX_PHOTOS} photos of one person, got {len(photos)}")
    analyses = []
    for number, photo in enumerate(photos, start=1):
        try:
            analyses.append(photo if isinstance(photo, FaceAnalysis) else pipe._face_analyzer().analyze(photo))
        except FaceError as error:
            raise type(error)(f"Photo {number}: {error}" if len(photos) > 1 else str(error)) from error
    embeddings = torch.cat([pipe.encode_faces(analysis).embedding for analysis in analyses])
    check = check_photos(embeddings.float(), threshold)
    kept = [analysis for index, analysis in enumerate(analyses) if index not in check.flagged]
    return pipe.encode_faces(kept), check, analyses
