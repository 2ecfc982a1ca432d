"""Task metrics, one function per metric, each following a published definition (cited in its docstring).

Every scorer takes raw model text; `strip_thinking` removes `<think>...</think>` first, so a thinking model is
scored on its answer, not on its reasoning. Per-sample functions return a float in [0, 1]; corpus metrics
(BLEU/ROUGE-L/CIDEr, macro-F1) take whole lists.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

from vlmrecipes.data_converters import affectnet, fer2013
from vlmrecipes.data_converters.tasks import CLASSIFY_PROMPT

# ---------------------------------------------------------------------------------------------------------
# thinking models
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_thinking(text: str) -> str:
    """The answer part of a thinking model's output.

    Closed `<think>...</think>` blocks are removed; an unclosed `<think>` (generation cut by max_new_tokens)
    means there is no answer yet, so everything after it is dropped; a lone `</think>` (Qwen3 templates put
    the opening tag in the prompt) keeps what follows the last one.
    """
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.strip()


# ---------------------------------------------------------------------------------------------------------
# VQAv2 answer normalisation, following the official evaluation script (GT-Vision-Lab/VQA
# PythonEvaluationTools/vqaEvaluation/vqaEval.py) and the rules on visualqa.org/evaluation.html.

# The official `contractions` table, built instead of spelled out. Each key is a canonical contraction
# written with exactly one of its apostrophes missing ("dont" -> "don't"; "couldnt've" and "couldn'tve" ->
# "couldn't've"; "yall'd've", "y'alld've", "y'all'dve" -> "y'all'd've"), which is how every official key is
# formed; the canonical forms below are the official table's values, except:
# - "I'm", "I've", "I'd've": the official keys ("Im", "Ive", "Id've", "I'dve") are capitalised but are
#   looked up after lower-casing, so they never apply ("im" stays "im"); they are left out.
# - "let's", "she's": the official table maps them to themselves only ("lets", "shes" stay): left out.
# - "he'll", "we'll", "it's"...: absent from the official table ("hell", "well", "its" are words).
# - "somebody'd": the official entry is reversed ("somebody'd" -> "somebodyd"), kept as such below.
_CONTRACTIONS = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's "
    "where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've wouldn't "
    "wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _contraction_table() -> dict[str, str]:
    table = {"somebody'd": "somebodyd"}  # the official entry, reversed as it is there
    for canonical in _CONTRACTIONS:
        apostrophes = [i for i, c in enumerate(canonical) if c == "'"]
        table.update({canonical[:i] + canonical[i + 1:]: canonical for i in apostrophes})
    return table


VQA_CONTRACTIONS = _contraction_table()
VQA_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())} | {"none": "0"}
VQA_ARTICLES = frozenset({"a", "an", "the"})
VQA_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`",
                   ",", "?", "!"]
_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
# The official pattern "(?!<=\d)(\.)(?!\d)" means to keep decimal points, but its look-behind is malformed
# and only the look-ahead acts: a period goes unless a digit follows ("2.5" stays, "5." -> "5").
_PERIOD_NOT_DECIMAL = re.compile(r"\.(?!\d)")
# The official call passes re.UNICODE (32) where `sub` takes its count: at most 32 periods are removed.
_PERIODS_REMOVED = 32


def vqa_process_punctuation(text: str) -> str:
    """The official `processPunctuation`: a punctuation mark touching a space (or any text with a digit
    comma such as "1,000") is deleted, otherwise it becomes a space ("black-and-white" -> "black and white");
    periods go unless they are a decimal point ("2.5" stays). Apostrophes and colons are kept."""
    out = text
    drop = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for p in VQA_PUNCTUATION:
        out = out.replace(p, "" if drop or (p + " " in text or " " + p in text) else " ")
    return _PERIOD_NOT_DECIMAL.sub("", out, count=_PERIODS_REMOVED)


def vqa_process_digit_article(text: str) -> str:
    """The official `processDigitArticle`: lower-case, number words to digits, articles dropped, missing
    contraction apostrophes restored ("dont" -> "don't")."""
    words = [VQA_NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(VQA_CONTRACTIONS.get(w, w) for w in words if w not in VQA_ARTICLES)


def vqa_normalize(text: str) -> str:
    """An answer as the VQAv2 evaluator compares it: newlines/tabs to spaces, punctuation, digits, articles,
    contractions ("Two dogs." -> "2 dogs", "Dont know" -> "don't know").

    Deliberate deviation: the official `evaluate` normalises the answers only when the ten human answers
    are not all identical, so "Yes." scores 0 against ten "yes" there and 1 here. Like lmms-eval's and
    LLaVA's VQAv2 evaluators we always normalise both sides, which is what free-form generated answers need.
    """
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return vqa_process_digit_article(vqa_process_punctuation(text))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQAv2 accuracy of one answer: the mean, over the 10 leave-one-annotator-out subsets of the human
    answers, of min(1, #humans in the subset who gave the prediction / 3) (Antol et al. 2015, VQA, and the
    official vqaEval.py). With fewer than 10 answers the same leave-one-out average is taken over those given.

    Deliberate deviation: with a single answer (the label alone, no `answers` field) the official formula
    leaves no other annotator and scores every prediction 0; here it is exact match ("Yes" vs ["yes"] -> 1).
    """
    if not answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    pred = vqa_normalize(strip_thinking(prediction))
    gts = [vqa_normalize(a) for a in answers]
    if len(gts) == 1:
        return float(pred == gts[0])
    return sum(min(1.0, sum(g == pred for j, g in enumerate(gts) if j != i) / 3) for i in range(len(gts))) / len(gts)


