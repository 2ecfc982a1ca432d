"""Medical VQA scoring conventions: the three that published numbers use, and our strict one beside them.

Numbers on VQA-RAD, SLAKE and PathVQA are only comparable under the same scorer, and the literature uses
three incompatible ones. Each is ported here from its own source, quirks included (the published numbers
include them), each quirk named with a worked example beside the code that reproduces it:

- `llava_med_*`: LLaVA-Med, `llava/eval/run_eval.py` + `eval_metrics/{evaluate_metrics,glossary,utils}.py`
  (microsoft/LLaVA-Med; the VQA-RAD/SLAKE/PathVQA numbers of LLaVA-Med, Med-MoE and most papers after them).
  Open: token recall of `calculate_f1score`; closed: "yes"/"no" and the answer as substrings.
- `medevalkit_*`: MedEvalKit, `utils/{VQA_RAD,SLAKE,PATH_VQA}/*.py` + `utils/utils.py`
  (alibaba-damo-academy/MedEvalKit; the Lingshu and HuatuoGPT-Vision tables). Closed: exactly one of
  yes/no in the reply and the answer in it; open: exact match; rule-based (its optional LLM judge of open
  answers is not reproduced).
- `lmms_eval_*`: lmms-eval, `lmms_eval/tasks/slake/utils.py` (EvolvingLMMs-Lab/lmms-eval): normalised exact
  match for every question, yes/no synonyms.
- `strict_*`: ours. Whole words after VQA normalisation, no substring matches: closed yes/no takes the
  reply's first "yes"/"no" word, other closed answers must appear as a run of words, open recall counts
  each distinct answer word once.

Every function takes the model's raw text; a thinking model's `<think>...</think>` is removed first
(`strip_thinking`) for every convention alike, since none of the three scorers is meant to read reasoning.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from vlmrecipes.eval.metrics import (
    exact_match,
    strip_thinking,
    vqa_normalize,
    vqa_process_digit_article,
    vqa_process_punctuation,
)

YES_NO = ("yes", "no")

# ---------------------------------------------------------------------------------------------------------
# LLaVA-Med (microsoft/LLaVA-Med llava/eval/run_eval.py)


def llava_med_normalize(text: str) -> str:
    """LLaVA-Med's `normalize_word` applied to the lower-cased text, as `run_eval.evaluate` does.

    It is the official VQAv2 normalisation (same punctuation list, same malformed period pattern with
    re.UNICODE passed as the count, same number words, articles and contractions), so it is built from ours,
    minus our newline/tab replacement, which LLaVA-Med does not do.
    """
    return vqa_process_digit_article(vqa_process_punctuation(text.lower()))


def llava_med_open_recall(prediction: str, label: str) -> float:
    """LLaVA-Med's open-ended score: the `recall` of `calculate_f1score`, the number its tables report.

    Both sides are normalised twice (once in `evaluate`, again inside `calculate_f1score`) and counted as
    word -> occurrences (`split_sentence(., 1)`). Then tp = sum, over the words in both, of the PREDICTION's
    count; fn = sum, over the answer words missing from the prediction, of the answer's count; recall =
    tp / (tp + fn), 0 when the prediction has no word or tp is 0.

    Quirk (repeated words count): a matched word repeated in the reply raises recall. Worked example,
    answer "left lung": "left" -> tp 1, fn 1, recall 0.5; "left left left" -> tp 3, fn 1, recall 0.75
    (our strict recall: 0.5 for both).
    """
    pred = Counter(llava_med_normalize(llava_med_normalize(strip_thinking(prediction))).split())
    gold = Counter(llava_med_normalize(llava_med_normalize(label)).split())
    if not pred or not gold:
        return 0.0
    tp = sum(count for word, count in pred.items() if word in gold)
    fn = sum(count for word, count in gold.items() if word not in pred)
    return tp / (tp + fn) if tp else 0.0


def llava_med_closed(prediction: str, label: str) -> float | None:
    """LLaVA-Med's closed-ended hit on normalised, lower-cased text: None where its script records nothing.

    Its rule: if the reply contains "yes" or "no" as substrings, it is a hit when the answer is a substring
    of the reply, and otherwise NOTHING is appended (the miss is not counted at all); a reply with neither
    substring is a counted miss. Quirks, each with a worked example:
    - uncounted misses: answer "yes", reply "no" -> None (drops out of the denominator, inflating the
      published closed accuracy). `score_medvqa` counts these as misses and says how many there were.
    - substrings: answer "no", reply "normal" -> 1 ("no" is in "normal"); answer "yes", reply "yes, but
      no mass" -> 1, and answer "no" on the same reply -> 1 too.
    - closed non-yes/no answers need a yes/no substring: answer "left", reply "left" -> 0; reply "left,
      no mass" -> 1.
    """
    pred = llava_med_normalize(strip_thinking(prediction).lower())
    gold = llava_med_normalize(label.lower())
    if "yes" in pred or "no" in pred:
        return 1.0 if gold in pred else None
    return 0.0


# ---------------------------------------------------------------------------------------------------------
# MedEvalKit (alibaba-damo-academy/MedEvalKit utils/utils.py and the per-dataset cal_metrics)

_MEDEVALKIT_ANSWER_MARKERS = ("**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:",
                              "答案:", "final answer", "final answer is")


def boxed_content(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced, stripped), or None when there is none or it
    is unclosed; mathruler's `extract_boxed_content`, which MedEvalKit calls (it returns the string "None"
    for "not found", and the callers compare against that string)."""
    start = text.rfind(r"\boxed{")
    if start == -1:
        return None
    depth = 0
    content = text[start + len(r"\boxed{"):]
    for i, char in enumerate(content):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == -1:
            return content[:i].strip()
    return None


