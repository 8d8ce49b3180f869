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
    pipe: PortraitBoothPipeline,
    photos: list[ImageInput | FaceAnalysis | FaceEncoding],
    threshold: float = SAME_PERSON_THRESHOLD,
) -> tuple[FaceEncoding, SelfieCheck, list[FaceAnalysis | None]]:
    """One person's identity from up to MAX_PHOTOS photos (or faces already encoded, as the app remembers a
    session's selfie), photos of someone else left out; the check; and each photo's face analysis (in order,
    flagged ones included; None for an encoded face) for previews."""
    if not 1 <= len(photos) <= MAX_PHOTOS:
        raise OptionError(f"Give one to {MAX_PHOTOS} photos of one person, got {len(photos)}")
    analyses: list[FaceAnalysis | None] = []
    for number, photo in enumerate(photos, start=1):
        try:
            if isinstance(photo, FaceEncoding):
                analyses.append(None)
            else:
                analyses.append(photo if isinstance(photo, FaceAnalysis) else pipe._face_analyzer().analyze(photo))
        except FaceError as error:
            raise type(error)(f"Photo {number}: {error}" if len(photos) > 1 else str(error)) from error
    encodings = [
        photo if analysis is None else pipe.encode_faces(analysis) for photo, analysis in zip(photos, analyses)
    ]
    check = check_photos(torch.cat([encoding.embedding.cpu() for encoding in encodings]).float(), threshold)
    kept = [encoding for index, encoding in enumerate(encodings) if index not in check.flagged]
    return averaged(kept), check, analyses


def averaged(encodings: list[FaceEncoding]) -> FaceEncoding:
    """One identity from several encodings of one person: mean feature, normalised mean embedding."""
    if len(encodings) == 1:
        return encodings[0]
    return FaceEncoding(
        features=torch.cat([encoding.features.cpu() for encoding in encodings]).mean(dim=0, keepdim=True),
        embedding=F.normalize(
            torch.cat([encoding.embedding.cpu() for encoding in encodings]).mean(dim=0, keepdim=True), dim=-1
        ),
        analyses=[analysis for encoding in encodings for analysis in encoding.analyses],
    )