def exact_match(prediction: str, label: str) -> float:
    """1 if the VQA-normalised prediction equals the VQA-normalised label."""
    return float(vqa_normalize(strip_thinking(prediction)) == vqa_normalize(label))


# ---------------------------------------------------------------------------------------------------------
# ANLS


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions of one character, each costing 1), by rapidfuzz's
    compiled implementation: ANLS of a row with ten VQAv2-length answers takes 0.01 ms instead of the 1.7 ms of
    a pure-Python loop (benchmarks/bench_anls.py), i.e. seconds instead of minutes for VQAv2 val."""
    return Levenshtein.distance(a, b)


def anls(prediction: str, answers: Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one answer (Biten et al. 2019, Scene Text VQA; the DocVQA
    challenge's metric): NL = Levenshtein(a, o) / max(|a|, |o|) on lower-cased, whitespace-collapsed strings;
    the score is max over the ground truths of (1 - NL) if NL < threshold, else 0."""
    pred = " ".join(strip_thinking(prediction).lower().split())
    best = 0.0
    for answer in answers:
        gt = " ".join(answer.lower().split())
        longest = max(len(gt), len(pred))
        nl = levenshtein(gt, pred) / longest if longest else 0.0
        best = max(best, 1.0 - nl if nl < threshold else 0.0)
    return best


# ---------------------------------------------------------------------------------------------------------
# captions: BLEU-4, ROUGE-L, CIDEr-D with the COCO caption evaluation code (pycocoevalcap)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _is_punctuation(token: str) -> bool:
    return all(unicodedata.category(c).startswith(("P", "S")) for c in token)


def caption_tokens(text: str) -> list[str]:
    """Tokens as the caption metrics compare them: Chinese text is cut into words with jieba (as the AI
    Challenger caption evaluation does), other text is lower-cased and split on spaces; punctuation tokens
    are dropped, as the COCO PTB tokenizer does."""
    text = strip_thinking(text).lower()
    if _CJK.search(text):
        import jieba

        raw = jieba.lcut(text)
    else:
        raw = re.sub(r"([^\w\s'])", r" \1 ", text).split()
    return [t for t in (t.strip() for t in raw) if t and not _is_punctuation(t)]


