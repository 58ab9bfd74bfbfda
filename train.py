"""Train one configuration (or a sweep with -m); the same as the ``gradprobe-train`` command."""

from gradprobe.cli import main

if __name__ == "__main__":
    main()
