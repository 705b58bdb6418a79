"""What `terraform fmt` would change in a .tf file, without terraform.

The subset of hclwrite's formatting our files use: two spaces per open bracket, a
line that starts with a closing bracket one level out, the `=` of consecutive
single-line attributes aligned (one space after the longest name), one space after
`=`, no trailing whitespace, one newline at the end. A line with a comment after code
is reported too (fmt aligns those; our files have none).
"""

from __future__ import annotations

import re

_OPEN, _CLOSE = "{[(", "}])"


def _code_of(line: str) -> tuple[str, bool]:
    """The line with each string character replaced by `_` (same length, so positions
    match the raw line) and any comment removed; whether it had a comment. Brackets of
    interpolations (`${...}`) inside strings are blanked too: they balance anyway."""
    out: list[str] = []
    in_string = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string:
            if ch == "\\":
                out.append("__"[: len(line) - i])
                i += 2
                continue
            if ch == '"':
                in_string = False
            out.append(ch if ch == '"' else "_")
            i += 1
            continue
        if ch == '"':
            in_string = True
            out.append(ch)
        elif ch == "#" or line.startswith("//", i):
            return "".join(out).rstrip(), True
        else:
            out.append(ch)
        i += 1
    return "".join(out).rstrip(), False


def _net_brackets(code: str) -> int:
    return sum(code.count(c) for c in _OPEN) - sum(code.count(c) for c in _CLOSE)


def fmt_problems(text: str) -> list[str]:
    problems: list[str] = []
    if not text.endswith("\n") or text.endswith("\n\n"):
        problems.append("the file must end with exactly one newline")
    lines = text.split("\n")[:-1]
    depth = 0
    chain: list[tuple[int, str, str]] = []  # (line number, name part, raw line)

    def close_chain() -> None:
        if chain:
            width = max(len(name) for _, name, _ in chain)
            for number, name, raw in chain:
                indent = raw[: len(raw) - len(raw.lstrip())]
                value = raw[len(indent) + len(name):].lstrip()[1:].lstrip()
                expected = f"{indent}{name}{' ' * (width - len(name) + 1)}= {value}"
                if raw != expected:
                    problems.append(f"line {number}: `=` not aligned: {raw!r} -> {expected!r}")
            chain.clear()

    for number, raw in enumerate(lines, start=1):
        if raw != raw.rstrip():
            problems.append(f"line {number}: trailing whitespace")
        stripped = raw.strip()
        if not stripped:
            close_chain()
            if raw:
                problems.append(f"line {number}: blank line with spaces")
            continue
        code, has_comment = _code_of(stripped)
        lead = len(raw) - len(raw.lstrip())
        if has_comment and code:
            problems.append(f"line {number}: a comment after code (fmt would align it)")
        level = depth - (1 if code[:1] in _CLOSE and code else 0)
        expected_indent = "  " * max(level, 0)
        if raw[:lead] != expected_indent:
            problems.append(f"line {number}: indent {lead}, "
                            f"expected {len(expected_indent)}")
        depth += _net_brackets(code)
        assign = re.match(r"^([^=]*?[^\s=!<>])\s*=(?![=>])", code)
        if not has_comment and assign and _net_brackets(code[assign.end():]) == 0 \
                and _net_brackets(assign.group(1)) == 0:
            chain.append((number, stripped[: len(assign.group(1))], raw))
        else:
            close_chain()
    close_chain()
    if depth != 0:
        problems.append(f"unbalanced brackets at the end of the file ({depth:+d})")
    return problems
