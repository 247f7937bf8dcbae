"""``python -m diffmorph``: the same as the ``diffmorph`` command."""

from diffmorph.cli import run

if __name__ == "__main__":
    run()
