import pytest

from portrait.errors import MissingWeightsError
from portrait.loading import FACEXLIB_WEIGHTS, WEIGHTS_DIR_ENV, resolve_weight_file, weights_dir_or_default


def test_weights_folder_from_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_DIR_ENV, str(tmp_path / "env"))
    assert weights_dir_or_default(tmp_path / "arg") == tmp_path / "arg"
    assert weights_dir_or_default() == tmp_path / "env"


def test_present_file_is_used_without_network(tmp_path, offline):
    (tmp_path / "parsing_bisenet.pth").write_bytes(b"x")
    assert resolve_weight_file(FACEXLIB_WEIGHTS["bisenet"], tmp_path) == tmp_path / "parsing_bisenet.pth"


def test_missing_file_names_itself_its_folder_and_source(tmp_path, offline):
    with pytest.raises(MissingWeightsError) as error:
        resolve_weight_file(FACEXLIB_WEIGHTS["arcface"], tmp_path)
    message = str(error.value)
    assert "recognition_arcface_ir_se50.pth" in message and str(tmp_path) in message
    assert WEIGHTS_DIR_ENV in message and "releases/download" in message and "\n" not in message
