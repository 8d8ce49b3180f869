import pytest

from portrait.errors import PromptError
from portrait.presets import build_random_components
from portrait.prompts import EMOTION_WORDS, build_identity_prompt, build_subject_prompts, token_index, word_spans


@pytest.fixture(scope="module")
def tokenizer():
    return build_random_components()["tokenizer"]


def test_eleven_emotion_words():
    assert len(EMOTION_WORDS) == 11 and len(set(EMOTION_WORDS)) == 11


def test_whole_words_only():
    assert word_spans("a woman, a Man and a manly mannequin", "man") == [(11, 14)]


def test_first_identity_word_by_position():
    prompt = build_identity_prompt("a woman and a man at the beach")
    assert prompt.identity_word == "woman" and prompt.identity_span == (2, 7)


def test_chosen_occurrence():
    prompt = build_identity_prompt("a man and a man", identity_word="man", occurrence=1)
    assert prompt.identity_span == (12, 15)
    with pytest.raises(PromptError, match="occurrence 3"):
        build_identity_prompt("a man and a man", identity_word="man", occurrence=2)


def test_missing_identity_word_gets_prefix_and_notice():
    prompt = build_identity_prompt("  in   the snow ", identity_word="Woman")
    assert prompt.text == "a photo of a woman, in the snow"
    assert prompt.identity_span == (13, 18) and "did not name" in prompt.notice
    assert build_identity_prompt("", identity_word="man").text == "a photo of a man"


def test_no_identity_word_and_none_chosen_is_an_error():
    with pytest.raises(PromptError, match="names no subject"):
        build_identity_prompt("a castle at night")


def test_expression_goes_before_identity_word():
    prompt = build_identity_prompt("a photo of a woman in the snow", expression="happy")
    assert prompt.text == "a photo of a happy woman in the snow"
    assert prompt.text[slice(*prompt.expression_span)] == "happy"
    assert prompt.text[slice(*prompt.identity_span)] == "woman"


def test_expression_already_present_is_not_repeated():
    prompt = build_identity_prompt("a smiling man on a bike", expression="smiling")
    assert prompt.text == "a smiling man on a bike" and prompt.expression_span == (2, 9)


def test_unknown_expression_and_bad_identity_word():
    with pytest.raises(PromptError, match="choose one of"):
        build_identity_prompt("a man", expression="grumpy")
    with pytest.raises(PromptError, match="single word"):
        build_identity_prompt("a tall man", identity_word="tall man")


def test_overlong_prompt_is_refused():
    with pytest.raises(PromptError, match="characters long"):
        build_identity_prompt("a man " + "very " * 500)


def test_token_index_counts_the_start_token(tokenizer):
    text = "a photo of a woman"  # <start> a photo of a woman <end>
    assert token_index(tokenizer, text, (13, 18)) == 5
    ids = tokenizer(text).input_ids
    assert tokenizer.convert_ids_to_tokens(ids[5]) == "woman</w>"


def test_split_word_is_represented_by_its_last_piece(tokenizer):
    text = "a photo of a zyx"  # "zyx" is not in the tiny vocabulary: z, y, x</w>
    index = token_index(tokenizer, text, (13, 16))
    assert index == 7 and tokenizer.convert_ids_to_tokens(tokenizer(text).input_ids[index]) == "x</w>"


def test_html_and_emoji_do_not_break_positions(tokenizer):
    prompt = build_identity_prompt("<b>a woman</b> 😀 in the snow")
    index = token_index(tokenizer, prompt.text, prompt.identity_span)
    assert tokenizer.convert_ids_to_tokens(tokenizer(prompt.text).input_ids[index]) == "woman</w>"


def test_identity_word_past_the_token_limit(tokenizer):
    prompt = build_identity_prompt("snow " * 80 + "a man")
    with pytest.raises(PromptError, match="77-token"):
        token_index(tokenizer, prompt.text, prompt.identity_span)


def test_tiny_vocabulary_knows_its_words_as_single_tokens(tokenizer):
    from portrait.presets import TINY_WORDS

    assert [word for word in TINY_WORDS if len(tokenizer(word).input_ids) != 3] == []


def test_two_people_matched_by_order_of_appearance():
    first, second = build_subject_prompts("a photo of a man and a man in a bar", [None, None], [None, None])
    assert first.text == second.text and (first.identity_span, second.identity_span) == ((13, 16), (23, 26))


def test_explicit_words_take_their_own_occurrence():
    man, woman = build_subject_prompts("a woman and a man smiling", ["man", "woman"], [None, None])
    assert man.text[slice(*man.identity_span)] == "man" and man.identity_span == (14, 17)
    assert woman.identity_span == (2, 7)


def test_expression_per_person_keeps_every_span_right():
    man, woman = build_subject_prompts("a man and a woman at a bar", [None, None], ["happy", "sad"])
    assert man.text == "a happy man and a sad woman at a bar"
    for person, word, expression in ((man, "man", "happy"), (woman, "woman", "sad")):
        assert person.text[slice(*person.identity_span)] == word
        assert person.text[slice(*person.expression_span)] == expression


def test_same_expression_for_both_is_written_for_both():
    man, woman = build_subject_prompts("a man and a woman", [None, None], ["happy", "happy"])
    assert man.text == "a happy man and a happy woman"
    assert man.expression_span == (2, 7) and woman.expression_span == (18, 23)


def test_face_count_must_match_the_people_named():
    with pytest.raises(PromptError, match="3 faces were given but the prompt names 2 people \\(man, woman\\)"):
        build_subject_prompts("a man and a woman", [None] * 3, [None] * 3)
    with pytest.raises(PromptError, match="names 0 people"):
        build_subject_prompts("two cats", [None, None], [None, None])


def test_named_faces_are_placed_before_unnamed_ones():
    unnamed, man = build_subject_prompts("a man and a woman", [None, "man"], [None, None])
    assert (unnamed.identity_word, man.identity_word) == ("woman", "man")
