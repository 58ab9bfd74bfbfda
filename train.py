"""Train one configuration (or a sweep with -m). See README.md; same as the gradprobe-train command."""

from gradprobe.cli import main

if __name__ == "__main__":
    main()
