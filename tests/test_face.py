import numpy as np
import pytest
import torch
from PIL import Image

from portrait.errors import FaceTooSmallError, MissingWeightsError, NoFaceError
from portrait.face import (
    FACE_LABELS,
    FaceAnalyzer,
    FaceParser,
    RetinaFaceDetector,
    face_mask_from_labels,
    load_detector,
)
from portrait.face.detection import DetectedFace, MTCNNDetector
from portrait.face.parsing import _paste


def test_astronaut_has_exactly_one_face(analyzer, astronaut):
    image, faces = analyzer.detect(astronaut)
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    assert ((faces[0].landmarks >= [x0, y0]) & (faces[0].landmarks <= [x1, y1])).all()
    left_eye, right_eye = faces[0].landmarks[:2]
    assert left_eye[0] < right_eye[0]
    analysis = analyzer.analyze(astronaut)
    assert analysis.aligned.shape == (3, 112, 112) and analysis.aligned_image().size == (112, 112)
    assert analysis.num_faces == 1 and analysis.notice is None


def test_aligned_crop_puts_the_eyes_on_the_template(analyzer, astronaut):
    crop = analyzer.analyze(astronaut).aligned_image().resize((224, 224))
    faces = analyzer.detector.detect(crop)
    assert len(faces) == 1
    eyes = faces[0].landmarks[:2] / 2
    np.testing.assert_allclose(eyes, [[38.29, 51.70], [73.53, 51.50]], atol=6)  # detector noise


def test_blank_image_raises_no_face_with_its_size(analyzer):
    with pytest.raises(NoFaceError, match="300×200"):
        analyzer.analyze(Image.new("RGB", (300, 200), (128, 128, 128)))


def test_tiny_image_does_not_crash_the_detector(analyzer):
    with pytest.raises(NoFaceError, match="16×16"):
        analyzer.analyze(Image.new("RGB", (16, 16)))


def test_several_faces_use_the_largest_and_say_so(analyzer, astronaut):
    face = astronaut.crop((150, 30, 300, 210))
    canvas = Image.new("RGB", (700, 400), (200, 200, 200))
    canvas.paste(face.resize((90, 108)), (40, 150))
    canvas.paste(face, (400, 100))
    analysis = analyzer.analyze(canvas)
    assert analysis.num_faces == 2 and "largest" in analysis.notice
    assert analysis.face.box[0] > 350


def test_small_face_is_refused(astronaut):
    strict = FaceAnalyzer(MTCNNDetector(), min_face_pixels=150)
    with pytest.raises(FaceTooSmallError, match="at least 150 pixels"):
        strict.analyze(astronaut)


def test_face_mask_labels():
    labels = np.arange(19, dtype=np.uint8).reshape(1, 19)
    expected = np.zeros((1, 19), dtype=bool)
    expected[0, [1, 2, 3, 4, 5, 6, 10, 11, 12, 13]] = True
    np.testing.assert_array_equal(face_mask_from_labels(labels), expected)
    np.testing.assert_array_equal(face_mask_from_labels(torch.from_numpy(labels)).numpy(), expected)
    assert sorted(FACE_LABELS.values()) == [1, 2, 3, 4, 5, 6, 10, 11, 12, 13]


def test_paste_clips_at_the_borders():
    crop = np.arange(16, dtype=np.uint8).reshape(4, 4)
    canvas = _paste(crop, (-2, -1, 2, 3), (3, 3))
    np.testing.assert_array_equal(canvas, [[6, 7, 0], [10, 11, 0], [14, 15, 0]])


def test_parser_gives_a_full_size_mask(astronaut):
    from facexlib.parsing.bisenet import BiSeNet

    torch.manual_seed(0)
    parser = FaceParser(BiSeNet(num_class=19))
    face = DetectedFace((181.0, 62.0, 268.0, 172.0), np.zeros((5, 2), np.float32), 1.0)
    labels = parser.labels(astronaut, face)
    assert labels.shape == (512, 512) and labels.dtype == np.uint8 and labels.max() < 19
    assert labels[:, :80].max() == 0  # outside the square crop around the face
    assert parser.face_mask(astronaut, face).dtype == bool


def test_retinaface_loads_a_weights_only_checkpoint(tmp_path, astronaut):
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    state = RetinaFace(network_name="resnet50", device=torch.device("cpu")).state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "detection_Resnet50_Final.pth")
    detector = load_detector("auto", weights_dir=tmp_path)
    assert isinstance(detector, RetinaFaceDetector)
    faces = detector.detect(astronaut.resize((128, 128)))
    assert all(face.landmarks.shape == (5, 2) for face in faces)


def test_auto_detector_without_weights_is_mtcnn_and_missing_retinaface_is_named(tmp_path, offline):
    assert isinstance(load_detector("auto", weights_dir=tmp_path), MTCNNDetector)
    with pytest.raises(MissingWeightsError, match="detection_Resnet50_Final.pth"):
        load_detector("retinaface", weights_dir=tmp_path)


def test_batched_detection_matches_one_by_one(analyzer, astronaut):
    images = [
        astronaut,
        Image.new("RGB", (512, 512), "white"),
        astronaut.transpose(Image.FLIP_LEFT_RIGHT),
        astronaut.resize((300, 300)),
    ]
    batched = analyzer.detect_many(images)
    single = [analyzer.detect(image)[1] for image in images]
    assert [len(faces) for faces in batched] == [len(faces) for faces in single] == [1, 0, 1, 1]
    for many, one in zip(batched, single):
        for a, b in zip(many, one):
            np.testing.assert_allclose(a.box, b.box, atol=0.5)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.5)


def test_auto_detector_without_facenet_pytorch_asks_for_retinaface(tmp_path, offline, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "facenet_pytorch" else real_find_spec(name, *a)
    )
    with pytest.raises(MissingWeightsError, match="detection_Resnet50_Final.pth"):
        load_detector("auto", weights_dir=tmp_path)


def test_parsing_crop_is_square_for_any_box():
    from portrait.face.parsing import face_crop_box

    for box in ((60, 60, 140, 141), (10.4, 3.3, 90.9, 120.2), (0.0, 0.0, 1.0, 1.0)):
        x0, y0, x1, y1 = face_crop_box(DetectedFace(box, np.zeros((5, 2), np.float32), 1.0))
        assert x1 - x0 == y1 - y0 > 0


def test_huge_photos_are_searched_small_and_answered_in_full_pixels(analyzer, astronaut):
    big = astronaut.resize((2048, 2048))
    (face,) = analyzer.detect(big)[1]
    (small,) = analyzer.detect(astronaut)[1]
    np.testing.assert_allclose(np.array(face.box) / 4, small.box, atol=4)
    assert analyzer.analyze(big).aligned.shape == (3, 112, 112)
