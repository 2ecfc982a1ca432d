"""Golden cases for every metric, worked by hand from each metric's definition (see eval/metrics.py)."""

from __future__ import annotations

import pytest

from vlmrecipes.eval import metrics as M


# --- thinking models -------------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, answer", [
    ("<think>maybe red?\nno, blue</think>\n\nblue", "blue"),
    ("the prompt opened it</think>yes", "yes"),     # Qwen3 templates put <think> in the prompt
    ("<think>cut off by max_new_tokens", ""),        # no answer yet
    ("plain answer", "plain answer"),
])
def test_strip_thinking(raw: str, answer: str) -> None:
    assert M.strip_thinking(raw) == answer


# --- VQAv2 normalisation: the rules on visualqa.org/evaluation.html, then the official vqaEval.py's quirks --
# (GT-Vision-Lab/VQA master, each case worked through its processPunctuation/processDigitArticle by hand)
@pytest.mark.parametrize("raw, normalised", [
    ("Yes.", "yes"),                       # lower-case, period removed
    ("2.5", "2.5"),                        # ... unless it is a decimal point
    ("5.", "5"),                           # (a period with no digit after it goes, as the official regex acts)
    ("two dogs", "2 dogs"),                # number words to digits
    ("none", "0"),
    ("the dog", "dog"),                    # articles dropped
    ("the cat.", "cat"),
    ("a red ball", "red ball"),
    ("dont know", "don't know"),           # contraction apostrophes restored
    ("Couldnt've", "couldn't've"),
    ("black-and-white", "black and white"),  # punctuation between words -> space
    ("red, white", "red white"),           # punctuation touching a space -> deleted
    ("1,000", "1000"),                     # comma between digits -> deleted
    ("man's hat", "man's hat"),            # apostrophe kept
    ("well\tdone\n", "well done"),         # "well" is a word, not "we'll"; tabs/newlines are spaces
    # the official script's quirks
    ("1,000 dogs, 2 cats", "1000 dogs 2 cats"),  # a digit comma anywhere: every mark is deleted, none spaced
    ("couldntve", "couldntve"),            # only forms missing one apostrophe are in the table
    ("'ows'at", "'ow's'at"),
    ("Im", "im"),                          # the keys "Im", "Ive" are capitalised and looked up lower-cased
    ("shes", "shes"),                      # "she's" maps only to itself
    ("somebody'd", "somebodyd"),           # the one reversed entry
    ("." * 34 + "x", "..x"),               # re.UNICODE is passed as sub's count: at most 32 periods go
])
def test_vqa_normalisation(raw: str, normalised: str) -> None:
    assert M.vqa_normalize(raw) == normalised


def test_vqa_accuracy_leave_one_out() -> None:
    # 3 of 10 humans said "2". Dropping one of those 3: 2 matches left -> 2/3; dropping one of the other 7:
    # 3 matches -> 1. Mean: (3 * 2/3 + 7 * 1) / 10 = 0.9 (min(#/3, 1) alone would say 1.0).
    answers = ["2"] * 3 + ["3"] * 7
    assert M.vqa_accuracy("Two.", answers) == pytest.approx(0.9)
    # 1 of 10: (1 * 0 + 9 * 1/3) / 10 = 0.3
    assert M.vqa_accuracy("3", ["3"] + ["4"] * 9) == pytest.approx(0.3)
    assert M.vqa_accuracy("4", ["4"] * 10) == 1.0
    assert M.vqa_accuracy("<think>hm</think>5", ["4"] * 10) == 0.0
    assert M.vqa_accuracy("Yes", ["yes"]) == 1.0  # a single reference: normalised exact match


def test_anls() -> None:
    # "hallo" vs "hello": 1 edit / 5 chars -> NL 0.2 -> 0.8; best over ground truths
    assert M.anls("hallo", ["hello", "goodbye"]) == pytest.approx(0.8)
    # "abc" vs "hello": 5 edits / 5 -> NL 1 >= 0.5 -> 0
    assert M.anls("abc", ["hello"]) == 0.0
    # "helo" vs "hello": 1/5 -> 0.8; case and spaces do not count
    assert M.anls("  HELO ", ["hello"]) == pytest.approx(0.8)
    # NL exactly 0.5 ("ab" vs "abcd": 2/4) is at the threshold -> 0
    assert M.anls("ab", ["abcd"]) == 0.0
    assert M.levenshtein("kitten", "sitting") == 3


