"""Several selfies in the app: every photo's face previewed, and a photo of someone else flagged before generating."""

from __future__ import annotations

from portrait.selfies import encode_checked

from .errors import user_errors
from .handlers import PortraitService
from .previews import face_preview


class SelfieChecks:
    def __init__(self, service: PortraitService):
        self.service = service

    @user_errors
    def check(
        self, face: object = None, more_faces: list | None = None, remembered_face: str | None = None
    ) -> tuple[list, str]:
        """A preview of each further photo's face, captioned with how well it matches the others, and a note;
        the main selfie takes part through the encoding the session remembers (its photo is not kept)."""
        (selfie,) = self.service._faces([face], [remembered_face], ["your main"])
        more = self.service.more_photos(more_faces)
        _, checked, analyses = encode_checked(self.service.pipe, [selfie.encoding(), *more])
        gallery = [
            (face_preview(analysis), _caption(index, similarity, index in checked.flagged))
            for index, (analysis, similarity) in enumerate(zip(analyses, checked.similarities))
            if analysis is not None
        ]
        sentences = checked.sentences()
        return gallery, " ".join(sentences) or f"{len(analyses)} photo(s) of one person: their identities are averaged."


def _caption(index: int, similarity: float | None, flagged: bool) -> str:
    if similarity is None:
        return f"photo {index + 1}"
    return f"photo {index + 1} · similarity {similarity:.2f} · {'left out' if flagged else 'kept'}"
