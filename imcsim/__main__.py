"""``python -m imcsim``: the command-line interface, for environments whose scripts folder is
not on PATH."""
from imcsim.cli import main

if __name__ == "__main__":
    main()
