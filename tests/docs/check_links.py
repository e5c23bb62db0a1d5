"""Keeps the documentation's links true: every relative link in the repository's markdown files
(`[text](docs/settings.md)`, `[text](../README.md#layout)`, `![image](chat-page.png)`,
`[text](#a-heading)`) must point at a file or directory that exists in the repository, and its
`#anchor`, where it has one, at a heading of that markdown file (anchors made as GitHub makes them).
Links to other sites (`https://...`, `mailto:`) are not followed. Standard library only.
Usage: python tests/docs/check_links.py   (from anywhere in the repository)"""

import re
import subprocess
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".git", "target", "node_modules", "test-artifacts"}

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and ![alt](target); the text may hold `code` and nested [brackets] one deep.
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^\s()]*(?:\([^\s()]*\)[^\s()]*)*)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+(<[^>]*>|\S+)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def markdown_files() -> list[Path]:
    """The markdown files git knows of (tracked, or new and not ignored); every one under the
    root outside build and dependency directories when this is not a git checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout
        files = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [path for path in ROOT.rglob("*.md")
                 if not SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts)]
    # A file in the middle of a merge is listed once per side: once is enough.
    return sorted({path for path in files if path.is_file()})


def prose_lines(text: str):
    """(line number, line) for each line outside fenced code blocks."""
    fence = None
    for number, line in enumerate(text.split("\n"), 1):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text (code spans and links by their text,
    emphasis dropped), lower case, without punctuation but `-` and `_`, spaces as `-`."""
    text = CODE_SPAN.sub(lambda match: match.group(2).strip(), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"(\*+|(?<!\w)_+|_+(?!\w))", "", text)
    kept = "".join(char for char in text.lower()
                   if char in "-_ " or unicodedata.category(char)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        seen: dict[str, int] = {}
        found = set()
        for _, line in prose_lines(path.read_text(encoding="utf-8")):
            heading = HEADING.match(line)
            if not heading:
                continue
            base = slug(heading.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        cache[path] = found
    return cache[path]


def link_targets(line: str) -> list[str]:
    # Links inside code spans are examples, not links.
    line = CODE_SPAN.sub(lambda match: " " * len(match.group(0)), line)
    targets = [match.group(1) for match in INLINE_LINK.finditer(line)]
    definition = REFERENCE_DEFINITION.match(line)
    if definition:
        targets.append(definition.group(1))
    return [target[1:-1] if target.startswith("<") else target for target in targets]


def check(path: Path, cache: dict[Path, set[str]]) -> tuple[int, list[str]]:
    problems = []
    checked = 0
    where = path.relative_to(ROOT)
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in link_targets(line):
            if not target or SCHEME.match(target) or target.startswith("//"):
                continue
            checked += 1
            file_part, _, anchor = target.partition("#")
            file_part = file_part.split("?", 1)[0]
            resolved = (path.parent / file_part).resolve() if file_part else path
            try:
                resolved.relative_to(ROOT)
            except ValueError:
                problems.append(f"{where}:{number}: {target}: points outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{where}:{number}: {target}: no such file or directory")
                continue
            if not anchor:
                continue
            if resolved.suffix != ".md":
                if not re.fullmatch(r"L\d+(-L\d+)?", anchor):
                    problems.append(f"{where}:{number}: {target}: an anchor into a file that is not markdown")
                continue
            if anchor not in anchors(resolved, cache):
                problems.append(f"{where}:{number}: {target}: {resolved.relative_to(ROOT)} has no heading "
                                f"with the anchor #{anchor}")
    return checked, problems


def main() -> int:
    cache: dict[Path, set[str]] = {}
    files = markdown_files()
    checked = 0
    problems = []
    for path in files:
        count, found = check(path, cache)
        checked += count
        problems += found
    for problem in problems:
        print(problem)
    print(f"{checked} relative links in {len(files)} markdown files: "
          f"{'all resolve' if not problems else f'{len(problems)} broken'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
