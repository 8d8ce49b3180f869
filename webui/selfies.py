"""Several selfies in the app: every photo's face previewed, and a photo of someone else flagged before generating."""

from __future__ import annotations

import gradio as gr
from PIL import Image

from portrait.selfies import encode_checked

from .errors import user_errors
from .handlers import PortraitService
from .previews import face_preview


class SelfieChecks:
    def __init__(self, service: PortraitService):
        self.service = service

    @user_errors
    def check(
        self, face: str | bytes | None, more_faces: list[str] | None, remembered_face: Image.Image | None = None
    ) -> tuple[list, str]:
        """A preview of each photo's face, captioned with how well it matches the others, and a note."""
        (photo,) = self.service.uploads.read([face])
        photo = photo or remembered_face
        more = self.service.more_photos(more_faces)
        if photo is None:
            raise gr.Error("Upload your main selfie first.")
        _, checked, analyses = encode_checked(self.service.pipe, [photo, *more])
        gallery = [
            (face_preview(analysis), _caption(index, similarity, index in checked.flagged))
            for index, (analysis, similarity) in enumerate(zip(analyses, checked.similarities))
        ]
        sentences = checked.sentences()
        return gallery, " ".join(sentences) or f"{len(analyses)} photo(s) of one person: their identities are averaged."


def _caption(index: int, similarity: float | None, flagged: bool) -> str:
    if similarity is None:
        return f"photo {index + 1}"
    return f"photo {index + 1} · similarity {similarity:.2f} · {'left out' if flagged else 'kept'}"
