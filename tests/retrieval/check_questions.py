"""Check questions.jsonl: exactly 40 unique questions, each whose source page
exists under the corpus root (the folder containing library/) and whose
evidence regex matches the page's visible text (case-insensitive).

Usage: python3 check_questions.py CORPUS_ROOT [QUESTIONS_JSONL]
"""

import html.parser
import json
import re
import sys
from pathlib import Path

EXPECTED_COUNT = 40
SKIP_TAGS = {"script", "style"}
# Void elements never have an end tag, so they must not affect the skip depth.
VOID_TAGS = {
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link",
    "meta", "param", "source", "track", "wbr",
}


class VisibleText(html.parser.HTMLParser):
    """Collects the visible text of an HTML page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.stack = []  # one bool per open element: does it start a skip?
        self.skip_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            return
        classes = ""
        for name, value in attrs:
            if name == "class" and value:
                classes = value
        skip = tag in SKIP_TAGS or "headerlink" in classes.split()
        self.stack.append((tag, skip))
        if skip:
            self.skip_depth += 1

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        # Pop up to the matching open tag (tolerates unclosed elements).
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for _, skip in self.stack[i:]:
                    if skip:
                        self.skip_depth -= 1
                del self.stack[i:]
                return

    def handle_data(self, data):
        if self.skip_depth == 0:
            self.parts.append(data)

    def text(self):
        return re.sub(r"\s+", " ", "".join(self.parts)).strip()


def visible_text(path):
    parser = VisibleText()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser.text()


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(argv[1])
    qfile = Path(argv[2]) if len(argv) > 2 else Path(__file__).with_name("questions.jsonl")
    failures = 0
    seen = set()
    questions = []
    for lineno, line in enumerate(qfile.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            q = json.loads(line)
            questions.append((lineno, q["question"], q["source"], q["evidence"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            print(f"FAIL line {lineno}: bad record: {e}")
            failures += 1

    cache = {}
    for lineno, question, source, evidence in questions:
        label = f"line {lineno} [{source}]"
        key = question.strip().lower()
        if key in seen:
            print(f"FAIL {label}: duplicate question: {question}")
            failures += 1
        seen.add(key)
        path = root / source
        if not path.is_file():
            print(f"FAIL {label}: file not found: {path}")
            failures += 1
            continue
        if source not in cache:
            cache[source] = visible_text(path)
        text = cache[source]
        try:
            pattern = re.compile(evidence, re.IGNORECASE)
        except re.error as e:
            print(f"FAIL {label}: bad regex {evidence!r}: {e}")
            failures += 1
            continue
        matches = list(pattern.finditer(text))
        if not matches:
            print(f"FAIL {label}: 0 matches for {evidence!r}\n    Q: {question}")
            failures += 1
            continue
        m = matches[0]
        pad = max(0, (100 - (m.end() - m.start())) // 2)
        start, end = max(0, m.start() - pad), min(len(text), m.end() + pad)
        print(f"ok   {label}: {len(matches)} match(es)\n    Q: {question}\n    > ...{text[start:end]}...")

    if len(questions) != EXPECTED_COUNT:
        print(f"FAIL: expected {EXPECTED_COUNT} questions, found {len(questions)}")
        failures += 1
    pages = {source for _, _, source, _ in questions}
    print(f"\n{len(questions)} questions over {len(pages)} pages; {failures} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
