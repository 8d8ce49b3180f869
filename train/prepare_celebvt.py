"""CelebV-Text → single-subject training pairs (docs/method.md, "Data").

    python -m train.prepare_celebvt --celebvt ROOT --out DIR [--workers N] [--shard i/n] [--limit N]

ROOT holds `videos/<clip_id>.mp4` and `texts/<category>/<clip_id>.txt` as the dataset ships them.
Per video: the target frame is the first or the last frame (a seeded coin per clip, recorded), the
reference is a random frame of the middle half; both are read by seeking, not by decoding the video.
A clip is skipped, with its reason, when it cannot be read, has no face or several faces of similar
size, a face below the minimum size, a reference of another person (when an identity encoder is
given), or texts that do not say whether the subject is a man or a woman.

Faces are detected for a batch of clips at once (`--batch-size`; frames of one size form one MTCNN
batch, on the GPU when there is one); everything else runs per clip.

Output (train/data_format.py): DIR/manifest.jsonl (or manifest-i-of-n.jsonl per shard), the files in
sharded folders, DIR/skipped*.jsonl, and a summary printed and written to DIR/summary.json. A rerun
skips every clip already kept or skipped, so a killed run continues where it stopped and a finished
set is left as it is.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import multiprocessing
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from portrait.defaults import DEFAULT_DETECTOR, DEFAULT_IDENTITY_ENCODER, DETECTORS
from portrait.errors import DataError, MissingWeightsError
from portrait.exits import CommandParser, positive_int
from portrait.exits import run as run_command
from portrait.face.analyzer import FaceAnalysis, FaceAnalyzer
from portrait.face.detection import DetectedFace
from portrait.face.parsing import FaceParser, face_mask_from_labels
from portrait.files import write_text
from portrait.identity.encoder import IdentityEncoder
from portrait.loading import FACEXLIB_WEIGHTS, resolve_weight_file, weights_dir_or_default
from portrait.prompts import build_identity_prompt

from .celebvt_text import SubjectWord, Texts, expression_at, load_captioner, read_texts, subject_word
from .data_format import MANIFEST, Sample, append_jsonl, manifest_files, read_jsonl, read_manifest, write_sample_files

logger = logging.getLogger("prepare")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")


@dataclass
class PrepareOptions:
    seed: int = 0
    min_face: int = 64  # pixels, shorter side of the face box in the source frame
    similar_face_ratio: float = 0.5  # a second face at least this fraction of the largest's area: skip
    same_person_threshold: float = 0.3  # cosine of φ embeddings, target vs reference
    mask: str = "bisenet"  # "bisenet" (face parsing) or "landmarks" (ellipse; no weights needed)
    detector: str = DEFAULT_DETECTOR
    identity_checkpoint: str | None = None  # enables the same-person check
    identity_encoder: str = DEFAULT_IDENTITY_ENCODER
    weights_dir: str | None = None
    captioner: str = "annotation"  # or "module:Class" (train/celebvt_text.py, load_captioner)


@dataclass
class ClipFrames:
    """A clip's two frames and texts, read and ready for face detection."""

    clip_id: str
    target: Image.Image
    reference: Image.Image
    target_index: int
    reference_index: int
    at_end: bool
    texts: Texts  # with the encodings of files that were not UTF-8
    subject: SubjectWord


@dataclass
class Outcome:
    clip_id: str
    sample: dict | None = None
    reason: str | None = None
    detail: str = ""


def parse_shard(text: str) -> tuple[int, int]:
    index, count = (int(v) for v in text.split("/"))
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard i/n needs 0 ≤ i < n, got {text}")
    return index, count


def list_clips(root: Path, shard: tuple[int, int]) -> list[Path]:
    """This shard's videos: a stable split by clip-id hash, so shards never overlap."""
    videos = sorted(p for p in (root / "videos").rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    index, count = shard
    return [video for video in videos if _stable_hash(video.stem) % count == index]


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def read_frame(capture: cv2.VideoCapture, index: int) -> Image.Image | None:
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    return Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)) if ok else None


def pick_frames(clip_id: str, frame_count: int, seed: int) -> tuple[int, int, bool]:
    """(target index, reference index, target at the end): a pure function of (seed, clip)."""
    rng = np.random.default_rng((seed, _stable_hash(clip_id)))
    at_end = bool(rng.random() < 0.5)
    target = frame_count - 1 if at_end else 0
    low, high = frame_count // 4, max(frame_count // 4 + 1, (3 * frame_count) // 4)
    return target, int(rng.integers(low, high)), at_end


