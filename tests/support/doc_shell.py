"""Reading DEPLOYMENT.md: its sections, fenced blocks, links, and a small shell for its commands.

The shell runs the document's ``sh`` blocks the way an operator's bash would
read them (quotes, ``\\`` continuations, comments, ``$VAR``, ``${VAR}``,
``$(...)``, heredocs, ``> file``, ``eval``, ``export``), but every command is
handed to a Python handler registered by the test instead of being executed.
Anything outside that subset (pipes, ``;``, ``&&``, ``cd``, unset variables,
unquoted expansions that would be word-split) is an error, so the document
stays in a form the test can check completely.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell"})
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


class ShellError(Exception):
    """A command line the test's shell does not accept; the message says where."""


# --------------------------------------------------------------------------- markdown


@dataclass(frozen=True)
class Heading:
    level: int
    text: str
    slug: str
    line: int


@dataclass(frozen=True)
class Block:
    """A fenced code block, with the ``##`` section it is in."""

    language: str
    text: str
    line: int  # 1-based line of the opening fence
    section: str  # text of the enclosing level-2 heading ("" before the first)


def github_slug(text: str) -> str:
    """The anchor GitHub gives a heading (without the de-duplicating suffix)."""
    text = re.sub(r"`|\*\*|\*|_(?=\W)|(?<=\W)_", "", text)
    text = text.strip().lower()
    kept = "".join(
        char for char in text if char in " -_" or unicodedata.category(char)[0] in {"L", "N"}
    )
    return kept.replace(" ", "-")