# --- captions --------------------------------------------------------------------------------------------
def test_bleu4_and_rouge_l_by_hand() -> None:
    # hypothesis "a cat sits on the mat", reference "a cat sits on a mat" (6 tokens each, BP = 1)
    # clipped n-gram precisions: 5/6, 3/5, 2/4, 1/3 -> BLEU-4 = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    scores = M.caption_scores(["A cat sits on the mat."], [["a cat sits on a mat"]])
    assert scores["bleu4"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, rel=1e-6)
    # LCS = "a cat sits on mat" (5): P = R = 5/6, so F_beta = 5/6 for any beta
    assert scores["rouge_l"] == pytest.approx(5 / 6)


def test_cider_d() -> None:
    # Each caption equals its only reference and shares no n-gram with the other image: every n-gram has
    # idf log(2/1) > 0, cosine 1 for n = 1..4, no length penalty -> CIDEr-D = 10 * mean_n(1) = 10 per image.
    refs = [["red square on grass"], ["blue circle in water"]]
    assert M.caption_scores(["red square on grass", "blue circle in water"], refs)["cider"] == pytest.approx(10.0)
    # swapped captions share nothing with their references -> 0
    assert M.caption_scores(["blue circle in water", "red square on grass"], refs)["cider"] == 0.0


def test_chinese_captions_use_jieba_words() -> None:
    assert M.caption_tokens("一只猫坐在垫子上。") == ["一只", "猫", "坐在", "垫子", "上"]
    # one different word out of five -> unigram precision 4/5 (the characters would say 6/7)
    scores = M.caption_scores(["一只狗坐在垫子上"], [["一只猫坐在垫子上"]])
    assert 0 < scores["bleu4"] < 1 and scores["rouge_l"] == pytest.approx(4 / 5)


# --- emotion ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, label", [
    ("happy", "Happy"), ("HAPPINESS.", "Happy"), ("The person looks joyful.", "Happy"),
    ("<think>sad? no</think>Anger", "Angry"), ("furious", "Angry"), ("neutral", "Neutral"),
    ("a banana", None), ("", None),
])
def test_emotion_label_mapping(text: str, label: str | None) -> None:
    assert M.map_label(text, ["Neutral", "Happy", "Sad", "Angry"]) == label


def test_classification_scores_by_hand() -> None:
    gold = ["happy", "happy", "sad", "neutral"]
    pred = ["happy", "sad", "sad", M.UNMAPPED]
    s = M.classification_scores(gold, pred, ["happy", "sad", "neutral"])
    assert s["accuracy"] == 0.5
    # happy P 1/1 R 1/2 F 2/3; sad P 1/2 R 1/1 F 2/3; neutral P 0 R 0 F 0 -> macro-F1 4/9
    assert s["per_class"]["happy"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert s["per_class"]["sad"]["precision"] == 0.5
    assert s["macro_f1"] == pytest.approx(4 / 9)
    # weighted by gold support 2/1/1: (2 * 2/3 + 1 * 2/3 + 1 * 0) / 4 = 1/2
    assert s["weighted_f1"] == pytest.approx(1 / 2)


# --- multiple choice -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, letter", [
    ("B", "B"), ("(C)", "C"), ("D. a cat", "D"), ("The answer is (B).", "B"), ("Answer: c", None),
    ("answer: C", "C"), ("I think it is D", "D"), ("A cat is on the mat", None), ("A", "A"),
    ("The answer is a cat", None), ("<think>A or B?</think>B", "B"), ("no idea", None),
])
def test_extract_choice(text: str, letter: str | None) -> None:
    assert M.extract_choice(text, "ABCD") == letter


def test_extract_choice_by_option_text() -> None:
    assert M.extract_choice("it is the big dog", "ABC", ["cat", "dog", "big dog"]) == "C"  # longest match