class ClipProcessor:
    """Turns clips into samples or skip reasons; one per worker process (models load once)."""

    def __init__(self, root: Path, out: Path, options: PrepareOptions, device: str):
        self.root, self.out, self.options = root, out, options
        self.analyzer = FaceAnalyzer.load(options.detector, weights_dir=options.weights_dir, device=device)
        self.parser = FaceParser.load(options.weights_dir, device) if options.mask == "bisenet" else None
        self.encoder = None
        if options.identity_checkpoint:
            self.encoder = IdentityEncoder.from_checkpoint(
                options.identity_encoder, "embedding", options.identity_checkpoint, options.weights_dir
            ).to(device)
        self.captioner = load_captioner(options.captioner)

    def process(self, videos: list[Path]) -> list[Outcome]:
        """Read every clip's two frames, detect faces in all of them in one batch, then finish each clip."""
        opened = [_guarded(video.stem, self._open, video) for video in videos]
        clips = [clip for clip in opened if isinstance(clip, ClipFrames)]
        frames = [clip.target for clip in clips] + [clip.reference for clip in clips]
        try:
            faces = self.analyzer.detect_many(frames)
        except Exception:  # noqa: BLE001 - one bad frame must not sink its batch: detect each clip alone
            faces = [_guarded("detection", self.analyzer.detect_many, [frame]) for frame in frames]
            faces = [found[0] if isinstance(found, list) else found for found in faces]
        finished = {}
        for i, clip in enumerate(clips):
            target_faces, reference_faces = faces[i], faces[len(clips) + i]
            failed = next((found for found in (target_faces, reference_faces) if isinstance(found, Outcome)), None)
            finished[clip.clip_id] = (
                Outcome(clip.clip_id, reason="error", detail=failed.detail)
                if failed
                else _guarded(clip.clip_id, self._finish, clip, target_faces, reference_faces)
            )
        return [finished[clip.clip_id] if isinstance(clip, ClipFrames) else clip for clip in opened]

    def _open(self, video: Path) -> ClipFrames | Outcome:
        clip_id = video.stem
        capture = cv2.VideoCapture(str(video))
        try:
            frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
            if frame_count < 2:
                return Outcome(clip_id, reason="unreadable", detail="no frames could be read")
            target_index, reference_index, at_end = pick_frames(clip_id, frame_count, self.options.seed)
            target = self._read_near(capture, target_index, -1 if at_end else 1)
            reference = read_frame(capture, reference_index)
        finally:
            capture.release()
        if target is None or reference is None:
            return Outcome(clip_id, reason="unreadable", detail="frames could not be decoded")
        texts = read_texts(self.root, clip_id)
        subject = subject_word(texts)
        if subject.word is None:
            return Outcome(clip_id, reason="unknown_subject_word")
        return ClipFrames(clip_id, target, reference, target_index, reference_index, at_end, texts, subject)

    def _finish(
        self, clip: ClipFrames, target_faces: list[DetectedFace], reference_faces: list[DetectedFace]
    ) -> Outcome:
        clip_id = clip.clip_id
        for faces, which in ((target_faces, "target frame"), (reference_faces, "reference frame")):
            reason = self._single_face_problem(faces)
            if reason:
                return Outcome(clip_id, reason=reason, detail=which)
        target_face = target_faces[0]
        reference_analysis = self.analyzer.analysis_of(clip.reference, reference_faces)
        similarity = self._similarity(self.analyzer.analysis_of(clip.target, target_faces), reference_analysis)
        if similarity is not None and similarity < self.options.same_person_threshold:
            return Outcome(clip_id, reason="different_person", detail=f"similarity {similarity:.2f}")
        word = clip.subject.word
        expression = expression_at(clip.texts, clip.at_end)
        prompt = build_identity_prompt(
            self.captioner.caption(clip.target, clip.texts, word), word, expression=expression
        )
        mask, person_mask = self._masks(clip.target, target_face)
        shard = f"{_stable_hash(clip_id) % 256:02x}"
        sample = Sample(
            id=clip_id,
            image=f"{shard}/{clip_id}.png",
            mask=f"{shard}/{clip_id}.mask.png",
            reference=f"{shard}/{clip_id}.ref.png",
            person_mask=f"{shard}/{clip_id}.person.png" if person_mask is not None else None,
            caption=prompt.text,
            identity_word=word,
            identity_span=prompt.identity_span,
            expression=prompt.expression,
            expression_span=prompt.expression_span,
            landmarks=np.round(target_face.landmarks, 2).tolist(),
            meta={
                "target_frame": "last" if clip.at_end else "first",
                "target_index": clip.target_index,
                "reference_index": clip.reference_index,
                "identity_word_source": clip.subject.source,
                "caption_source": self.captioner.name,
                "face_box": [round(v, 1) for v in target_face.box],
                "same_person_similarity": None if similarity is None else round(similarity, 3),
                **({"text_encodings": clip.texts.fallbacks} if clip.texts.fallbacks else {}),
            },
        )
        write_sample_files(self.out, sample, clip.target, mask, reference_analysis.aligned_image(), person_mask)
        return Outcome(clip_id, sample=dataclasses.asdict(sample))

    @staticmethod
    def _read_near(capture: cv2.VideoCapture, index: int, direction: int) -> Image.Image | None:
        """The frame at `index`, or the nearest readable one a few frames inward (frame counts lie)."""
        for offset in range(8):
            frame = read_frame(capture, index + direction * offset)
            if frame is not None:
                return frame
        return None

    def _single_face_problem(self, faces: list[DetectedFace]) -> str | None:
        """Why these faces (largest first) do not make one usable subject; None when they do."""
        if not faces:
            return "no_face"
        if len(faces) > 1 and faces[1].area >= self.options.similar_face_ratio * faces[0].area:
            return "several_faces"
        if min(faces[0].width, faces[0].height) < self.options.min_face:
            return "face_too_small"
        return None

    def _similarity(self, target: FaceAnalysis, reference: FaceAnalysis) -> float | None:
        if self.encoder is None:
            return None
        aligned = torch.stack([target.aligned, reference.aligned]).to(self.encoder.device, self.encoder.dtype)
        with torch.no_grad():
            embedding = self.encoder(aligned).embedding
        return float(embedding[0] @ embedding[1])

    def _masks(self, frame: Image.Image, face: DetectedFace) -> tuple[Image.Image, Image.Image | None]:
        if self.parser is None:
            return landmark_mask(frame.size, face), None
        labels = self.parser.labels(frame, face)
        face_mask = face_mask_from_labels(labels)
        return Image.fromarray(face_mask.astype(np.uint8) * 255), Image.fromarray((labels > 0).astype(np.uint8) * 255)


