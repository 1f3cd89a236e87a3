"""The injection rules: named patterns for prompt injection (direct in questions, indirect in
documents) and system-prompt exfiltration, matched on the text and a de-obfuscated form.

Shared by the guard (questions), the passage screen (prompt time) and ingestion (chunks)."""

import base64
import binascii
import functools
import re

_VERB = (
    r"ignor(e|es|ing)|disregard|forget|overrides?|bypass|discard|set aside|pay no attention to"
    r"|disobey|stop following|(do not|don'?t) (follow|obey)|abandon|supersedes?|neglect"
)
_RULES = (
    r"instructions?|rules?|prompts?|guidelines|directions|directives|guidance|context|passages"
    r"|system (message|prompt)|programming|policies|policy|constraints|restrictions"
    r"|everything (you|above|before)|what (the system|you were|the developers?)"
    r"|(the )?rest of (this|the) (data|text|document|article|page|input|content)|other content"
)
_AI = r"ai|llm|language models?|chatbots?|assistants?|ai (systems?|assistants?|reviewers?)|model"
_REVEAL = (
    r"reveal|show|print|repeat|output|display|echo|dump|copy|quote|write( out)?|leak|tell me"
    r"|summari[sz]e|translate|list|what (is|are|were|does)"
)

# Prompt injection (direct in questions, indirect in retrieved passages) and system-prompt
# exfiltration, as configurable rules (name, pattern); matched on a normalised text as well.
INJECTION_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE | re.MULTILINE))
    for name, pattern in (
        ("override", rf"\b({_VERB})\b.{{0,50}}?\b({_RULES})\b"),
        (
            "override_foreign",
            r"\b(ignor\w*|olvida\w*|oublie\w*|vergiss\w*|ignoriere\w*)\b.{0,40}"
            r"\b(instruc\w+|istruzioni|anweisungen|consignes|regeln|reglas|règles)"
            r"|(忽略|无视|忘记).{0,12}(指令|指示|提示|规则)",
        ),
        (
            "rules_void",
            r"\b(instructions|rules|guidelines|prompt|restrictions|policies)\b.{0,30}"
            r"\b(are outdated|obsolete|are void|(are |is )?suspended|lifted|no longer (apply|valid)"
            r"|contained a bug|(do not|don'?t) apply)",
        ),
        (
            "new_instructions",
            r"\bnew (system )?(instructions?|rules?|task|priority task|policy|orders)\b\s*"
            r"(:|are\b|from\b)|\b(begin|start) new instructions\b|\binstructions supersede\b"
            r"|\bsupersedes? all (earlier|other|previous|prior)\b",
        ),
        (
            "exfiltrate",
            rf"\b({_REVEAL})\b.{{0,40}}\byour\b.{{0,25}}"
            r"\b(prompt|instructions?|rules|guidelines|configuration|system message|directives)\b"
            r"|\b(reveal|print|repeat|output|display|echo|dump|quote|leak|read|recite)\b.{0,40}"
            r"\b(system prompt|system message|hidden (instructions|rules|configuration)"
            r"|initial instructions|original prompt)"
            r"|\b(instructions|rules|guidelines|prompt)\b.{0,20}"
            r"\b(given to you|you were (given|told)|you have been given|you received)"
            r"|\bwhat were you told\b",
        ),
        (
            "context_dump",
            r"\b(repeat|print|output|echo|write out)\b.{0,30}\b(text|everything|words|all)\b.{0,30}"
            r"\b(above|before (this|the)|context window|your prompt)",
        ),
        (
            "role_hijack",
            r"\b(you are now|act as|pretend to be|roleplay as|role-play as|from now on you"
            r"|you are going to pretend|simulate|answer as if)\b.{0,60}"
            r"\b(dan|stan|jailbr\w+|unfiltered|unrestricted|no (rules|restrictions|limits|guidelines)"
            r"|developer mode|evil|no ethical|escaped|without (any )?(rules|limits|guidelines))\b"
            r"|\byou are now (a|an|in|my)\b"
            r"|\b(enable|activate|switch to|enter|with)\b.{0,15}"
            r"\b(developer|jailbreak|unrestricted|god|dan|maintenance) mode\b",
        ),
        (
            "no_limits",
            rf"\b(you|{_AI})\b.{{0,50}}\b(without|with no|no|not bound by|no longer bound by)\s+"
            r"(any\s+)?(ethical\s+)?(restrictions|limits|rules|filters|guidelines|content polic\w+)"
            r"|\b(bypass|turn off|disable|remove|circumvent)\b.{0,20}\b((content|safety) (filters?"
            r"|polic\w+|rules|guidelines)|guardrails|filters?|redaction|your (restrictions|rules))",
        ),
        (
            "addressed_to_ai",
            rf"\b(note|attention|instructions?|message|notice|hidden instruction)\b.{{0,25}}"
            rf"\b(to|for)\s+(the\s+|any\s+|all\s+)?({_AI})\b"
            rf"|\b(attention|note|notice|important)\s*,?\s*({_AI})\s*[:,]"
            rf"|\bif you are (an? )?({_AI})\b"
            rf"|\b({_AI})\b.{{0,30}}\b(reading|processing|summari[sz]ing)\b.{{0,40}}"
            r"\b(must|should|shall|need to)\b"
            rf"|^\s*(hey |dear )?({_AI})\s*[,:]|\bto the ({_AI})\s*:",
        ),
        (
            "output_control",
            r"\b(reply|respond|answer)\b.{0,20}\b(only with|with only|only in)\b"
            r"|\b(answer|respond to|reply to)\s+(every|all|each|any)\s+(subsequent\s+)?"
            r"(questions?|quer\w+|messages?)"
            r"|\b(append|add|insert|include)\b.{0,50}\b(to|in|into) (every|each|all|your) "
            r"(answers?|responses?|replies)"
            r"|\binclude the phrase\b|\b(begin|start) your (answer|response|reply) with\b"
            r"|\b(do not|don'?t) answer the question\b|\bignore the question\b"
            r"|\binstead,? (output|print|say|write|reply)\b",
        ),
        (
            "exfiltrate_data",
            r"\b(send|forward|post|e-?mail|leak|exfiltrate)\b.{0,40}"
            r"\b(conversation|chat|history|messages|user'?s? data|personal data)\b"
            r"|!\[[^\]]*\]\(\s*https?://[^)\s]*[?&=]"
            r"|\b(unredacted|un-redacted)\b|\braw\b.{0,20}\b(user )?(message|question|input)"
            r"|\b(print|reveal|show|output|include|list)\b.{0,40}"
            r"\b(api[ _-]?keys?|secrets|credentials|environment variables)"
            r"|\b(collect|harvest)\b.{0,20}\bthe user'?s?\b"
            r"|\b(tell|instruct|inform|remind) the (user|reader)\b.{0,10}\b(that|to)\b",
        ),
        (
            "delimiter",
            r"</?\s*(system|assistant|passages|instructions?)\s*>|\[/?(INST|SYS)\]|<\|im_(start|end)\|>"
            r"|\[\s*admin request\b|\bsystem message\s*:|:\s*system\s*:\s"
            r"|^\s*#{2,}\s*(system|instruction|assistant)\b|\"role\"\s*:\s*\"system\""
            r"|(^|\\n)\s*(system|assistant)\s*:\s|\[system\]|\bend of passages\b"
            rf"|<!--.{{0,60}}\b({_AI}|instructions?)\b",
        ),
    )
)