def _tag_content(text: str, tag: str) -> str:
    """MedEvalKit's `extract(text, tag)`: every closed `<tag>...</tag>` joined by spaces, else the text."""
    found, start = [], text.find(f"<{tag}>")
    while start != -1:
        end = text.find(f"</{tag}>", start + len(tag) + 2)
        if end == -1:
            break
        found.append(text[start + len(tag) + 2:end])
        start = text.find(f"<{tag}>", end + len(tag) + 3)
    return " ".join(found).strip() or text


def medevalkit_extract(response: str) -> str:
    """The first step of every MedEvalKit `cal_metrics`: the last `\\boxed{}` content, else the `<answer>`
    tags' content, else the reply as is."""
    boxed = boxed_content(response)
    if boxed is not None:
        return boxed
    return _tag_content(response, "answer") if "<answer>" in response else response


def medevalkit_parse_response(response: str) -> str:
    """MedEvalKit's `parse_response`: lower-case, boxed/`<answer>` again, then cut after each answer marker.

    Quirks: the markers are tried in order and each cut keeps the text after the marker's LAST occurrence
    ("The answer is: yes" -> ": yes", not "yes"); a reply that merely mentions "boxed" without a `\\boxed{}`
    becomes "None" (mathruler's "not found" string), which matches no answer.
    """
    response = response.lower()
    if "boxed" in response:
        boxed = boxed_content(response)
        response = "None" if boxed is None else boxed
    elif "<answer>" in response:
        response = _tag_content(response, "answer")
    for marker in _MEDEVALKIT_ANSWER_MARKERS:
        if marker in response:
            response = response.split(marker)[-1]
    return response


def medevalkit_judgement(answer: str, response: str) -> float:
    """MedEvalKit's yes/no judge (`judge_judgement`): after `parse_response` and removing newlines and
    periods, the reply must contain exactly one of the substrings "yes"/"no", and the answer as a substring.

    Quirks: substrings, so "normal" and "not" say "no" (answer "no", reply "not sure" -> 1; answer "no",
    reply "normal" -> 1) and a reply with both words is a miss (answer "no", reply "no, not yes-like" -> 0).
    """
    answer = answer.lower()
    reply = medevalkit_parse_response(response).replace("\n", "").replace(".", "")
    return float((("yes" in reply) != ("no" in reply)) and answer in reply)


