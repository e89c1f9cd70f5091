"""After `mdbook build`: put the cited source files inside the book and check every link.

The chapters cite code the way a reader on the repository would follow it: a link to
the file, whose text names the function, type or test (`[`normal_kl`](../crates/ddpm/src/likelihood.rs)`).
Such a link leaves the book, so this script

1. writes a plain source view of every cited file (and of every file of a cited
   folder) under `source/`, one anchor per line (`#L27`);
2. rewrites each link that leaves the book to that view, at the line where the named
   item is defined, found in the source file now, so the line cannot drift: a name that
   is no longer defined in the file is an error, not a link to the top;
3. checks every `href` and `src` of every page: no external URL, every file present,
   every `#anchor` an `id` of its page.

Usage: python3 links.py REPO_ROOT BOOK_SRC BOOK_OUT. Prints the counts; exits 1 on any
broken link, external URL or unresolved name.
"""

import html
import os
import posixpath
import re
import sys

REPO, SRC, OUT = (os.path.abspath(p) for p in sys.argv[1:4])
SRC_REL = os.path.relpath(SRC, REPO).replace(os.sep, "/")  # "notebooks-md"
SOURCE_DIR = "source"  # the source views, inside the book

errors = []
source_pages = {}  # repo-relative path of a cited file or folder -> lines (None for a folder)

# A definition of NAME: `pub fn name`, `struct Name`, `pub(crate) const NAME`, a test's
# `fn name`, a struct field `pub name:`, or an enum variant `Name,` / `Name {` / `Name(`.
ITEM = r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:(?:const|async|unsafe)\s+)*(?:fn|struct|enum|trait|type|const|static|mod|union)\s+{name}\b"
FIELD = r"^\s*(?:pub(?:\([^)]*\))?\s+)?{name}\s*:"
VARIANT = r"^\s*{name}\s*(?:,|\{{|\(|$)"


def definition_line(lines, name):
    """1-based line of the definition of `name` (`Type::member` or `item`), or None."""
    if "::" in name:
        owner, member = name.rsplit("::", 1)
        owner = owner.rsplit("::", 1)[-1]
        head = re.compile(rf"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:struct|enum|trait|impl\b[^{{]*?)\s*\b{re.escape(owner)}\b")
        member_res = [re.compile(p.format(name=re.escape(member))) for p in (ITEM, FIELD, VARIANT)]
        for start, line in enumerate(lines):
            if not head.search(line):
                continue
            # search the item's body: up to the closing brace at the head's indentation
            indent = len(line) - len(line.lstrip())
            for k in range(start + 1, len(lines)):
                body = lines[k]
                if body.strip() == "}" and len(body) - len(body.lstrip()) == indent:
                    break
                if any(r.search(body) for r in member_res):
                    return k + 1
        return None
    item = re.compile(ITEM.format(name=re.escape(name)))
    for k, line in enumerate(lines):
        if item.search(line):
            return k + 1
    return None


def cited_name(text):
    """The item a link's text names, or None when it names a file, a folder or a page."""
    name = text.strip().strip("`").removesuffix("()")
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*", name) else None


def load_source(repo_path):
    full = os.path.join(REPO, repo_path)
    if os.path.isdir(full):
        source_pages.setdefault(repo_path.rstrip("/") + "/", None)
        for entry in sorted(os.listdir(full)):
            if os.path.isfile(os.path.join(full, entry)):
                load_source(posixpath.join(repo_path.rstrip("/"), entry))
        return None
    if repo_path not in source_pages:
        with open(full, encoding="utf-8") as f:
            source_pages[repo_path] = f.read().split("\n")
    return source_pages[repo_path]


def view_path(repo_path):
    """Book-relative path of the source view of a repo file or folder."""
    if repo_path.endswith("/"):
        return f"{SOURCE_DIR}/{repo_path}index.html"
    return f"{SOURCE_DIR}/{repo_path}.html"


LINK = re.compile(r'<a href="([^"#?]*)"([^>]*)>(.*?)</a>', re.S)


def rewrite_page(page_rel, text):
    """Point the links of one page that leave the book at the source views."""
    page_dir = posixpath.dirname(page_rel)

    def fix(m):
        href, attrs, inner = m.group(1), m.group(2), m.group(3)
        if not href or re.match(r"^[a-z][a-z0-9+.-]*:", href) or href.startswith("/"):
            return m.group(0)
        inside_book = posixpath.normpath(posixpath.join(page_dir, href))
        if not inside_book.startswith("../"):
            return m.group(0)
        repo_path = posixpath.normpath(posixpath.join(SRC_REL, inside_book))
        if repo_path.startswith("../") or not os.path.exists(os.path.join(REPO, repo_path)):
            errors.append(f"{page_rel}: link to {href}: no such file in the repository")
            return m.group(0)
        if os.path.isdir(os.path.join(REPO, repo_path)):
            repo_path += "/"
        lines = load_source(repo_path)
        target = posixpath.relpath(view_path(repo_path), page_dir or ".")
        name = cited_name(re.sub(r"<[^>]+>", "", html.unescape(inner)))
        if name and lines is not None:
            line = definition_line(lines, name)
            if line is None:
                errors.append(f"{page_rel}: `{name}` is not defined in {repo_path}")
            else:
                target += f"#L{line}"
        return f'<a href="{target}"{attrs}>{inner}</a>'

    return LINK.sub(fix, text)


