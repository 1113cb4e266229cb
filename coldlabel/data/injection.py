"""Instruction-like catalog text, found at prepare time so a seller cannot quietly steer the labeler.

Prompts already fence item text off as data (``labeler/prompts.py``); this is the second line: items whose
text reads like an instruction to a model are *flagged* in ``items.jsonl`` (the rule and the words that
matched), listed in ``processed/report.json``, and their labels follow ``labeler.flagged_items``.

The rules are few and literal on purpose: each names a way catalog text addresses a model rather than a
shopper. A match needs the addressing *and* the instruction ("rank this first", not "first"; "ignore
previous instructions", not "ignore"), so ordinary titles ("AI-powered hair dryer", "Sound System: 2.1",
"Rank 1 gaming mouse") pass. A rule set cannot be complete; the report's counts show what it caught.

    override      ignore / disregard / forget ... previous|prior|above|all ... instructions|prompts|rules;
                  "system prompt"
    addressed     text addressed to an AI: "dear AI", "note to the assistant", "assistant: rank ...",
                  "you are an AI ... rank/choose/output ..."
    ranking       orders about this item's rank or score: "rank this first", "put it at the top of the list",
                  "give it a score of 5", "always recommend this"
    role-tag      chat-template markers: <|im_start|>, <|system|>, [INST], <<SYS>>, <system>, ### Instruction
    answer-json   an answer or tool-call fragment: {"asins": ...}, {"items": ...}, "tool_calls", "function_call"
"""
from __future__ import annotations

import re

# Who a model-directed text addresses. No bare "model" (a product has a model number) and no first names.
_AI = r"(?:ai|a\.i\.|assistant|chat ?bot|llm|language model|gpt|chatgpt)"
_ORDER = r"(?:rank|rate|score|list|recommend|select|choose|pick|promote|prioriti[sz]e|output|answer|respond|ignore|forget)"
_THIS = r"(?:this|me|it|us|this (?:item|product|listing|one))"

RULES: dict[str, tuple[re.Pattern, ...]] = {
    "override": (
        re.compile(r"\b(?:ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,30}?\b(?:previous|prior|above|earlier"
                   r"|preceding|all)\b[^.!?\n]{0,20}?\b(?:instructions?|prompts?|rules|directions|guidelines)\b", re.I),
        re.compile(r"\bsystem prompt\b", re.I),
    ),
    "addressed": (
        re.compile(rf"\b(?:dear|attention|note (?:to|for)|hey|hello|message (?:to|for))\s+(?:the\s+|an?\s+|all\s+)?"
                   rf"{_AI}s?\b", re.I),
        re.compile(rf"\b{_AI}s?\s*[:,]\s*(?:please\s+)?(?:you must\s+|always\s+)?{_ORDER}\b", re.I),
        re.compile(rf"\b(?:you are|if you are|as) (?:now\s+)?(?:an?\s+|the\s+)?(?:helpful\s+)?{_AI}\b[^.!?\n]{{0,40}}?"
                   rf"\b{_ORDER}\b", re.I),
    ),
    "ranking": (
        re.compile(rf"\b(?:rank|rate|score|list|recommend|select|choose|pick|promote|prioriti[sz]e)\s+{_THIS}\s+"
                   r"(?:as\s+)?(?:first|top|highest|higher|#\s*1|no\.?\s*1|number one|above (?:all|the others|the rest)"
                   r"|(?:the\s+)?(?:best|top) (?:choice|pick|item|product))(?!\w)", re.I),
        re.compile(rf"\b(?:put|place|show)\s+{_THIS}\s+(?:first|#\s*1|at the top of the (?:list|ranking|results))(?!\w)",
                   re.I),
        re.compile(rf"\b(?:give|assign|award)\s+{_THIS}(?:\s+(?:item|product))?\s+(?:an?\s+|the\s+)?"
                   r"(?:score|rating|rank)\s+(?:of\s+)?(?:5|five|10|ten|the (?:highest|maximum|top))(?!\w)", re.I),
        re.compile(rf"\balways (?:recommend|rank|select|choose|pick|prefer) {_THIS}\b", re.I),
        re.compile(rf"\b{_THIS} (?:must|should) (?:always )?(?:be )?(?:ranked|rated|listed|recommended|chosen|selected) "
                   r"(?:first|highest|top|above)\b", re.I),
    ),
    "role-tag": (
        re.compile(r"<\|\s*/?\s*(?:im_start|im_end|system|assistant|user|endoftext|eot_id|start_header_id)\s*\|>", re.I),
        re.compile(r"\[/?INST\]|<</?SYS>>", re.I),
        re.compile(r"</?\s*(?:system|assistant|instructions?)\s*>", re.I),
        re.compile(r"#{2,}\s*(?:system|instructions?|assistant)\b", re.I),
    ),
    "answer-json": (
        re.compile(r"\{\s*[\"']?(?:asins?|items|ids|categories|subcategories|ranking|selected|profile|score)[\"']?\s*:",
                   re.I),
        re.compile(r"[\"'](?:tool_calls?|function_call|arguments)[\"']\s*:", re.I),
    ),
}


def flag_reason(*texts: str) -> str:
    """``"<rule>: <matched words>"`` for the first rule any of ``texts`` matches, else ``""``."""
    for rule, patterns in RULES.items():
        for text in texts:
            if not text:
                continue
            for pattern in patterns:
                m = pattern.search(text)
                if m:
                    words = " ".join(m.group(0).split())
                    return f"{rule}: {words[:60]}"
    return ""
