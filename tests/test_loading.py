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


def test_hub_offline_mode_keeps_weight_files_from_being_fetched(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE (set for the whole test session) stops every download, GitHub's included."""
    import huggingface_hub.constants

    import portrait.loading

    def no_asking(url, timeout=3.0):
        raise AssertionError(f"asked the network for {url}")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(portrait.loading, "host_reachable", no_asking)
    with pytest.raises(MissingWeightsError):
        resolve_weight_file(FACEXLIB_WEIGHTS["bisenet"], tmp_path)