def landmark_mask(size: tuple[int, int], face: DetectedFace) -> Image.Image:
    """An ellipse through the face box: the stand-in for a parsing mask when no parser weights exist."""
    mask = Image.new("L", size, 0)
    x0, y0, x1, y1 = face.box
    ImageDraw.Draw(mask).ellipse((x0, y0 + 0.05 * (y1 - y0), x1, y1), fill=255)
    return mask


def _guarded(clip_id: str, work, *args):
    """Run one clip's step; an exception becomes that clip's skip reason instead of stopping the set."""
    try:
        return work(*args)
    except Exception as error:  # noqa: BLE001 - listed in skipped.jsonl with its message
        logger.debug("clip %s failed", clip_id, exc_info=True)
        return Outcome(clip_id, reason="error", detail=f"{type(error).__name__}: {error}")


def check_weights(options: PrepareOptions) -> None:
    """Every weight file the clip processors will load is here (or downloadable), else one clear error."""
    folder = weights_dir_or_default(options.weights_dir)
    if options.mask == "bisenet":
        try:
            resolve_weight_file(FACEXLIB_WEIGHTS["bisenet"], folder)
        except MissingWeightsError as error:
            raise MissingWeightsError(
                f"{error}; or use --mask landmarks (an ellipse from the landmarks, no weights)"
            ) from None
    if options.detector == "retinaface":
        resolve_weight_file(FACEXLIB_WEIGHTS["retinaface"], folder)
    if options.identity_checkpoint and not Path(options.identity_checkpoint).is_file():
        raise MissingWeightsError(f"--identity-checkpoint {options.identity_checkpoint} does not exist")


_processor: ClipProcessor | None = None


def _init_worker(root: Path, out: Path, options: PrepareOptions, device: str) -> None:
    global _processor
    torch.set_num_threads(1)
    _processor = ClipProcessor(root, out, options, device)


