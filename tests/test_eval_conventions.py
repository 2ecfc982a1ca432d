"""The published medical-VQA scoring conventions (eval/medvqa.py) on hand-checked cases, each case named by
the quirk of the published scorer it pins; and the emotion label sets."""

from __future__ import annotations

import pytest

from vlmrecipes.eval import medvqa as MV
from vlmrecipes.eval import metrics as M
from vlmrecipes.eval.scoring import score_emotion, score_medvqa


# --- LLaVA-Med (llava/eval/run_eval.py) -------------------------------------------------------------------
@pytest.mark.parametrize("prediction, label, recall", [
    ("left lung", "left lung", 1.0),
    ("left", "left lung", 0.5),             # tp 1, fn 1
    ("left left left", "left lung", 0.75),  # repeated words count: tp 3 (the prediction's count), fn 1
    ("lung lung", "left lung", 2 / 3),      # tp 2, fn 1
    ("abnormal", "normal", 0.0),            # whole words
    ("Two lesions.", "2 lesions", 1.0),     # VQA normalisation: number words, periods
    ("", "liver", 0.0),
])
def test_llava_med_open_recall(prediction, label, recall):
    assert MV.llava_med_open_recall(prediction, label) == pytest.approx(recall)


@pytest.mark.parametrize("prediction, label, hit", [
    ("Yes", "yes", 1.0),
    ("no", "yes", None),                   # contains "no": its script records nothing (uncounted miss)
    ("normal", "no", 1.0),                 # "no" is a substring of "normal"
    ("yes, but no mass", "no", 1.0),       # both words present: the answer is a substring, a hit
    ("yes, but no mass", "yes", 1.0),
    ("I cannot tell", "yes", None),        # "cannot" contains "no"
    ("left", "left", 0.0),                 # a closed non-yes/no answer needs a yes/no substring
    ("left, no mass", "left", 1.0),
    ("maybe", "yes", 0.0),                 # neither substring: a counted miss
])
def test_llava_med_closed(prediction, label, hit):
    assert MV.llava_med_closed(prediction, label) == hit


# --- MedEvalKit (utils/utils.py judge_*, per-dataset cal_metrics) ------------------------------------------
@pytest.mark.parametrize("prediction, label, hit", [
    ("Yes.", "yes", 1.0),
    ("not sure", "no", 1.0),               # "no" is a substring of "not"
    ("No, not yes", "no", 0.0),            # both substrings: not exactly one of yes/no
    ("The answer is yes", "yes", 1.0),
    (r"I think \boxed{no}", "no", 1.0),    # the last \boxed{} is the answer
    (r"\boxed{yes} then \boxed{no}", "yes", 0.0),
    ("<answer>yes</answer> no", "yes", 1.0),
])
def test_medevalkit_yes_no_judge(prediction, label, hit):
    assert MV.medevalkit_score(prediction, label, "closed", "vqa_rad") == ("closed", hit)


def test_medevalkit_per_dataset_rules():
    # VQA-RAD / PathVQA: closed iff the answer is yes/no, whatever answer_type says; open is exact match
    # after lower-casing and stripping
    assert MV.medevalkit_score("Left", "left", "closed", "vqa_rad") == ("open", 1.0)
    assert MV.medevalkit_score(" liver ", "Liver", "open", "other") == ("open", 1.0)
    assert MV.medevalkit_score("liver.", "liver", "open", "other") == ("open", 0.0)   # periods stay in open EM
    assert MV.medevalkit_score("The answer is: liver", "liver", "open", "other") == ("open", 0.0)  # ": liver"
    # SLAKE: answer_type decides; a capitalised "Yes" is not "yes", so exact match, not the yes/no judge
    assert MV.medevalkit_score("Yes, it is", "Yes", "closed", "slake") == ("closed", 0.0)
    assert MV.medevalkit_score("Yes, it is", "yes", "closed", "slake") == ("closed", 1.0)
    assert MV.medevalkit_score("Left.", "Left", "closed", "slake") == ("closed", 1.0)  # periods dropped there
    assert MV.medevalkit_score("liver", "Liver", "open", "slake") == ("open", 1.0)


def test_boxed_content_matches_mathruler():
    assert MV.boxed_content(r"so \boxed{\frac{1}{2}} ") == r"\frac{1}{2}"
    assert MV.boxed_content(r"\boxed{ a } and \boxed{b}") == "b"
    assert MV.boxed_content(r"\boxed{open") is None and MV.boxed_content("plain") is None
    assert MV.medevalkit_parse_response("the boxed answer") == "None"  # mentions "boxed" without \boxed{}


# --- lmms-eval (tasks/slake/utils.py) --------------------------------------------------------------------
@pytest.mark.parametrize("text, normalised", [
    ("Yes.", "yes"), ("Yeah", "yes"), ("TRUE", "yes"), ("nope", "no"),
    ("Yes, it is", "yes it is"),            # synonyms only for the whole answer
    ("Liver (right lobe)", "liver"),        # parenthesised text dropped
    ("X-Ray", "xray"), ("x ray", "xray"),
    ("the liver", "the liver"),             # no article removal
    ("正常", "yes"), ("异常", "no"),          # Chinese synonyms, "normal" -> yes
    ("  Left   Lung!  ", "left lung"),
])
def test_lmms_eval_normalize(text, normalised):
    assert MV.lmms_eval_normalize(text) == normalised


