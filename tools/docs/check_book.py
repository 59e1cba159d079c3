#!/usr/bin/env python3
"""Checks the built guide and the README for broken relative links and anchors.

Usage: check_book.py REPO_ROOT BOOK_DIR

Every relative href/src in the built HTML must name a file of the book, and its #fragment an
id in that file. Links in README.md to files of the repository must exist; links into the
guide's sources (docs/src/*.md#anchor) are checked against the built page's ids. Absolute
paths are node routes (/docs, /ui/, ...) and must be one of NODE_ROUTES. Prints one line per
problem and exits 1 if there is any.
"""
import html.parser
import os
import re
import sys
import urllib.parse

# Routes of a running node the guide may link to (it is served by the node at /guide/).
NODE_ROUTES = ("/docs", "/openapi.json", "/ui/", "/ohif/", "/health", "/metrics", "/guide/")


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids = set()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("id", "name") and value:
                self.ids.add(value)
            if value and ((name == "href" and tag in ("a", "link")) or (name == "src" and tag in ("img", "script"))):
                self.links.append(value)


def parse(path, cache={}):
    if path not in cache:
        page = Page()
        with open(path, encoding="utf-8") as f:
            page.feed(f.read())
        cache[path] = page
    return cache[path]


def is_external(link):
    return re.match(r"^[a-z][a-z0-9+.-]*:", link) is not None


def check_target(target, fragment, where, problems):
    if not os.path.exists(target):
        problems.append(f"{where}: no such file {target}")
        return
    if os.path.isdir(target):
        target = os.path.join(target, "index.html")
        if not os.path.exists(target):
            problems.append(f"{where}: folder without index.html")
            return
    if fragment and target.endswith(".html"):
        if urllib.parse.unquote(fragment) not in parse(target).ids:
            problems.append(f"{where}: no anchor #{fragment} in {target}")


def check_book(book, problems):
    pages = 0
    for root, _, files in os.walk(book):
        for name in files:
            if not name.endswith(".html"):
                continue
            path = os.path.join(root, name)
            pages += 1
            for link in parse(path).links:
                where = f"{os.path.relpath(path, book)}: {link}"
                if is_external(link) or link.startswith("//"):
                    continue
                url, _, fragment = link.partition("#")
                url = url.split("?")[0]
                if url.startswith("/"):
                    if not any(url == r.rstrip("/") or url.startswith(r) for r in NODE_ROUTES):
                        problems.append(f"{where}: absolute path is not a node route")
                    continue
                if not url:
                    if fragment and fragment not in parse(path).ids:
                        problems.append(f"{where}: no anchor #{fragment} on this page")
                    continue
                target = os.path.normpath(os.path.join(os.path.dirname(path), urllib.parse.unquote(url)))
                if not target.startswith(os.path.abspath(book)):
                    problems.append(f"{where}: leaves the book (name the repository path in code instead)")
                    continue
                check_target(target, fragment, where, problems)
    return pages


def check_readme(repo, book, problems):
    text = open(os.path.join(repo, "README.md"), encoding="utf-8").read()
    src = os.path.join(repo, "docs", "src")
    links = 0
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if is_external(link):
            continue
        links += 1
        url, _, fragment = link.partition("#")
        where = f"README.md: {link}"
        if not url:
            problems.append(f"{where}: anchors within the README are not checked; link the guide")
            continue
        path = os.path.normpath(os.path.join(repo, url))
        if not os.path.exists(path):
            problems.append(f"{where}: no such file")
            continue
        if path.startswith(src + os.sep) and path.endswith(".md"):
            built = os.path.join(book, os.path.relpath(path, src)[:-3] + ".html")
            check_target(built, fragment, where, problems)
    return links


def main():
    repo, book = (os.path.abspath(a) for a in sys.argv[1:3])
    problems = []
    pages = check_book(book, problems)
    links = check_readme(repo, book, problems)
    for p in problems:
        print(p)
    print(f"check_book: {pages} pages, {links} README links, {len(problems)} problems")
    sys.exit(1 if problems or pages == 0 else 0)


if __name__ == "__main__":
    main()