def caption_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, object]:
    """Corpus BLEU-4 (Papineni et al. 2002), ROUGE-L (Lin 2004, F with beta=1.2 as in COCO) and CIDEr-D
    (Vedantam et al. 2015) computed by pycocoevalcap's `Bleu`, `Rouge` and `Cider` on `caption_tokens`.

    Returns the corpus scores and the per-caption ROUGE-L and CIDEr-D lists. CIDEr's IDF comes from the
    references of the evaluated set, so it is only meaningful over many images (a single image scores 0).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} reference lists")
    # pycocoevalcap asserts non-empty strings; an empty caption becomes a token that matches nothing
    res = {i: [" ".join(caption_tokens(p)) or "<empty>"] for i, p in enumerate(predictions)}
    gts = {i: [" ".join(caption_tokens(r)) or "<empty>" for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "rouge_l": float(rouge), "cider": float(cider),
            "rouge_l_each": [float(x) for x in rouge_each], "cider_each": [float(x) for x in cider_each]}


# ---------------------------------------------------------------------------------------------------------
# emotion labels

# Surface forms of each basic expression (Ekman's six, neutral, and AffectNet's contempt). A label set's
# names ("Happiness" in RAF-DB, "Happy" in AffectNet, "angry" in FER2013) are mapped to these concepts too,
# so predictions and gold labels meet whatever the dataset calls them.
EMOTION_SYNONYMS: dict[str, tuple[str, ...]] = {
    "neutral": ("neutral", "neutrality", "calm", "expressionless", "blank"),
    "happy": ("happy", "happiness", "joy", "joyful", "smile", "smiling", "glad", "cheerful", "pleased"),
    "sad": ("sad", "sadness", "unhappy", "sorrow", "sorrowful", "upset", "crying", "depressed"),
    "surprise": ("surprise", "surprised", "astonished", "astonishment", "amazed", "shocked", "shock"),
    "fear": ("fear", "fearful", "afraid", "scared", "frightened", "terrified", "anxious"),
    "disgust": ("disgust", "disgusted", "disgusting", "revulsion", "repulsed"),
    "anger": ("anger", "angry", "mad", "furious", "rage", "annoyed", "irritated"),
    "contempt": ("contempt", "contemptuous", "disdain", "scorn", "scornful"),
}
_EMOTION_CONCEPT = {form: concept for concept, forms in EMOTION_SYNONYMS.items() for form in forms}
UNMAPPED = "<unmapped>"


@dataclass(frozen=True)
class LabelSet:
    """A published facial-expression label set: its name in papers, its classes in the dataset's code order."""

    title: str
    labels: tuple[str, ...]
    source: str


# The sets facial-expression results are reported on; AffectNet and FER2013 as our converters write them.
EMOTION_LABEL_SETS: dict[str, LabelSet] = {
    "affectnet8": LabelSet("AffectNet-8", affectnet.LABELS,
                           "AffectNet expression codes 0-7 (Mollahosseini et al. 2017)"),
    "affectnet7": LabelSet("AffectNet-7", affectnet.LABELS[:7], "AffectNet codes 0-6, contempt dropped"),
    "rafdb": LabelSet("RAF-DB (basic)", ("surprise", "fear", "disgust", "happiness", "sadness", "anger", "neutral"),
                      "RAF-DB EmoLabel codes 1-7 (Li et al. 2017)"),
    "fer2013": LabelSet("FER2013", fer2013.LABELS, "FER2013 emotion codes 0-6 (Goodfellow et al. 2013)"),
}


def label_set_of(labels: Sequence[str]) -> LabelSet | None:
    """The published set whose class names are exactly `labels` (any order and case), else None."""
    names = {_phrase(label) for label in labels}
    return next((s for s in EMOTION_LABEL_SETS.values() if set(s.labels) == names), None)


# The choices part of our converters' classification question ("... in the image? Answer with one of: angry,
# disgust, fear, happy, sad, surprise, neutral."), which every prompt of a converted record carries.
_OFFERED_CLASSES = re.compile(re.escape(CLASSIFY_PROMPT.split("{subject}")[-1]).replace(
    re.escape("{classes}"), "(.+?)"))


def offered_classes(prompts: Sequence[str]) -> list[str] | None:
    """The classes that every prompt offers in our converters' question (`CLASSIFY_PROMPT`), in the converter's
    order; None when a prompt offers none or two prompts offer different ones. A converted dataset's label set
    is known this way even when its records cover only some classes."""
    offers = {tuple(match.group(1).split(", ")) if match else None
              for match in (_OFFERED_CLASSES.search(prompt) for prompt in prompts)}
    offered = offers.pop() if len(offers) == 1 else None
    return list(offered) if offered else None


def _words(text: str) -> list[str]:
    """Case-folded words, punctuation and underscores dropped ("Thumbs-up!" -> ["thumbs", "up"], "Überrascht")."""
    return re.findall(r"[^\W_]+", text.casefold())


def _phrase(text: str) -> str:
    return " ".join(_words(text))


def map_label(text: str, labels: Sequence[str]) -> str | None:
    """The label of `labels` that `text` names, or None.

    In order: the text's words equal a label's (case and punctuation ignored: "HAPPY." names "Happy");
    else the first word of the text that is a label or a synonym of one (EMOTION_SYNONYMS), so
    "Happiness.", "The person looks happy" and "joyful" all map to "happy". Labels outside the synonym
    table match by their own name only.
    """
    text = strip_thinking(text)
    by_name = {_phrase(label): label for label in labels}
    if _phrase(text) in by_name:
        return by_name[_phrase(text)]
    by_concept = {_EMOTION_CONCEPT.get(w, w): label for label in labels for w in _words(label)[:1]}
    for word in _words(text):
        concept = _EMOTION_CONCEPT.get(word, word)
        if concept in by_concept:
            return by_concept[concept]
    return None


