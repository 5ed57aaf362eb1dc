"""Labelled corpora for the clustering benchmarks, built from a Debian system's own files.

Each corpus is one parquet file with a ``text`` and a ``source`` column: the sources are what
a user would call different domains, and ``benchmarks/clustering.py --corpus FILE`` scores the
clusters against them (the pipeline never sees ``source``).  Nothing here comes from the
playground's packages.

========== ==============================================================================
machine    man pages (groff source), Debian changelog entries, C headers, Perl modules,
           Python modules, Python package descriptions (``METADATA``/``PKG-INFO``)
languages  one manual in several languages: the man pages translated into German, French,
           Swedish and Dutch, and the English pages of the same commands (rendered by groff)
code       several programming languages' sources: Python, C, Perl, JavaScript, shell
manuals    two documentation sets of one ecosystem: GNU Texinfo manuals (``info``) and the
           man pages of the same GNU packages (rendered by groff)
untuned    never tuned on (report it apart): Debian copyright files, ``/etc`` configuration
           files, Perl's POD manual, package README files
========== ==============================================================================

A document is a run of whole paragraphs of one file, cut to about ``--doc-chars``
characters; at most ``--docs-per-source`` documents per source, drawn with ``--seed``, and at
most ``--per-file`` from one file (so one long file cannot stand for its source; the manuals,
a few long files, may give 200 each).  Sources
with fewer than 50 documents on this system are left out, with a line saying so.

    python benchmarks/corpora.py --output runs/corpora            # all five
    python benchmarks/corpora.py --output runs/corpora --only languages code
    python benchmarks/clustering.py --corpus runs/corpora/code.parquet --skip-speed
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import re
from pathlib import Path

MIN_DOCS = 50
MAN_LANGUAGES = ("de", "fr", "sv", "nl")
# GNU packages with both a Texinfo manual and man pages on a Debian base system
GNU_MANUALS = {"coreutils": None, "time": ("time",), "gettext": ("gettext", "msgfmt", "xgettext"),
               "gnupg": ("gpg", "gpg-agent", "gpgsm"), "bzip2": ("bzip2",), "find": ("find", "xargs", "locate", "updatedb"),
               "diffutils": ("diff", "cmp", "diff3", "sdiff"), "grep": ("grep",),
               "sed": ("sed",), "gzip": ("gzip", "gunzip", "zcat"), "tar": ("tar",),
               "bash": ("bash",), "bc": ("bc",), "ed": ("ed",), "wget": ("wget",),
               "gawk": ("gawk",), "make": ("make",), "m4": ("m4",)}


def _read(path: str, limit: int = 400_000) -> str:
    """A text file (gzip-compressed or not), decoded as UTF-8 with replacement; '' if binary."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(limit)
    except OSError:
        return ""
    if b"\0" in raw:
        return ""
    return raw.decode("utf-8", errors="replace")


