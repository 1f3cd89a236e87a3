"""What the `keel` command line and the server's logs print, without a server: version, help,
the chat printer's order and snippets, log formats and progress bars off a terminal."""

import argparse
import io
import json
import logging
import sys

import pytest

from cli.chat import SNIPPET_CHARS, _Printer, clip
from cli.main import build_parser
from evals.runner import progress_bar
from runtime import logs


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["--version"])
    assert exit.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("keel ") and out.split()[1][0].isdigit()


@pytest.mark.parametrize("command", ["serve", "bench"])
def test_every_option_says_what_it_does(command: str) -> None:
    parser = _subparser(command)
    assert parser.description
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options and all(a.help for a in options), [a.dest for a in options if not a.help]


def test_serve_help_gives_the_defaults() -> None:
    text = _subparser("serve").format_help()
    assert "KEEL_HOST, default 127.0.0.1" in text and "KEEL_PORT, default 8000" in text


def test_clip_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    assert clip("short  and\nflat", 40) == "short and flat"
    text = "Idle connections receive a keep-alive comment every fifteen seconds, always."
    clipped = clip(text, 40)
    assert clipped == "Idle connections receive a keep-alive…"
    assert len(clipped) <= 41 and text.startswith(clipped[:-1])
    assert clip("x" * 50, 10) == "x" * 10 + "…"  # one long word is cut where it must be


def test_chat_prints_timings_before_the_answer_and_marks_before_citations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    printer = _Printer()
    printer.progress({"node": "guard", "duration_ms": 2.2})
    printer.progress({"node": "retrieve", "duration_ms": 31})
    printer.token("Every fifteen seconds [1]. ")
    printer.progress({"node": "generate", "duration_ms": 12})
    snippet = "A comment line keeps idle connections alive " * 5
    printer.finished(
        {
            "answer": "ignored: streamed",
            "citations": [{"n": 1, "source": "streaming.md", "snippet": snippet}],
            "degraded": [],
            "cached": False,
        }
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "  · guard 2 ms  · retrieve 31 ms",
        "keel> Every fifteen seconds [1]. ",
        "  · generate 12 ms",
        f"  [1] streaming.md: {clip(snippet, SNIPPET_CHARS)}",
    ]
    assert lines[-1].endswith("…") and not lines[-1].endswith(" …")


def test_json_logs_carry_no_ansi_copy_of_the_message() -> None:
    # uvicorn logs "Uvicorn running on ..." with a colored copy in `extra`.
    record = logging.makeLogRecord(
        {"msg": "Uvicorn running on %s", "args": ("http://127.0.0.1:8000",), "levelno": 20}
    )
    record.color_message = "Uvicorn running on \x1b[1m%s\x1b[0m"
    line = logs.JsonFormatter().format(record)
    assert "\x1b" not in line and "\\u001b" not in line
    assert json.loads(line)["message"] == "Uvicorn running on http://127.0.0.1:8000"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("format", "terminal", "json_lines"),
    [
        ("auto", False, True),
        ("auto", True, False),
        ("json", True, True),
        ("text", False, False),
    ],
)
def test_log_format_follows_the_setting_and_the_terminal(
    monkeypatch: pytest.MonkeyPatch, format: str, terminal: bool, json_lines: bool
) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        logs.configure(format, verbose=False)
        logging.getLogger("keel").info("ready")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    line = stream.getvalue().strip()
    if json_lines:
        assert json.loads(line)["message"] == "ready"
    else:
        assert line.endswith("INFO keel ready") and not line.startswith("{")


def test_no_progress_bar_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(True, 10, "ingest (chunks)") is None
    monkeypatch.setattr(sys, "stderr", _Terminal())
    bar = progress_bar(True, 10, "ingest (chunks)")
    assert bar is not None
    bar.close()
    assert progress_bar(False, 10, "ingest (chunks)") is None