def gold_classes(golds: Sequence[str]) -> dict[str, str]:
    """The class of each gold label, for a label set read from the data (no `--labels`).

    Gold labels go through the normalisation `map_label` gives predictions: case and punctuation are
    ignored and synonyms are one class, so "Happy", "happy", "HAPPY." and "Happiness" are one class. A class
    is named by its most frequent form (lower-cased words; the first seen on a tie): FER2013's "angry" stays
    "angry", not the synonym table's "anger". Labels outside the synonym table group by their words.
    """
    concept = {gold: _EMOTION_CONCEPT.get(_phrase(gold), _phrase(gold)) for gold in golds}
    forms = Counter((concept[gold], _phrase(gold)) for gold in golds)
    names: dict[str, str] = {}
    for (key, form), _ in forms.most_common():  # stable: equal counts keep their first-seen order
        names.setdefault(key, form)
    return {gold: names[key] for gold, key in concept.items()}


def classification_scores(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and weighted F1 over `labels` and per-class precision/recall/F1/support, by scikit-learn
    (`accuracy_score`, `precision_recall_fscore_support`); a prediction outside `labels` (UNMAPPED) counts
    as wrong for its gold class and is a class of no one's precision.

    Macro-F1 averages over the classes of `labels` that occur, as gold or as prediction (scikit-learn's own
    choice when it is given no labels): a class of the label set that neither the data nor the answers contain
    has no F1, and listing it (a subset of a published set) must not lower the score."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=list(labels), average=None, zero_division=0)
    occurring = set(gold) | set(predicted)
    occurring_f1 = [f for label, f in zip(labels, f1) if label in occurring]
    return {
        "accuracy": float(accuracy_score(gold, predicted)),
        "macro_f1": float(sum(occurring_f1) / len(occurring_f1)) if occurring_f1 else 0.0,
        # F1 of each class weighted by its gold support (sklearn's average="weighted")
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
    }


# ---------------------------------------------------------------------------------------------------------
# multiple choice

# "answer" in any case, then an upper-case letter not starting a word ("The answer is a cat" picks nothing)
_ANSWER_IS = re.compile(r"(?i:answer)\s*(?:(?i:is)\s*)?[:\-]?\s*\(?([A-Z])(?![A-Za-z])")
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])(?:[).:\]]|\s*$|\s+(?![a-z]))")
_PAREN_LETTER = re.compile(r"\(([A-Z])\)")
_LONE_LETTER = re.compile(r"\b([A-Z])\b")


def extract_choice(text: str, letters: str = "ABCDEFGHIJ", options: Sequence[str] | None = None) -> str | None:
    """The option letter a model answer picks, or None. Tried in order (as lmms-eval's and MMBench's
    extractors do): "the answer is (B)" / "Answer: B"; a letter opening the answer ("B", "(B)", "B. cat");
    a parenthesised letter anywhere; a lone capital letter anywhere, except "A"/"I" starting a sentence
    before a lower-case word (the article and the pronoun); finally, with `options`, the option whose text
    the answer equals or contains (the longest such)."""
    text = strip_thinking(text)
    for pattern in (_ANSWER_IS, _LEADING_LETTER, _PAREN_LETTER):
        match = pattern.search(text)
        if match and match.group(1).upper() in letters:
            return match.group(1).upper()
    for match in _LONE_LETTER.finditer(text):
        letter = match.group(1)
        if letter in ("A", "I") and re.match(r"\s+[a-z]", text[match.end():]):
            continue
        if letter in letters:
            return letter
    if options:
        lowered = " ".join(text.lower().split())
        hits = [(len(o), letters[i]) for i, o in enumerate(options) if o and o.lower() in lowered]
        if hits:
            return max(hits)[1]
    return None


def mean(values: Iterable[float]) -> float | None:
    """Arithmetic mean, None for no values (a report shows "n/a" rather than a misleading 0)."""
    values = list(values)
    return sum(values) / len(values) if values else None


def count(items: Iterable[object]) -> dict[str, int]:
    """How many of each item, most common first."""
    return dict(Counter(str(i) for i in items).most_common())