def _run_batch(videos: list[Path]) -> list[Outcome]:
    return _processor.process(videos)


def done_clips(out: Path) -> set[str]:
    kept = {sample.id for sample in read_manifest(out)} if manifest_files(out) else set()
    return kept | {row["clip_id"] for row in read_jsonl(out.glob("skipped*.jsonl"))}


def write_summary(out: Path) -> dict:
    """Counts over everything in DIR (all shards): kept, skipped by reason, word and emotion histograms."""
    samples = read_manifest(out) if manifest_files(out) else []
    skipped = read_jsonl(out.glob("skipped*.jsonl"))
    summary = {
        "kept": len(samples),
        "skipped": dict(Counter(row["reason"] for row in skipped)),
        "identity_words": dict(Counter(sample.identity_word for sample in samples)),
        "expressions": dict(Counter(sample.expression or "none" for sample in samples)),
        "unreadable_or_failed": sorted(row["clip_id"] for row in skipped if row["reason"] in ("unreadable", "error")),
    }
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def prepare(
    root: Path,
    out: Path,
    options: PrepareOptions,
    workers: int = 1,
    shard: tuple[int, int] = (0, 1),
    limit: int | None = None,
    batch_size: int = 8,
) -> dict:
    if not (root / "videos").is_dir():
        raise DataError(f"{root} has no videos/ folder: --celebvt takes the folder holding videos/ and texts/")
    out.mkdir(parents=True, exist_ok=True)
    suffix = "" if shard == (0, 1) else f"-{shard[0]}-of-{shard[1]}"
    manifest, skipped = out / MANIFEST.replace(".jsonl", f"{suffix}.jsonl"), out / f"skipped{suffix}.jsonl"
    finished = done_clips(out)
    todo = [video for video in list_clips(root, shard) if video.stem not in finished]
    if limit is not None:
        todo = todo[:limit]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    batches = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
    if batches:
        check_weights(options)  # here, at once: a worker that cannot start would only be started again
        bar = tqdm(total=len(todo), desc="videos", unit="video")
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(root, out, options, device)
            ) as pool:
                for outcomes in pool.map(_run_batch, batches):
                    _record(outcomes, manifest, skipped, bar)
        else:
            processor = ClipProcessor(root, out, options, device)
            for batch in batches:
                _record(processor.process(batch), manifest, skipped, bar)
        bar.close()
    return write_summary(out)


def _record(outcomes: list[Outcome], manifest: Path, skipped: Path, bar) -> None:
    for outcome in outcomes:
        if outcome.sample is not None:
            append_jsonl(manifest, outcome.sample)
        else:
            append_jsonl(skipped, {"clip_id": outcome.clip_id, "reason": outcome.reason, "detail": outcome.detail})
        bar.update()


def main(argv: list[str] | None = None) -> dict:
    parser = CommandParser(
        prog="python -m train.prepare_celebvt", description="CelebV-Text → PortraitBooth training pairs"
    )
    parser.add_argument("--celebvt", required=True, type=Path, help="folder with videos/ and texts/")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--workers", type=positive_int, default=1)
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: this machine's share")
    parser.add_argument("--limit", type=positive_int, help="at most N new videos in this run")
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="videos whose frames share one detector batch"
    )
    parser.add_argument("--mask", choices=["bisenet", "landmarks"], default="bisenet")
    parser.add_argument("--detector", choices=DETECTORS, default=DEFAULT_DETECTOR)
    parser.add_argument("--identity-checkpoint", help="φ checkpoint: enables the same-person check")
    parser.add_argument("--min-face", type=positive_int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights-dir")
    parser.add_argument(
        "--captioner",
        default="annotation",
        help="'annotation' (the dataset's texts), 'blip', or module:Class of a Captioner",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    options = PrepareOptions(
        seed=args.seed,
        min_face=args.min_face,
        mask=args.mask,
        detector=args.detector,
        identity_checkpoint=args.identity_checkpoint,
        weights_dir=args.weights_dir,
        captioner=args.captioner,
    )
    summary = prepare(args.celebvt, args.out, options, args.workers, args.shard, args.limit, args.batch_size)
    skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(summary["skipped"].items())) or "none"
    print(f"kept {summary['kept']}; skipped: {skipped}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(run_command(main, prog="python -m train.prepare_celebvt"))