def medevalkit_close_exact(answer: str, response: str) -> float:
    """MedEvalKit's `judge_close_end_vqa` (SLAKE's closed questions whose answer is not "yes"/"no"): the
    parsed reply without newlines and periods equals the lower-cased answer ("Left." vs "Left" -> 1)."""
    return float(medevalkit_parse_response(response).replace("\n", "").replace(".", "") == answer.lower())


def medevalkit_open_exact(answer: str, response: str) -> float:
    """MedEvalKit's open-ended `em` (`judge_open_end_vqa`): `parse_response(reply) == answer.lower()`.

    Quirk: periods stay, so "Liver." vs "liver" -> 0. (VQA-RAD and PathVQA strip the reply first, SLAKE
    does not; that difference is not reproduced, since `strip_thinking` strips every reply for every
    convention, so " liver" scores 1 on SLAKE here.)
    """
    return float(medevalkit_parse_response(response) == answer.lower())


def medevalkit_score(prediction: str, label: str, answer_type: str, benchmark: str) -> tuple[str, float]:
    """(MedEvalKit's question kind "closed" | "open", its hit) for one row; `benchmark` "slake" or other.

    Per-dataset differences, as in its `cal_metrics`:
    - VQA-RAD and PathVQA: the kind comes from the answer, not from `answer_type`: closed iff the
      lower-cased, stripped answer is "yes" or "no" (a VQA-RAD CLOSED question answered "left" is open
      there); reply and answer are lower-cased and stripped before judging.
    - SLAKE: the kind is `answer_type`; a closed answer goes to the yes/no judge only when it is exactly
      "yes" or "no" (case-sensitive, so SLAKE's capitalised "Yes" is judged by `medevalkit_close_exact`:
      reply "Yes, it is" -> 0).
    """
    response = medevalkit_extract(strip_thinking(prediction))
    if benchmark == "slake":
        if answer_type != "open":
            judge = medevalkit_judgement if label in YES_NO else medevalkit_close_exact
            return "closed", judge(label, response)
        return "open", medevalkit_open_exact(label, response)
    answer, response = label.lower().strip(), response.lower().strip()
    if answer in YES_NO:
        return "closed", medevalkit_judgement(answer, response)
    return "open", medevalkit_open_exact(answer, response)


# ---------------------------------------------------------------------------------------------------------
# lmms-eval (EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/slake/utils.py)

_ZH_PUNCTUATION = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～、，。；：《》？【】（）"
_TO_SPACE = str.maketrans({char: " " for char in string.punctuation + _ZH_PUNCTUATION})
_PARENTHESISED = re.compile(r"\([^)]*\)|（[^）]*）")
_LMMS_YES = frozenset({"yes", "yeah", "yep", "true", "是", "是的", "有", "包含", "可以", "能", "会", "正常"})
_LMMS_NO = frozenset({"no", "nope", "false", "否", "不是", "没有", "无", "不包含", "不能", "不会", "不可以", "不正常",
                      "异常"})


def lmms_eval_normalize(text: str) -> str:
    """lmms-eval SLAKE's `normalize_answer`: strip, lower-case, drop parenthesised text, every ASCII and
    Chinese punctuation mark to a space, collapse spaces, "x ray" -> "xray", then the whole answer mapped to
    "yes"/"no" if it is one of the synonyms.

    Quirks, with worked examples: synonyms apply only to the whole answer ("Yes." -> "yes", but "Yes, it
    is" -> "yes it is", a miss against "yes"); parentheses vanish ("Liver (right lobe)" -> "liver");
    "正常" (normal) means "yes" and "异常" (abnormal) "no"; no article removal ("the liver" != "liver").
    """
    text = _PARENTHESISED.sub(" ", text.strip().lower())
    text = " ".join(text.translate(_TO_SPACE).split())
    if text in ("x ray", "xray"):
        return "xray"
    return "yes" if text in _LMMS_YES else "no" if text in _LMMS_NO else text