# Per rule, words it cannot match without (a plain alternation, cheap to scan): a rule whose
# gate finds nothing is not run. Ingestion screens every chunk. Gates are lower case and scan the
# lowered text: without IGNORECASE they run 7x faster (0.07 ms for all on a 1,200-character chunk).
_GATES: dict[str, re.Pattern[str]] = {
    name: re.compile(gate)
    for name, gate in {
        "override": r"ignor|disregard|forget|overrid|bypass|discard|set aside|pay no attention"
        r"|disobey|stop following|do not (?:follow|obey)|don'?t (?:follow|obey)|abandon|supersede"
        r"|neglect",
        "override_foreign": r"ignor|olvida|oublie|vergiss|忽略|无视|忘记",
        "rules_void": r"outdated|obsolete|void|suspended|lifted|no longer|contained a bug"
        r"|(?:do not|don'?t) apply",
        "new_instructions": r"new (?:system )?(?:instruction|rule|task|priority|polic|order)"
        r"|supersede",
        "exfiltrate": r"your|system prompt|system message|hidden|initial instructions"
        r"|original prompt|given to you|you were|you have been given|you received|were you told",
        "context_dump": r"above|before (?:this|the)|context window|your prompt",
        "role_hijack": r"you are now|act as|pretend|roleplay|role-play|from now on|simulate"
        r"|answer as if|mode",
        "no_limits": r"restrictions|limits|rules|filter|guidelines|polic|guardrails|redaction",
        "addressed_to_ai": r"ai\b|llm|language model|chatbot|assistant|model",
        "output_control": r"reply|respond|answer|append|add|insert|include|begin your|start your"
        r"|ignore the question|instead",
        "exfiltrate_data": r"conversation|chat|history|message|user|personal data|!\[|unredacted"
        r"|un-redacted|raw|api|secret|credential|environment variable|the reader",
        "delimiter": r"<|\[|#|role|system|assistant|end of passages",
    }.items()
}
_LEET = str.maketrans("013457@$", "oieastas")
_SPACED = re.compile(r"\b(?:\w ){3,}\w\b")
_MIXED = re.compile(r"\b(?=\w*[a-z])(?=\w*\d)\w+\b", re.IGNORECASE)
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


def _normalised(text: str) -> str:
    """Undoes cheap obfuscations: l33t digits inside words, s p a c e d letters, base64."""
    out = _MIXED.sub(lambda m: m.group(0).translate(_LEET), text)
    out = _SPACED.sub(lambda m: m.group(0).replace(" ", ""), out)
    out = re.sub(r"\s{2,}", " ", out)
    for blob in _BASE64.findall(text):
        try:
            decoded = base64.b64decode(blob, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            continue
        if decoded.isprintable():
            out += "\n" + decoded
    return out


@functools.lru_cache(maxsize=4096)  # the same corpus passages are screened turn after turn
def detect_injection(text: str) -> str | None:
    """The name of the first injection rule the text (or its de-obfuscated form) matches."""
    normalised = _normalised(text)
    variants = [(text, text.lower())]
    if normalised != text:
        variants.append((normalised, normalised.lower()))
    for name, pattern in INJECTION_RULES:
        gate = _GATES[name]
        if any(gate.search(lowered) and pattern.search(v) for v, lowered in variants):
            return name
    return None
