"""The BLIP captioner for data preparation, on a tiny random BLIP built here: the subject word is always there."""

from __future__ import annotations

import pytest
import torch

from portrait.errors import MissingWeightsError
from portrait.prompts import word_spans
from train.blip_captioner import BlipCaptioner, with_subject
from train.celebvt_text import load_captioner

WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "photo",
    "of",
    "man",
    "woman",
    "with",
    "hair",
    "in",
    "the",
    "snow",
]


@pytest.mark.parametrize(
    ("caption", "word", "expected"),
    [
        ("a photo of a woman with long hair", "man", "a photo of a man with long hair"),
        ("a photo of a guy in the snow", "man", "a photo of a man in the snow"),
        ("a photo of a person and a dog", "woman", "a photo of a woman and a dog"),
        ("a photo of a kitchen", "woman", "a photo of a woman, a photo of a kitchen"),
        ("", "man", "a photo of a man"),
        ("a photo of a woman   smiling", "woman", "a photo of a woman smiling"),
    ],
)
def test_the_subject_word_is_always_in_the_caption(caption, word, expected):
    assert with_subject(caption, word) == expected


def tiny_blip(folder):
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    tokenizer = BertTokenizer.from_pretrained(folder)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                bos_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.sep_token_id)  # fmt: skip
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=32))
    return model, BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )


def test_a_tiny_blip_captions_a_frame_with_the_subject_word(tmp_path, astronaut):
    model, processor = tiny_blip(tmp_path)
    captioner = BlipCaptioner(model, processor, max_new_tokens=6)
    for word in ("man", "woman"):
        caption = captioner.caption(astronaut, {}, word)
        assert caption.startswith("a photo of") and word_spans(caption, word), caption
    assert captioner.name == "blip"


def test_blip_without_its_weights_says_what_is_missing(offline):
    with pytest.raises(MissingWeightsError, match="Salesforce/blip-image-captioning-base"):
        load_captioner("blip")