def headings(markdown: str) -> list[Heading]:
    """Every heading outside fenced blocks, with GitHub's de-duplicated slugs."""
    found: list[Heading] = []
    seen: dict[str, int] = {}
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(line)
        if match:
            marker = match.group(2)
            if fence is None:
                fence = marker
            elif marker.startswith(fence[0]) and len(marker) >= len(fence):
                fence = None
            continue
        if fence is not None:
            continue
        heading = _HEADING.match(line)
        if heading:
            slug = github_slug(heading.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.append(
                Heading(
                    len(heading.group(1)),
                    heading.group(2),
                    slug if count == 0 else f"{slug}-{count}",
                    number,
                )
            )
    return found


def fenced_blocks(markdown: str) -> list[Block]:
    """Every fenced block, in order, with its language and section."""
    blocks: list[Block] = []
    section = ""
    fence: str | None = None
    indent = 0
    language = ""
    start = 0
    body: list[str] = []
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence, indent, language, start = (
                    match.group(2),
                    len(match.group(1)),
                    match.group(3).lower(),
                    number,
                )
                body = []
                continue
            heading = _HEADING.match(line)
            if heading and len(heading.group(1)) == 2:
                section = heading.group(2)
            continue
        if match and match.group(2).startswith(fence[0]) and len(match.group(2)) >= len(fence):
            blocks.append(Block(language, "\n".join(body) + "\n", start, section))
            fence = None
            continue
        body.append(line[indent:] if line[:indent].strip() == "" else line)
    if fence is not None:
        raise ValueError(f"unclosed fenced block at line {start}")
    return blocks


def links(markdown: str) -> list[tuple[str, str]]:
    """``(text, target)`` of every inline link outside fenced blocks and code spans."""
    outside: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if match:
            fence = None if fence is not None else match.group(2)
            continue
        if fence is None:
            outside.append(re.sub(r"`[^`]*`", "", line))
    return _LINK.findall("\n".join(outside))


def code_spans(markdown: str) -> list[str]:
    """The text of every inline code span outside fenced blocks."""
    spans: list[str] = []
    fence: str | None = None
    for line in markdown.splitlines():
        match = _FENCE.match(line)
        if match:
            fence = None if fence is not None else match.group(2)
            continue
        if fence is None:
            spans.extend(re.findall(r"`([^`]+)`", line))
    return spans


def section_text(markdown: str, title_prefix: str) -> str:
    """The text of the level-2 section whose heading starts with ``title_prefix``."""
    lines = markdown.splitlines()
    found = [h for h in headings(markdown) if h.level == 2 and h.text.startswith(title_prefix)]
    if len(found) != 1:
        raise KeyError(f"no single section starting with {title_prefix!r}")
    begin = found[0].line
    later = [h.line for h in headings(markdown) if h.level == 2 and h.line > begin]
    end = later[0] - 1 if later else len(lines)
    return "\n".join(lines[begin:end])


def table_rows(text: str) -> list[list[str]]:
    """Rows of the Markdown tables in ``text`` (header and separator rows dropped)."""
    rows: list[list[str]] = []
    previous = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and not re.fullmatch(r"\|[\s:|-]+\|", stripped):
            cells = [cell.strip() for cell in stripped.strip("|").split("|")]
            if not previous.startswith("|"):  # a header row
                previous = stripped
                continue
            rows.append(cells)
        previous = stripped
    return rows


# --------------------------------------------------------------------------- the shell


@dataclass
class Command:
    """One simple command after expansion and quote removal."""

    argv: list[str]
    line: int
    source: str
    stdout: str | None = None  # the target of "> file"
    stdin: str | None = None  # a heredoc's body


Handler = Callable[[Command], str]


@dataclass
class DocShell:
    """A bash subset whose commands are Python handlers (see the module docstring).

    ``handlers`` maps a command name to a function returning the command's
    standard output (used by ``$(...)``). ``variables`` are the shell's
    variables; ``placeholders`` replace ``<...>`` markers in arguments and
    heredocs, so the document's templates can be run with real values.
    """

    handlers: dict[str, Handler]
    variables: dict[str, str] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    history: list[Command] = field(default_factory=list)

    def run(self, text: str, first_line: int = 1) -> str:
        """Run a script; returns everything its commands wrote to stdout."""
        output: list[str] = []
        for line, source, heredoc in self._logical_lines(text, first_line):
            output.append(self._run_line(line, source, heredoc))
        return "".join(output)

    # Lines -----------------------------------------------------------------------

    @staticmethod
    def _logical_lines(text: str, first_line: int) -> list[tuple[int, str, str | None]]:
        raw = text.splitlines()
        result: list[tuple[int, str, str | None]] = []
        index = 0
        while index < len(raw):
            start = index
            parts = [raw[index]]
            while parts[-1].endswith("\\") and not parts[-1].lstrip().startswith("#"):
                index += 1
                if index >= len(raw):
                    raise ShellError(f"line {first_line + start}: continuation at the end")
                parts[-1] = parts[-1][:-1]
                parts.append(raw[index])
            source = " ".join(part.strip() for part in parts)
            heredoc: str | None = None
            at = _unquoted_view(source).find("<<")
            marker = _HEREDOC.match(source, at) if at >= 0 else None
            if at >= 0 and marker is None:
                raise ShellError(f"line {first_line + start}: unreadable heredoc: {source}")
            if marker:
                delimiter = marker.group(2)
                body: list[str] = []
                index += 1
                while index < len(raw) and raw[index] != delimiter:
                    body.append(raw[index])
                    index += 1
                if index >= len(raw):
                    raise ShellError(f"line {first_line + start}: heredoc {delimiter} not closed")
                if not marker.group(1):
                    raise ShellError(
                        f"line {first_line + start}: quote the heredoc delimiter "
                        f"('{delimiter}') so nothing in it is expanded"
                    )
                heredoc = "\n".join(body) + "\n"
                source = source[: marker.start()] + source[marker.end() :]
            index += 1
            if source.strip():
                result.append((first_line + start, source, heredoc))
        return result

    def _run_line(self, line: int, source: str, heredoc: str | None) -> str:
        try:
            words, stdout = self._words(source)
        except ShellError as exc:
            raise ShellError(f"line {line}: {exc}: {source}") from None
        if not words:
            return ""
        assignments: dict[str, str] = {}
        while words and _ASSIGNMENT.match(words[0]):
            name, value = _ASSIGNMENT.match(words[0]).groups()  # type: ignore[union-attr]
            assignments[name] = value
            words.pop(0)
        if not words:
            self.variables.update(assignments)
            return ""
        if assignments:
            raise ShellError(f"line {line}: per-command assignments are not used: {source}")
        words = [self._fill(word, line) for word in words]
        stdin = None if heredoc is None else self._fill(heredoc, line)
        command = Command(words, line, source, stdout, stdin)
        output = self._dispatch(command)
        if stdout is not None:
            self.files[stdout] = output
            return ""
        return output

    def _dispatch(self, command: Command) -> str:
        name = command.argv[0]
        if name == "export":
            for word in command.argv[1:]:
                match = _ASSIGNMENT.match(word)
                if not match:
                    raise ShellError(f"line {command.line}: export wants NAME=value: {word}")
                self.variables[match.group(1)] = match.group(2)
            return ""
        if name == "eval":
            return self.run(" ".join(command.argv[1:]), command.line)
        if name == "cd":
            raise ShellError(
                f"line {command.line}: DEPLOYMENT.md runs everything from the repository "
                "root (terraform -chdir=terraform), not cd"
            )
        handler = self.handlers.get(name)
        if handler is None:
            raise ShellError(
                f"line {command.line}: DEPLOYMENT.md runs {name!r}, which "
                "tests/integration/test_deployment_doc.py does not check: add a handler"
            )
        self.history.append(command)
        return handler(command)

    def _fill(self, text: str, line: int) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.placeholders:
                raise ShellError(f"line {line}: no value for the placeholder <{name}>")
            return self.placeholders[name]

        return re.sub(r"<([a-z][a-z ]*[a-z])>", replace, text)

    # Words -----------------------------------------------------------------------

    def _words(self, source: str) -> tuple[list[str], str | None]:
        words: list[str] = []
        current: list[str] | None = None
        redirect_next = False
        stdout: str | None = None
        index = 0
        length = len(source)

        def finish() -> None:
            nonlocal current, redirect_next, stdout
            if current is None:
                return
            word = "".join(current)
            if redirect_next:
                stdout, redirect_next = word, False
            else:
                words.append(word)
            current = None

        while index < length:
            char = source[index]
            if char in " \t":
                finish()
                index += 1
            elif char == "#" and current is None:
                break
            elif char in "|;&" or (char == "<" and current is None):
                raise ShellError(f"{char!r} is not used in DEPLOYMENT.md blocks")
            elif char == ">" and current is None:
                if redirect_next or stdout is not None:
                    raise ShellError("one '> file' per command")
                redirect_next = True
                index += 1
            elif char == "'":
                end = source.find("'", index + 1)
                if end < 0:
                    raise ShellError("unterminated single quote")
                current = (current or []) + [source[index + 1 : end]]
                index = end + 1
            elif char == '"':
                text, index = self._double_quoted(source, index + 1)
                current = (current or []) + [text]
            elif char == "\\":
                if index + 1 >= length:
                    raise ShellError("a lone backslash")
                current = (current or []) + [source[index + 1]]
                index += 2
            elif char == "$":
                value, index = self._expansion(source, index)
                if re.search(r"\s", value):
                    raise ShellError(
                        f"an unquoted expansion holds whitespace ({value[:40]!r}): quote it"
                    )
                current = (current or []) + [value]
            elif char == "`":
                raise ShellError("use $(...), not backticks")
            else:
                current = (current or []) + [char]
                index += 1
        finish()
        if redirect_next:
            raise ShellError("'>' without a file")
        return words, stdout

    def _double_quoted(self, source: str, index: int) -> tuple[str, int]:
        parts: list[str] = []
        while index < len(source):
            char = source[index]
            if char == '"':
                return "".join(parts), index + 1
            if char == "\\" and index + 1 < len(source) and source[index + 1] in '"\\$`':
                parts.append(source[index + 1])
                index += 2
            elif char == "$":
                value, index = self._expansion(source, index)
                parts.append(value)
            elif char == "`":
                raise ShellError("use $(...), not backticks")
            else:
                parts.append(char)
                index += 1
        raise ShellError("unterminated double quote")

    def _expansion(self, source: str, index: int) -> tuple[str, int]:
        """Expand the ``$`` at ``index``; returns the value and the index after it."""
        rest = source[index + 1 :]
        if rest.startswith("("):
            end = _matching_paren(source, index + 1)
            inner = source[index + 2 : end]
            output = self.run(inner)
            return output.rstrip("\n"), end + 1
        if rest.startswith("{"):
            end = source.find("}", index)
            if end < 0:
                raise ShellError("unterminated ${")
            name, _, default = source[index + 2 : end].partition(":-")
            if not _NAME.fullmatch(name):
                raise ShellError(f"unsupported parameter expansion ${{{source[index + 2 : end]}}}")
            value = self.variables.get(name)
            if value is None or (value == "" and default):
                if not default and value is None:
                    raise ShellError(f"${name} is not set")
                value = default
            return value, end + 1
        match = _NAME.match(rest)
        if not match:
            return "$", index + 1
        name = match.group(0)
        if name not in self.variables:
            raise ShellError(f"${name} is not set")
        return self.variables[name], index + 1 + len(name)


def _matching_paren(source: str, open_index: int) -> int:
    depth, index, quote = 0, open_index, ""
    while index < len(source):
        char = source[index]
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"':
                index += 1
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    raise ShellError("unterminated $(")


def _unquoted_view(source: str) -> str:
    """``source`` with quoted text and comments blanked out (same length)."""
    out, quote = [], ""
    for index, char in enumerate(source):
        if quote:
            out.append(" ")
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            out.append(" ")
        elif char == "#" and (index == 0 or source[index - 1] in " \t"):
            out.extend(" " * (len(source) - index))
            break
        else:
            out.append(char)
    return "".join(out)