# --- strict (ours) ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction, label, hit", [
    ("normal", "no", 0.0),                  # "no" in "normal" is a substring, not an answer
    ("No nodule is seen.", "no", 1.0),
    ("No, the lung is normal", "no", 1.0),
    ("yes, but no mass", "no", 0.0),        # the first yes/no word is the answer
    ("no", "yes", 0.0),                     # counted
    ("It is in the left lung", "left lung", 1.0),
    ("the lung on the left", "left lung", 0.0),
])
def test_strict_closed(prediction, label, hit):
    assert MV.strict_closed(prediction, label) == hit


def test_strict_open():
    assert MV.strict_open_recall("left left left", "left lung") == 0.5  # distinct words
    assert MV.strict_open_recall("the left side of the lung", "left lung") == 1.0
    assert MV.strict_open_recall("Two lesions", "2 lesions") == 1.0
    assert MV.strict_open_exact("Two lesions.", "2 lesions") == 1.0


# --- the task: four conventions side by side, breakdowns ----------------------------------------------------
def _row(predict: str, label: str, **extra) -> dict:
    return {"predict": predict, "label": label, "_line": 1, **extra}


def test_score_medvqa_side_by_side_vqa_rad():
    rows = [_row("normal", "no", answer_type="closed", question_type="PRES"),
            _row("Yes.", "yes", answer_type="closed", question_type="PRES"),
            _row("no", "yes", answer_type="closed", question_type="ABN"),
            _row("left", "left", answer_type="closed", question_type="POS"),
            _row("left left lung", "left lung", answer_type="open", question_type="POS"),
            _row("right lung", "left lung", answer_type="open", question_type="POS")]
    result = score_medvqa(rows)
    m = result.metrics
    # LLaVA-Med closed: normal/no 1, Yes/yes 1, no/yes uncounted -> 0 here, left/left 0 -> 2/4 (its script: 2/3)
    assert m["llava_med.closed_accuracy"] == 0.5 and m["llava_med.open_recall"] == pytest.approx(0.75)
    assert any("would print 66.7%" in note for note in result.notes)
    # MedEvalKit: closed = the 3 yes/no answers (2 hits); open = left, left lung, left lung (1 exact)
    assert m["medevalkit.closed_accuracy"] == pytest.approx(2 / 3)
    assert m["medevalkit.open_exact_match"] == pytest.approx(1 / 3) and m["medevalkit.accuracy"] == 0.5
    assert result.details["conventions"]["MedEvalKit"]["closed_count"] == 3
    # lmms-eval: Yes. and left exact -> closed 2/4, open 0/2
    assert m["lmms_eval.closed_accuracy"] == 0.5 and m["lmms_eval.open_accuracy"] == 0.0
    assert m["strict.closed_accuracy"] == 0.5 and m["strict.open_recall"] == pytest.approx(0.75)
    assert result.details["by_question_type"]["PRES"] == {"count": 2, "LLaVA-Med": 1.0, "MedEvalKit": 1.0,
                                                          "lmms-eval": 0.5, "strict (ours)": 0.5}
    assert set(result.details) == {"conventions", "by_answer_type", "by_question_type"}


def test_score_medvqa_slake_breakdowns_and_rules():
    rows = [_row("Yes, it is", "Yes", answer_type="closed", modality="CT", content_type="Organ", q_lang="en"),
            _row("MRI", "MRI", answer_type="open", modality="MRI", content_type="Modality", q_lang="en")]
    result = score_medvqa(rows)
    assert result.metrics["medevalkit.closed_accuracy"] == 0.0  # capitalised "Yes": exact match on SLAKE
    assert result.metrics["llava_med.closed_accuracy"] == 1.0
    assert list(result.details["by_modality"]) == ["CT", "MRI"]
    assert result.details["by_content_type"]["Modality"]["lmms-eval"] == 1.0
    assert any("SLAKE rules" in note for note in result.notes)


# --- emotion label sets ----------------------------------------------------------------------------------
def test_emotion_names_the_published_label_set():
    rows = [_row(p, g) for p, g in [("happy", "happy"), ("sad", "anger"), ("fear", "fear"), ("neutral", "neutral")]]
    result = score_emotion(rows, M.EMOTION_LABEL_SETS["affectnet8"].labels)
    assert result.details["label_set"] == "AffectNet-8" and len(result.details["per_class"]) == 8
    assert result.metrics["accuracy"] == 0.75 and result.details["per_class"]["anger"]["recall"] == 0.0
    # RAF-DB's names: the answer "happy" maps to its "happiness"
    raf = score_emotion([_row("happy", "happiness")], M.EMOTION_LABEL_SETS["rafdb"].labels)
    assert raf.details["label_set"] == "RAF-DB (basic)" and raf.metrics["accuracy"] == 1.0
    # gold labels that are FER2013's seven names are recognised without --label-set
    fer = [_row(name, name) for name in M.EMOTION_LABEL_SETS["fer2013"].labels]
    assert score_emotion(fer).details["label_set"] == "FER2013"
    assert score_emotion([_row("happy", "happy")]).details["label_set"] is None