STYLE = """body{margin:0;font:14px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#fff;color:#1f2328}
header{position:sticky;top:0;background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:8px 16px;font-family:system-ui,sans-serif}
pre{margin:0;padding:8px 0}
.l{display:block;padding-right:16px;white-space:pre}
.l:target{background:#fff8c5}
.l a{display:inline-block;width:5ch;margin-right:2ch;text-align:right;color:#8c959f;text-decoration:none;user-select:none}
ul{font-family:system-ui,sans-serif}"""


def write_views():
    for repo_path, lines in sorted(source_pages.items()):
        out_rel = view_path(repo_path)
        depth = out_rel.count("/")
        home = "../" * depth + "index.html"
        title = html.escape(repo_path)
        if lines is None:
            entries = sorted(p for p in source_pages if p != repo_path and posixpath.dirname(p.rstrip("/")) + "/" == repo_path)
            body = "<ul>" + "".join(
                f'<li><a href="{html.escape(posixpath.relpath(view_path(p), posixpath.dirname(out_rel)))}">{html.escape(posixpath.basename(p.rstrip("/")))}</a></li>'
                for p in entries) + "</ul>"
        else:
            if lines and lines[-1] == "":
                lines = lines[:-1]
            body = "<pre>" + "".join(
                f'<span class="l" id="L{n}"><a href="#L{n}">{n}</a>{html.escape(line)}</span>'
                for n, line in enumerate(lines, 1)) + "</pre>"
        page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
                f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>'
                f'<body><header><a href="{home}">The book</a> / <code>{title}</code></header>{body}</body></html>\n')
        path = os.path.join(OUT, out_rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(page)


URL_ATTR = re.compile(r'<(a|link|script|img|iframe|source)\b[^>]*?\s(href|src)="([^"]*)"', re.S)
ID_ATTR = re.compile(r'\s(?:id|name)="([^"]*)"')


def check_links(pages):
    ids = {}

    def ids_of(rel):
        if rel not in ids:
            with open(os.path.join(OUT, rel), encoding="utf-8") as f:
                ids[rel] = {html.unescape(i) for i in ID_ATTR.findall(f.read())}
        return ids[rel]

    checked = 0
    for rel, text in pages.items():
        base = posixpath.dirname(rel)
        if "<base " in text:  # mdBook's 404 page resolves its links against the site root
            base = ""
        for tag, attr, url in URL_ATTR.findall(text):
            url = html.unescape(url)
            checked += 1
            if re.match(r"^[a-z][a-z0-9+.-]*:", url) or url.startswith("//"):
                errors.append(f"{rel}: external URL in <{tag} {attr}>: {url}")
                continue
            path, _, anchor = url.partition("#")
            path = path.split("?")[0]
            target = posixpath.normpath(posixpath.join(base, path)) if path else rel
            if path.startswith("/"):
                target = path.lstrip("/") or "index.html"
            if target.startswith("../") or not os.path.isfile(os.path.join(OUT, target)):
                errors.append(f"{rel}: broken link {url}")
                continue
            if anchor and target.endswith(".html") and anchor not in ids_of(target):
                errors.append(f"{rel}: no anchor #{anchor} in {target}")
    return checked


def main():
    pages = {}
    for root, _, files in os.walk(OUT):
        for name in files:
            if name.endswith(".html"):
                rel = os.path.relpath(os.path.join(root, name), OUT).replace(os.sep, "/")
                if not rel.startswith(SOURCE_DIR + "/"):
                    with open(os.path.join(root, name), encoding="utf-8") as f:
                        pages[rel] = f.read()
    if "index.html" not in pages:
        errors.append(f"no index.html in {OUT}: the book was not built")
    for rel, text in pages.items():
        new = rewrite_page(rel, text)
        pages[rel] = new
        with open(os.path.join(OUT, rel), "w", encoding="utf-8") as f:
            f.write(new)
    write_views()
    for repo_path in source_pages:
        rel = view_path(repo_path)
        with open(os.path.join(OUT, rel), encoding="utf-8") as f:
            pages[rel] = f.read()
    checked = check_links(pages)

    chapters = [t for r, t in pages.items() if r not in ("print.html", "404.html", "toc.html") and not r.startswith(SOURCE_DIR + "/")]
    display = sum(t.count('class="katex-display"') for t in chapters)
    typeset = sum(t.count('<span class="katex">') for t in chapters)
    errors.extend(f"{r}: KaTeX error" for r, t in pages.items() if "katex-error" in t)
    print(f"book: {typeset} equations typeset ({display} display, {typeset - display} inline) "
          f"on {len(chapters)} pages; {len(source_pages)} source views; "
          f"{checked} links checked on {len(pages)} pages; {len(errors)} problems")
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1 if errors else 0)


main()
