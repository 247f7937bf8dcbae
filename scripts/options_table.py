"""Write the README's options table from the CLI's own options (their help, defaults, choices and groups).

    python scripts/options_table.py

The table sits between the README's ``<!-- options`` and ``<!-- /options -->`` lines; a test checks it is
current.
"""

from __future__ import annotations

from pathlib import Path

from diffmorph.options import options_markdown

README = Path(__file__).resolve().parents[1] / "README.md"


def main() -> None:
    text = README.read_text()
    start = text.index("<!-- options")
    start = text.index("\n", start) + 1
    end = text.index("<!-- /options -->")
    README.write_text(text[:start] + options_markdown() + "\n" + text[end:])
    print(f"wrote the options table into {README}")


if __name__ == "__main__":
    main()