def _render_man(path: str) -> str:
    """A man page as a reader sees it (``groff -mandoc -Tutf8``, plain); '' without groff, or
    for a page that cannot be read or rendered (it is skipped like an empty file)."""
    import shutil
    import subprocess

    if shutil.which("groff") is None:
        return ""
    try:
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as fh:
            raw = fh.read()
        done = subprocess.run(["groff", "-k", "-mandoc", "-Tutf8", "-P-c", "-P-b", "-P-u",
                               "-rLL=100n"], input=raw, capture_output=True, timeout=60,
                              env=dict(os.environ, GROFF_NO_SGR="1"), check=False)
    except (OSError, EOFError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.decode("utf-8", errors="replace") if done.returncode == 0 else ""


def _files(patterns: list[str], *, exclude: str | None = None) -> list[str]:
    """Files matching shell patterns, where ``ROOT/**/NAME`` walks ROOT without following
    symbolic links (``glob``'s ``**`` follows them, and ``/usr/lib`` links back into itself)."""
    import fnmatch

    out = set()
    for p in patterns:
        if "/**/" in p:
            prefix, name = p.split("/**/", 1)
            for root in glob.glob(prefix):
                for folder, _, names in os.walk(root):
                    out.update(os.path.join(folder, n) for n in fnmatch.filter(names, name))
        else:
            out.update(glob.glob(p))
    out = {f for f in out if os.path.isfile(f) and not os.path.islink(f)}
    if exclude:
        out = {f for f in out if not re.search(exclude, f)}
    return sorted(out)


def _chunks(text: str, doc_chars: int) -> list[str]:
    """Whole paragraphs (blank-line separated) gathered up to ``doc_chars`` characters."""
    out, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        para = para.strip("\n")
        if not para.strip():
            continue
        if cur and len(cur) + len(para) > doc_chars:
            out.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para[: 4 * doc_chars]
    if cur:
        out.append(cur)
    return [c for c in out if len(c) >= 200]


def _changelog_entries(text: str, doc_chars: int) -> list[str]:
    entries = re.split(r"\n(?=\S+ \([^)]*\) [^;]*; urgency=)", text)
    return [e.strip()[:doc_chars] for e in entries if len(e.strip()) >= 200]


def _man_pages(lang: str | None, names: set[str] | None = None) -> list[str]:
    root = "/usr/share/man" if lang is None else f"/usr/share/man/{lang}"
    files = _files([f"{root}/man*/*"])
    if names is not None:
        files = [f for f in files if os.path.basename(f).split(".")[0] in names]
    return files


def _source(name: str, files: list[str], split, rng, docs: int, per_file: int,
            read=_read) -> list[str]:
    """Up to ``docs`` documents of one source: files in a seeded order, ``per_file`` each."""
    order = rng.permutation(len(files)) if files else []
    out: list[str] = []
    for i in order:
        text = read(files[i])
        if not text.strip():
            continue
        pieces = split(text)
        if len(pieces) > per_file:
            pieces = [pieces[j] for j in sorted(rng.choice(len(pieces), per_file, replace=False))]
        out.extend(pieces)
        if len(out) >= docs:
            break
    return out[:docs]


# corpora whose man pages are read rendered (groff), as the text a reader sees
RENDERED = ("languages", "manuals")
# corpora whose sources are a few long files: documents a file may give
PER_FILE = {"manuals": 200}


def sources(corpus: str, doc_chars: int) -> dict[str, tuple[list[str], object]]:
    """``{source: (files, splitter)}`` of one corpus."""
    chunk = lambda t: _chunks(t, doc_chars)
    py = "/usr/lib/python3/dist-packages/**/*.py"
    if corpus == "machine":
        return {
            "man pages": (_man_pages(None), chunk),
            "debian changelogs": (_files(["/usr/share/doc/*/changelog.Debian.gz"]),
                                  lambda t: _changelog_entries(t, doc_chars)),
            "c headers": (_files(["/usr/include/**/*.h"]), chunk),
            "perl modules": (_files(["/usr/share/perl*/**/*.pm",
                                     "/usr/lib/*-linux-gnu/perl*/**/*.pm"]), chunk),
            "python modules": (_files([py]), chunk),
            "python package descriptions": (_files(
                ["/usr/lib/python3/dist-packages/*.dist-info/METADATA",
                 "/usr/lib/python3/dist-packages/*.egg-info/PKG-INFO"]), chunk),
        }
    if corpus == "languages":
        translated = set()
        for lang in MAN_LANGUAGES:
            translated |= {os.path.basename(f).split(".")[0] for f in _man_pages(lang)}
        out = {"english": (_man_pages(None, translated), chunk)}
        for lang in MAN_LANGUAGES:
            out[lang] = (_man_pages(lang), chunk)
        return out
    if corpus == "code":
        return {
            "python": (_files([py]), chunk),
            "c": (_files(["/usr/include/**/*.h", "/usr/share/**/*.c"]), chunk),
            "perl": (_files(["/usr/share/perl*/**/*.pm", "/usr/share/perl*/**/*.pl"]), chunk),
            "javascript": (_files(["/usr/lib/node_modules/**/*.js", "/usr/share/javascript/**/*.js"],
                                  exclude=r"\.min\.js$"), chunk),
            "shell": (_files(["/usr/share/**/*.sh", "/usr/lib/**/*.sh", "/etc/**/*.sh",
                              "/etc/init.d/*"]), chunk),
        }
    if corpus == "manuals":
        info = _files([f"/usr/share/info/{p}.info*.gz" for p in GNU_MANUALS])
        names: set[str] = set()
        for commands in GNU_MANUALS.values():
            if commands is None:  # coreutils: every command its manual documents
                text = _read("/usr/share/info/coreutils.info.gz", 4_000_000)
                commands = tuple(set(re.findall(r"^\d+\.\d+ [‘'`]([a-z0-9]+)[’']:", text, re.MULTILINE)))
            names |= set(commands)
        return {"gnu info manuals": (info, chunk),
                "gnu man pages": (_man_pages(None, names), chunk)}
    if corpus == "untuned":
        return {
            "debian copyright files": (_files(["/usr/share/doc/*/copyright"]), chunk),
            "configuration files": (_files(["/etc/**/*.conf", "/etc/**/*.cfg"]), chunk),
            "perl pod manual": (_files(["/usr/share/perl*/**/*.pod"]), chunk),
            "readme files": (_files(["/usr/share/doc/*/README*", "/usr/share/doc/*/*.md"]),
                             chunk),
        }
    raise SystemExit(f"unknown corpus {corpus!r}")


CORPORA = ("machine", "languages", "code", "manuals", "untuned")


def build(corpus: str, output: Path, docs: int, per_file: int, doc_chars: int,
          seed: int) -> dict[str, int]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    per_file = max(per_file, PER_FILE.get(corpus, 0))
    texts, labels, counts = [], [], {}
    for name, (files, split) in sources(corpus, doc_chars).items():
        # a user's translated manual is text: the pages rendered, not their groff source
        # (whose English preambles and macros every translation shares)
        read = _render_man if corpus in RENDERED and "/man/" in (files[0] if files else "") \
            else _read
        got = _source(name, files, split, rng, docs, per_file, read)
        if len(got) < MIN_DOCS:
            print(f"{corpus}: source {name!r} left out: {len(got)} documents on this system "
                  f"(fewer than {MIN_DOCS})")
            continue
        texts += got
        labels += [name] * len(got)
        counts[name] = len(got)
    if len(counts) < 2:
        print(f"{corpus}: fewer than two sources on this system; nothing written")
        return counts
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{corpus}.parquet"
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table({"text": texts, "source": labels}), tmp)
    os.replace(tmp, path)
    print(f"{path}: {len(texts)} documents, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, required=True, help="Folder for <corpus>.parquet.")
    ap.add_argument("--only", nargs="+", choices=CORPORA, default=list(CORPORA))
    ap.add_argument("--docs-per-source", type=int, default=600)
    ap.add_argument("--per-file", type=int, default=4,
                    help="At most this many documents from one file.")
    ap.add_argument("--doc-chars", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    for corpus in args.only:
        build(corpus, args.output, args.docs_per_source, args.per_file, args.doc_chars,
              args.seed)


if __name__ == "__main__":
    main()