def lmms_eval_exact(prediction: str, label: str) -> float:
    """lmms-eval SLAKE's `is_correct`, for open and closed questions alike."""
    return float(lmms_eval_normalize(strip_thinking(prediction)) == lmms_eval_normalize(label))


# ---------------------------------------------------------------------------------------------------------
# strict (ours)


def strict_tokens(text: str) -> list[str]:
    """VQA-normalised words of an answer (lower-case, punctuation, number words, articles)."""
    return vqa_normalize(strip_thinking(text)).split()


def _contains_run(tokens: Sequence[str], run: Sequence[str]) -> bool:
    return any(list(tokens[i:i + len(run)]) == list(run) for i in range(len(tokens) - len(run) + 1))


def strict_closed(prediction: str, label: str) -> float:
    """Our closed-ended hit, on whole words so that "no" does not match "normal" or "nodule":

    - yes/no ground truth: the prediction's first "yes" or "no" word is its answer ("No, the lung is
      normal" -> no); a prediction with neither word is a miss, and every miss is counted;
    - other closed answers ("left", "right lung"): a hit if the answer's words appear as a contiguous run
      of the prediction's words.
    """
    gt, pred = strict_tokens(label), strict_tokens(prediction)
    if not gt:
        raise ValueError(f"empty closed-ended ground truth {label!r}")
    if len(gt) == 1 and gt[0] in YES_NO:
        said = next((t for t in pred if t in YES_NO), None)
        return float(said == gt[0])
    return float(_contains_run(pred, gt))


def strict_open_recall(prediction: str, label: str) -> float:
    """Our open-ended recall: the share of the ground truth's DISTINCT words found among the prediction's
    words (whole words after VQA normalisation; a repeated word counts once, unlike LLaVA-Med's)."""
    gt, pred = set(strict_tokens(label)), set(strict_tokens(prediction))
    if not gt:
        raise ValueError(f"empty open-ended ground truth {label!r}")
    return len(gt & pred) / len(gt)


def strict_open_exact(prediction: str, label: str) -> float:
    """Exact match after VQA normalisation on both sides."""
    return exact_match(prediction, label)


# ---------------------------------------------------------------------------------------------------------
# the conventions side by side


@dataclass(frozen=True)
class Convention:
    """One scoring convention as a report names it: who uses it, where its code is, what open/closed mean."""

    title: str
    source: str
    open: str
    closed: str


CONVENTIONS: dict[str, Convention] = {
    "llava_med": Convention(
        "LLaVA-Med", "microsoft/LLaVA-Med llava/eval/run_eval.py (LLaVA-Med, Med-MoE tables)",
        "token recall, repeated words counted", "yes/no substring accuracy, every miss counted (its script "
        "skips misses whose reply contains yes/no)"),
    "medevalkit": Convention(
        "MedEvalKit", "alibaba-damo-academy/MedEvalKit utils/{VQA_RAD,SLAKE,PATH_VQA} (Lingshu, HuatuoGPT-Vision)",
        "exact match (rule-based; no LLM judge)", "exactly one of yes/no in the reply, and the answer in it"),
    "lmms_eval": Convention(
        "lmms-eval", "EvolvingLMMs-Lab/lmms-eval lmms_eval/tasks/slake/utils.py",
        "normalised exact match", "normalised exact match, yes/no synonyms"),
    "strict": Convention(
        "strict (ours)", "vlmrecipes/eval/medvqa.py", "distinct-word recall (and exact match)",
        "first yes/no word; other answers as a run of whole words"),
}


def benchmark_of(row: dict) -> str:
    """"slake" for rows carrying SLAKE's fields (`q_lang`, `content_type`, kept by our converter), which
    MedEvalKit scores by its SLAKE rules; "vqa_rad" for `question_type`; else "other" (MedEvalKit's VQA-RAD
    and PathVQA rules are the same)."""
    if row.get("q_lang") is not None or row.get("content_type") is not None:
        return "slake"
    return "vqa_rad" if row.get("question_type") is not None else "other"
