"""The `pydocs` corpus: the Python standard library's own documentation as English prose.

Documents, with no download:
  * one per public stdlib module: its docstring followed by the docstrings of the
    public classes, functions and methods it defines (each under its dotted name);
  * one per help topic of `pydoc_data.topics.topics` (the language reference text
    that `help('if')` shows).
Optionally one per chapter of the King James Bible from Debian's `bible-kjv`
packages when they are installed. Modules are imported in a child process (`python -m
lazy_jax.data.pydocs OUT.json`), so import side effects stay there; modules with
side effects (this, antigravity, tkinter, idlelib, turtle, tests, ...) are skipped
and modules that fail to import are skipped. Documents are sorted by key, so the
corpus depends only on the Python version. The train/validation split is fixed by
a hash of the document key.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

from lazy_jax.errors import InputError

# Top-level modules never imported: side effects on import (print, browser, GUI,
# audio), test suites, or deprecated shims that only warn.
SKIP_TOP_LEVEL = frozenset(
    {
        "antigravity",
        "this",
        "idlelib",
        "tkinter",
        "turtle",
        "turtledemo",
        "test",
        "__main__",
        "lib2to3",
        "ensurepip",
        "venv",
        "pydoc_data",
        "xxsubtype",
        "xxlimited",
        "msilib",
        "winreg",
        "winsound",
        "nt",
        "msvcrt",
        "_winapi",
    }
)
VALIDATION_PERCENT = 5
# Where Debian's bible-kjv-text package puts its (compressed) text, read by the
# `bible` program of the bible-kjv package.
BIBLE_KJV_DATA_DIRS = ("/usr/lib", "/usr/share/bible-kjv", "/usr/local/lib")


def _skip(module_name: str) -> bool:
    parts = module_name.split(".")
    return (
        parts[0] in SKIP_TOP_LEVEL
        or any(p.startswith("_") for p in parts)
        or any(p in ("test", "tests", "idle_test") for p in parts)
    )


def _clean(doc) -> str:
    return inspect.cleandoc(doc).strip() if isinstance(doc, str) else ""


def _module_names() -> list[str]:
    names = set()
    for top in sorted(sys.stdlib_module_names):
        if _skip(top):
            continue
        names.add(top)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(top)
        except BaseException:  # noqa: BLE001 - any failure means: not in the corpus.
            continue
        for info in pkgutil.walk_packages(getattr(module, "__path__", []) or [], top + ".", onerror=lambda _: None):
            if not _skip(info.name):
                names.add(info.name)
    return sorted(names)


def _module_document(name: str) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except BaseException:  # noqa: BLE001
        return None
    parts, seen = [], set()

    def add(title, doc):
        doc = _clean(doc)
        if doc and doc not in seen:  # Repeated docstrings (aliases, re-exports) once.
            seen.add(doc)
            parts.append(f"{title}\n\n{doc}")

    add(f"Module {name}", module.__doc__)
    for attr, obj in sorted(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            add(f"{name}.{attr}", obj.__doc__)
            for method_name, method in sorted(vars(obj).items()):
                # Public methods and special methods written in Python (`__init__`, ...);
                # the C slot wrappers only say 'Return self==value.' and the like.
                is_special = method_name.startswith("__") and inspect.isfunction(method)
                if method_name.startswith("_") and not is_special:
                    continue
                method = getattr(method, "__func__", method)  # classmethod / staticmethod
                if inspect.isroutine(method) or isinstance(method, property):
                    add(f"{name}.{attr}.{method_name}", method.__doc__)
        elif inspect.isroutine(obj):
            add(f"{name}.{attr}", obj.__doc__)
    return "\n\n".join(parts) if parts else None


def harvest_stdlib() -> dict[str, str]:
    """{key: text} for every documented stdlib module and pydoc topic (this process imports them)."""
    documents = {}
    for name in _module_names():
        text = _module_document(name)
        if text:
            documents[f"module/{name}"] = text
    from pydoc_data.topics import topics  # pylint: disable=g-import-not-at-top

    for topic, text in sorted(topics.items()):
        text = text.strip()
        if text:
            documents[f"topic/{topic}"] = text
    return documents


def harvest_stdlib_in_subprocess() -> dict[str, str]:
    """`harvest_stdlib` run in a child interpreter, so that imports do not touch this one."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "docs.json")
        # The child imports this package from wherever it lives.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(
            os.environ,
            PYTHONHASHSEED="0",
            PYTHONDONTWRITEBYTECODE="1",
            PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
        )
        result = subprocess.run(
            [sys.executable, "-m", "lazy_jax.data.pydocs", out_path],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=600,
            check=False,
        )
        if result.returncode != 0 or not os.path.exists(out_path):
            raise RuntimeError(
                f"harvesting the stdlib docs failed (exit {result.returncode}): "
                f"{result.stderr.decode(errors='replace')[-2000:]}"
            )
        with open(out_path, encoding="utf-8") as f:
            return json.load(f)


def find_bible_kjv() -> tuple[str, str] | None:
    """(bible program, folder of bible.data) from Debian's bible-kjv packages, or None."""
    program = shutil.which("bible")
    for folder in BIBLE_KJV_DATA_DIRS:
        if program and os.path.isfile(os.path.join(folder, "bible.data")):
            return program, folder
    return None


def require_bible_kjv() -> tuple[str, str]:
    """`find_bible_kjv()`, or an InputError that says what to install."""
    found = find_bible_kjv()
    if found is None:
        raise InputError(
            "add_bible_kjv is on but the bible-kjv text was not found (needs the `bible` "
            f"program and bible.data in one of {', '.join(BIBLE_KJV_DATA_DIRS)}); install it "
            "with `apt-get install bible-kjv` or turn add_bible_kjv off"
        )
    return found


def read_bible_kjv() -> dict[str, str]:
    """{key: text}, one document per chapter of the King James Version, in book order."""
    program, folder = require_bible_kjv()
    result = subprocess.run(
        [program, "-p", folder, "-f", "gen1:1-rev22:21"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise InputError(
            f"{program} could not print the bible-kjv text from {folder!r}: "
            f"{result.stderr.decode(errors='replace')[-500:]}"
        )
    chapters: dict[str, list[str]] = {}
    # One verse per line: "Ge1:1 In the beginning ...". A chapter is a document.
    for line in result.stdout.decode("utf-8", errors="replace").splitlines():
        match = re.match(r"^(\S+?)(\d+):\d+\s+(.*)$", line)
        if match:
            book, chapter, verse = match.groups()
            chapters.setdefault(f"{book} {chapter}", []).append(verse.strip())
    if not chapters:
        raise InputError(f"{program} printed no verses from {folder!r}")
    return {f"kjv/{i:04d} {name}": " ".join(verses) for i, (name, verses) in enumerate(chapters.items())}


def is_validation(key: str) -> bool:
    """Fixed split: a document is in validation when its key hashes into the last 5%."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100 < VALIDATION_PERCENT


def split_documents(documents: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    """{'train': [(key, text)], 'validation': [...]}, each sorted by key."""
    splits = {"train": [], "validation": []}
    for key in sorted(documents):
        splits["validation" if is_validation(key) else "train"].append((key, documents[key]))
    return splits


if __name__ == "__main__":
    # Child-process entry of harvest_stdlib_in_subprocess: write {key: text} as JSON.
    docs = harvest_stdlib()
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        json.dump(docs, out, sort_keys=True)
